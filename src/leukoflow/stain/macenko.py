"""Macenko's stain estimate and its transform, on optical densities held channel-first.

The mathematics of `leukoflow.stain.normalize`'s Macenko method (that module holds the mask, the
reference, and the account of where mask-aware Macenko departs from torchstain's): optical
densities, an image's exposure, the stain plane, the two stain vectors and their
99th-percentile concentrations, and the one 3x3 matrix that maps an image's optical
densities onto a reference's; `fit`, `apply`, `brightness` and `unit_columns` are the
registry's entry points (`leukoflow.stain.registry`). Mask-aware, every step is a
continuous function of the image (the constants below): on real C-NMC cells, whose stain
vectors are 4-10 degrees apart, each hard switch of torchstain's estimate made it flip.
"""

import numpy as np

from leukoflow.core.errors import LeukoflowError

MIN_STAIN_PIXELS = 64
MIN_STAIN_ANGLE_DEG = 3.0  # without the mask: closer stain vectors make the image degenerate
MIN_CONCENTRATION = 1e-3
# Mask-aware only, each one a continuous replacement for a step of torchstain's estimate:
STAINED_RAMP = 0.05  # OD over which a pixel's weight goes from transparent (0) to stained (1)
BAND = 4.0  # percentiles are means over this band of ranks (percent), centred on them
PLANE_PRIOR = 0.3  # pull of the reference's plane, relative to the image's minor moments
RIDGE = 0.03  # Tikhonov term of the concentrations' least squares (stains are unit vectors)


class DegenerateStainError(LeukoflowError):
    """An image whose stain cannot be estimated (nearly blank, or one stain only).

    Raised by both methods of `leukoflow.stain.normalize` (and exported there).
    """


def _od_lut(io):
    """Optical density of each 8-bit value, float64 (256,): -log((v + 1) / io)."""
    return -np.log((np.arange(256) + 1.0) / io)


def optical_density(flat: np.ndarray, io: float) -> np.ndarray:
    """Optical density -log((v + 1) / io), float32 (3, N), of uint8 pixels (N, 3)."""
    od = np.empty((3, flat.shape[0]), dtype=np.float32)
    np.add(flat.T, np.float32(1), out=od)
    np.log(od, out=od)
    return np.subtract(np.float32(np.log(io)), od, out=od)


def _percentiles(values, qs):
    """Percentiles `qs` (0-100) of a 1-D array with numpy's linear method (torchstain's).

    Sorts (vectorised sort): np.partition slows down badly on the many equal values that
    8-bit images give (one black background colour, say), sorting does not.
    """
    ordered = np.sort(values)
    n = ordered.size
    result = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        result.append(float(ordered[lo]) + (float(ordered[hi]) - float(ordered[lo])) * (pos - lo))
    return result


def _band_means(values, weights, qs):
    """Weighted means of `values` over the ranks q +- BAND / 2 percent, for each q in `qs`.

    A smooth percentile: each value counts with the share of its weight that falls in the
    band of cumulative weight, so the result moves continuously with the values and the
    weights, where a percentile of pixels quantised to 8 bits jumps with the two values it
    lands between.

    Args:
        values: float (n,).
        weights: float (n,), >= 0, with a positive sum; None: all 1.
        qs: percentiles, 0-100.

    Returns:
        One float per q.
    """
    if weights is None:
        ordered = np.sort(values)
        upper = np.arange(1.0, values.size + 1.0)
        lower = upper - 1.0
    else:
        order = np.argsort(values)  # ties in any order: equal values give the same means
        ordered = values[order]
        upper = np.cumsum(weights[order], dtype=np.float64)
        lower = upper - weights[order]
    result = []
    for q in qs:
        lo, hi = np.clip([q - BAND / 2, q + BAND / 2], 0.0, 100.0) / 100.0 * upper[-1]
        i, j = np.searchsorted(upper, lo, side="right"), np.searchsorted(lower, hi, side="left")
        share = np.clip(np.minimum(upper[i:j], hi) - np.maximum(lower[i:j], lo), 0.0, None)
        result.append(float(share @ ordered[i:j].astype(np.float64) / share.sum()))
    return result


