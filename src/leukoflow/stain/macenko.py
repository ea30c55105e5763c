"""Macenko's stain estimate and its transform, on optical densities held channel-first.

The mathematics of `leukoflow.stain.normalize`'s Macenko method (that module holds the mask, the
reference, and the account of where mask-aware Macenko departs from torchstain's): optical
densities, an image's exposure, the stain plane, the two stain vectors and their
99th-percentile concentrations, and the one 3x3 matrix that maps an image's optical
densities onto a reference's.
"""

import numpy as np

from leukoflow.core.errors import LeukoflowError

MIN_STAIN_PIXELS = 64
MIN_STAIN_ANGLE_DEG = 3.0
MIN_CONCENTRATION = 1e-3
MACENKO_DEFAULTS = {"io": 240, "alpha": 1.0, "beta": 0.15}  # torchstain's
MASKED_MACENKO_DEFAULTS = {**MACENKO_DEFAULTS, "io_percentile": 99.0}


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
    """Percentiles `qs` (0-100) of a 1-D array with numpy's linear method.

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


def _uint8_percentile(values, q):
    """Percentile `q` (0-100) of uint8 values (n >= 1) with numpy's linear method, by counting."""
    ranks = np.cumsum(np.bincount(values, minlength=256))
    pos = q / 100.0 * (ranks[-1] - 1)
    lo = int(np.floor(pos))
    v_lo, v_hi = np.searchsorted(ranks, [lo, min(lo + 1, ranks[-1] - 1)], side="right")
    return float(v_lo) + float(v_hi - v_lo) * (pos - lo)


def brightness(brightest: np.ndarray, counted: np.ndarray, params: dict) -> float:
    """An image's exposure: the `io_percentile` of its pixels' brightest channel, + 1.

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
    return _uint8_percentile(values, params["io_percentile"]) + 1.0


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


def _stain_plane(od_hat, centred):
    """Unit vectors (3, 2) spanning the plane of the stained ODs (3, n).

    The two leading eigenvectors of the ODs' second moment, uncentred (Macenko et al.) or
    centred (torchstain), oriented along the mean OD.
    """
    # mean and Gram matrix in float64: float32 sums over 10^4-10^5 pixels moved the stain
    # vectors by ~1e-4, by an amount that depends on the BLAS build
    od64 = od_hat.astype(np.float64)
    mean = od64.mean(axis=1)
    moment = (od64 @ od64.T) / od_hat.shape[1]
    if centred:
        moment -= np.outer(mean, mean)
    _, eigvecs = np.linalg.eigh(moment)
    # eigh's eigenvector signs are arbitrary; point them along the mean OD so the angles
    # of the projected pixels do not wrap around +-pi (torchstain leaves this to chance)
    return eigvecs[:, 1:3] * np.where(mean @ eigvecs[:, 1:3] < 0, -1.0, 1.0)


def estimate(
    od: np.ndarray, brightest: np.ndarray, counted: np.ndarray | None, io: float, params: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The two stain vectors of one image and their 99th-percentile concentrations.

    Stained pixels (every channel's OD at least `beta`) span the stain plane; the stain
    vectors are the directions at the `alpha` and 100 - `alpha` percentiles of their angles
    in it, the one with the larger red OD first.

    Args:
        od: float32 (3, N), the pixels' optical densities at light level `io`.
        brightest: uint8 (N,), the largest channel value of each pixel.
        counted: bool (N,), the pixels that count; None: all (torchstain).
        io: the light level `od` was computed with.
        params: the method's parameters (`mask`: uncentred plane; `alpha`, `beta`).

    Returns:
        (stains, max_concentrations): float64 (3, 2) unit columns, and (2,).

    Raises:
        DegenerateStainError: too few stained pixels, stain vectors closer than
            MIN_STAIN_ANGLE_DEG, or no stain concentration.
    """
    alpha = params["alpha"]
    # torchstain's "transparent" test (some channel OD < beta) as one threshold on the max
    opaque_max = int(np.count_nonzero(_od_lut(io) >= params["beta"])) - 1
    stained = brightest <= opaque_max
    if counted is not None:
        stained &= counted
    index = np.flatnonzero(stained)
    if index.size < MIN_STAIN_PIXELS:
        raise DegenerateStainError(f"only {index.size} stained pixels (< {MIN_STAIN_PIXELS})")
    od_hat = od.take(index, axis=1)
    plane = _stain_plane(od_hat, centred=not params["mask"])
    proj = plane.T.astype(np.float32) @ od_hat
    phi = np.arctan2(proj[1], proj[0])
    min_phi, max_phi = _percentiles(phi, [alpha, 100 - alpha])
    v_min = plane @ np.array([np.cos(min_phi), np.sin(min_phi)])
    v_max = plane @ np.array([np.cos(max_phi), np.sin(max_phi)])
    stains = np.stack([v_min, v_max] if v_min[0] > v_max[0] else [v_max, v_min], axis=1)
    angle = np.degrees(np.arccos(np.clip(abs(v_min @ v_max), -1.0, 1.0)))
    if angle < MIN_STAIN_ANGLE_DEG:
        raise DegenerateStainError(f"stain vectors {angle:.1f} degrees apart: one stain only")
    od_counted = od if counted is None else od.take(np.flatnonzero(counted), axis=1)
    conc = np.linalg.pinv(stains).astype(np.float32) @ od_counted
    max_c = np.array([_percentiles(conc[k], [99])[0] for k in (0, 1)])
    if not np.all(np.isfinite(stains)) or not np.all(max_c > MIN_CONCENTRATION):
        raise DegenerateStainError(f"no stain concentration (99th percentiles {max_c})")
    return stains, max_c


def _with_normal(stains):
    """The stain matrix (3, 2) with the unit normal of its plane as a third column (3, 3).

    The normal is s0 x s1 of the ordered stains, so it turns with them from image to image.
    """
    normal = np.cross(stains[:, 0], stains[:, 1])
    return np.column_stack([stains, normal / np.linalg.norm(normal)])


def apply(
    flat: np.ndarray, brightest: np.ndarray, counted: np.ndarray | None, reference: dict
) -> np.ndarray:
    """An image's pixels normalised to a Macenko reference, channel-first.

    Without the mask, torchstain's transform: the optical densities projected onto the
    image's stains, scaled to the reference's concentrations, put on its stains. With it,
    the residual along the normal of the stain plane is kept (put on the reference's).

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
    stains, max_c = estimate(od, brightest, counted, io, params)
    ref_stains = np.asarray(reference["stain_matrix"])
    scale = np.asarray(reference["max_concentrations"]) / max_c
    if params["mask"]:
        # concentrations onto the reference's stains, the residual onto its plane's normal
        target = _with_normal(ref_stains) * np.append(scale, 1.0)
        transform = target @ np.linalg.inv(_with_normal(stains))
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