def brightness(brightest: np.ndarray, counted: np.ndarray, params: dict) -> float:
    """An image's exposure: the mean brightest channel of its brightest pixels, + 1.

    The brightest pixels are the top (100 - `io_percentile`)% of the counted ones, a
    fraction of a pixel included where the share falls between two: the mean moves
    continuously with the image, where a percentile of 8-bit values moves in whole grey
    levels (up to 1.4% of a dark cell's exposure).

    Args:
        brightest: uint8 (N,), the largest channel value of each pixel.
        counted: bool (N,), the pixels that count.
        params: the method's parameters (`io_percentile`).

    Returns:
        The exposure, in grey levels + 1 (as the optical density counts them).

    Raises:
        DegenerateStainError: fewer than MIN_STAIN_PIXELS pixels count.
    """
    values = brightest[counted]
    if values.size < MIN_STAIN_PIXELS:
        raise DegenerateStainError(f"only {values.size} foreground pixels (< {MIN_STAIN_PIXELS})")
    top = max(values.size * (100.0 - params["io_percentile"]) / 100.0, 1.0)
    counts = np.bincount(values, minlength=256)[::-1].astype(np.float64)  # 255 first
    above = np.cumsum(counts) - counts  # pixels brighter than each value
    taken = np.clip(top - above, 0.0, counts)
    return float(taken @ np.arange(255.0, -1.0, -1.0)) / top + 1.0


def light_level(
    brightest: np.ndarray,
    counted: np.ndarray | None,
    params: dict,
    reference_brightness: float | None,
) -> float:
    """An image's light level `io`: torchstain's constant, or scaled by its exposure.

    Args:
        brightest: uint8 (N,), the largest channel value of each pixel.
        counted: bool (N,), the pixels that count; None without the mask.
        params: the method's parameters (`mask`, `io`, `io_percentile`).
        reference_brightness: the reference's exposure (`brightness`), mask-aware.

    Returns:
        `io` without the mask; with it, `io` times the image's `brightness` over the
        reference's, so a uniformly darker copy of an image has its optical densities.
    """
    if not params["mask"]:
        return float(params["io"])
    return params["io"] * brightness(brightest, counted, params) / reference_brightness


def _stained(brightest, counted, io, params):
    """The stained pixels: (index (n,), weights float64 (n,) or None).

    torchstain's "transparent" test (some channel's OD below `beta`) is one threshold on
    the brightest channel. Mask-aware, it is a ramp instead: a pixel weighs 0 to 1 as the
    OD of its brightest channel goes from `beta` - STAINED_RAMP / 2 to `beta` +
    STAINED_RAMP / 2, so no pixel enters or leaves the estimate at once (8-bit images
    have hundreds of pixels of one value, and a hard threshold moved them all together).
    """
    if not params["mask"]:
        opaque_max = int(np.count_nonzero(_od_lut(io) >= params["beta"])) - 1
        stained = brightest <= opaque_max
        return np.flatnonzero(stained if counted is None else stained & counted), None
    ramp = (_od_lut(io) - params["beta"]) / STAINED_RAMP + 0.5
    weights = np.clip(ramp, 0.0, 1.0)[brightest] * counted
    index = np.flatnonzero(weights)
    return index, weights[index]


def _stain_plane(od_hat, weights, prior):
    """Unit vectors (3, 2) spanning the plane of the stained ODs (3, n).

    Without the mask (`weights` None), the two leading eigenvectors of the ODs' centred
    covariance (torchstain). Mask-aware, of their weighted second moment, uncentred
    (Macenko et al.), with the reference's plane as a prior: when the two minor moments
    are nearly equal the image does not say which way its plane turns about the mean OD,
    and the leading two eigenvectors swung (or swapped) with pixel noise; adding
    PLANE_PRIOR times the minor moments along the reference's stain difference settles
    the plane there, continuously, and leaves a clear plane of the image's own nearly
    where it was. Both are oriented along the mean OD.
    """
    # mean and Gram matrix in float64: float32 sums over 10^4-10^5 pixels moved the stain
    # vectors by ~1e-4, by an amount that depends on the BLAS build
    od64 = od_hat.astype(np.float64)
    if weights is None:
        mean = od64.mean(axis=1)
        moment = (od64 @ od64.T) / od_hat.shape[1] - np.outer(mean, mean)
    else:
        mean = od64 @ weights / weights.sum()
        moment = (od64 * weights) @ od64.T / weights.sum()
    values, eigvecs = np.linalg.eigh(moment)
    if prior is not None:
        lead = eigvecs[:, 2]
        difference = prior[:, 0] - prior[:, 1]
        difference = difference - (difference @ lead) * lead
        norm = np.linalg.norm(difference)
        if norm > 0:
            pull = PLANE_PRIOR * (values[0] + values[1]) / norm**2
            _, eigvecs = np.linalg.eigh(moment + pull * np.outer(difference, difference))
    # eigh's eigenvector signs are arbitrary; point them along the mean OD so the angles
    # of the projected pixels do not wrap around +-pi (torchstain leaves this to chance)
    return eigvecs[:, 1:3] * np.where(mean @ eigvecs[:, 1:3] < 0, -1.0, 1.0)


def estimate(
    od: np.ndarray,
    brightest: np.ndarray,
    counted: np.ndarray | None,
    io: float,
    params: dict,
    prior: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two stain vectors of one image and their 99th-percentile concentrations.

    Stained pixels (every channel's OD at least `beta`) span the stain plane; the stain
    vectors are the directions at the `alpha` and 100 - `alpha` percentiles of their angles
    in it. The first is the one with the larger red OD, or, given a `prior`, the one
    closer to its first. Mask-aware, every step is a continuous function of the image
    (`_stained`, `_stain_plane`, `_band_means`, `concentration_map`), so a slightly
    different copy of a cell (darker, another hue) gets a slightly different estimate,
    never another one.

    Args:
        od: float32 (3, N), the pixels' optical densities at light level `io`.
        brightest: uint8 (N,), the largest channel value of each pixel.
        counted: bool (N,), the pixels that count; None: all (torchstain).
        io: the light level `od` was computed with.
        params: the method's parameters (`mask`; `alpha`, `beta`).
        prior: mask-aware, the reference's stain matrix (3, 2) when normalising to it;
            None when fitting.

    Returns:
        (stains, max_concentrations): float64 (3, 2) unit columns, and (2,).

    Raises:
        DegenerateStainError: too few stained pixels, no stain concentration, or (without
            the mask) stain vectors closer than MIN_STAIN_ANGLE_DEG.
    """
    alpha, masked = params["alpha"], params["mask"]
    index, weights = _stained(brightest, counted, io, params)
    stained = index.size if weights is None else weights.sum()
    if stained < MIN_STAIN_PIXELS:
        raise DegenerateStainError(f"only {stained:.0f} stained pixels (< {MIN_STAIN_PIXELS})")
    od_hat = od.take(index, axis=1)
    plane = _stain_plane(od_hat, weights, prior if masked else None)
    proj = plane.T.astype(np.float32) @ od_hat
    phi = np.arctan2(proj[1], proj[0])
    if masked:
        min_phi, max_phi = _band_means(phi, weights, [alpha, 100 - alpha])
    else:
        min_phi, max_phi = _percentiles(phi, [alpha, 100 - alpha])
    v_min = plane @ np.array([np.cos(min_phi), np.sin(min_phi)])
    v_max = plane @ np.array([np.cos(max_phi), np.sin(max_phi)])
    if prior is None:
        first = v_min[0] > v_max[0]
    else:
        first = (v_min - v_max) @ (prior[:, 0] - prior[:, 1]) > 0
    stains = np.stack([v_min, v_max] if first else [v_max, v_min], axis=1)
    if not masked:
        angle = np.degrees(np.arccos(np.clip(abs(v_min @ v_max), -1.0, 1.0)))
        if angle < MIN_STAIN_ANGLE_DEG:
            raise DegenerateStainError(f"stain vectors {angle:.1f} degrees apart: one stain only")
    od_counted = od if counted is None else od.take(np.flatnonzero(counted), axis=1)
    conc = concentration_map(stains, params).astype(np.float32) @ od_counted
    if masked:
        max_c = np.array([_band_means(c, None, [99])[0] for c in conc])
    else:
        max_c = np.array([_percentiles(c, [99])[0] for c in conc])
    if not np.all(np.isfinite(stains)) or not np.all(max_c > MIN_CONCENTRATION):
        raise DegenerateStainError(f"no stain concentration (99th percentiles {max_c})")
    return stains, max_c


def fit(
    flat: np.ndarray,
    brightest: np.ndarray,
    counted: np.ndarray | None,
    params: dict,
    brightness: float | None = None,
) -> dict:
    """One image's Macenko estimate, for `leukoflow.stain.normalize.fit_reference`.

    Args:
        flat: uint8 (N, 3), the image's pixels.
        brightest: uint8 (N,), their largest channel value.
        counted: bool (N,), the pixels the statistics use; None without the mask.
        params: the method's parameters.
        brightness: the reference's exposure (mask-aware), else None.

    Returns:
        {"stain_matrix": (3, 2), "max_concentrations": (2,)}, float64.

    Raises:
        DegenerateStainError: as `estimate` and `brightness`.
    """
    io = light_level(brightest, counted, params, brightness)
    stains, max_c = estimate(optical_density(flat, io), brightest, counted, io, params)
    return {"stain_matrix": stains, "max_concentrations": max_c}


def unit_columns(medians: dict) -> dict:
    """The reference's targets from the medians of the estimates: unit stain vectors."""
    stains = medians["stain_matrix"]
    return {**medians, "stain_matrix": stains / np.linalg.norm(stains, axis=0, keepdims=True)}


def concentration_map(stains: np.ndarray, params: dict) -> np.ndarray:
    """The (2, 3) matrix taking an optical density to its two stain concentrations.

    Without the mask, the pseudo-inverse (torchstain). Mask-aware, ridge-regularised
    least squares, (S^T S + RIDGE I)^-1 S^T: Romanowsky-stained cells give stain vectors
    only 4-10 degrees apart, where the pseudo-inverse multiplies pixel noise ~10-30 times
    into the concentrations (and is undefined for one stain); the ridge bounds that
    factor by 1 / (2 sqrt(RIDGE)) ~ 3 and is continuous down to one stain.

    Args:
        stains: float64 (3, 2), unit columns.
        params: the method's parameters (`mask`).

    Returns:
        float64 (2, 3).
    """
    if not params["mask"]:
        return np.linalg.pinv(stains)
    return np.linalg.solve(stains.T @ stains + RIDGE * np.eye(2), stains.T)


def apply(
    flat: np.ndarray, brightest: np.ndarray, counted: np.ndarray | None, reference: dict
) -> np.ndarray:
    """An image's pixels normalised to a Macenko reference, channel-first.

    Without the mask, torchstain's transform: the optical densities projected onto the
    image's stains, scaled to the reference's concentrations, put on its stains. With it,
    what the concentrations do not explain is kept: OD + (R diag(k) - S) M OD, with S the
    image's stains, M their `concentration_map`, R the reference's stains and k the
    ratios of the 99th-percentile concentrations; an image normalised to a reference
    fitted on itself is unchanged (R = S, k = 1).

    Args:
        flat: uint8 (N, 3), the image's pixels.
        brightest: uint8 (N,), their largest channel value.
        counted: bool (N,), the pixels the statistics use; None without the mask.
        reference: a Macenko reference (`leukoflow.stain.normalize.fit_reference`).

    Returns:
        float32 (3, N) in [0, 255], to be truncated to uint8: mask-aware, less 0.5 from
        io exp(-OD) - 1 so that truncation rounds; without the mask, io exp(-OD) as
        torchstain computes it.

    Raises:
        DegenerateStainError: as `estimate` and `brightness`.
    """
    params = reference["params"]
    io = light_level(brightest, counted, params, reference.get("brightness"))
    od = optical_density(flat, io)
    ref_stains = np.asarray(reference["stain_matrix"])
    stains, max_c = estimate(od, brightest, counted, io, params, ref_stains)
    scale = np.asarray(reference["max_concentrations"]) / max_c
    if params["mask"]:
        mapping = concentration_map(stains, params)
        transform = np.eye(3) + (ref_stains * scale - stains) @ mapping
        offset = np.float32(-0.5)  # v = io exp(-OD) - 1, rounded
    else:
        # OD_out = ref_stains @ diag(scale) @ pinv(stains) @ OD (torchstain)
        transform = (ref_stains * scale) @ np.linalg.pinv(stains)
        offset = np.float32(0)
    out = transform.astype(np.float32) @ od
    np.subtract(np.float32(np.log(params["io"])), out, out=out)
    np.exp(out, out=out)
    np.add(out, offset, out=out)
    return np.clip(out, 0, 255, out=out)
