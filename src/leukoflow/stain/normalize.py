"""Stain normalisation of single-cell images on a black background: none, Reinhard, Macenko.

Mask-aware (the default): background pixels (every channel at most `BACKGROUND_MAX`) take
no part in the statistics and are exactly black in the output; neither does the cell's
`EDGE_PX` rim, where anti-aliasing mixes the stain with black. With the mask switched off
the methods compute what torchstain's numpy normalisers compute, with the pixels held
channel-first (3, N) so each step is one vectorised pass: optical densities and
concentrations in float32, the Macenko mean and Gram matrix in float64 (float32 sums left
the stain vectors ~1e-4 off, by an amount that depended on the BLAS build).

Mask-aware Macenko departs from torchstain's in three ways, each needed on real
Romanowsky-stained cells (three absorbers, no background to read the light from):

- the stain plane is spanned by the two leading eigenvectors of the uncentred second
  moment of the optical densities (Macenko et al. 2009 take the SVD of the OD tuples), not
  of their centred covariance: once the background is left out, the centred covariance's
  plane need not contain the mean OD direction, and projecting onto it lost the cell's
  average colour (real Wright-stained white cells moved 9-13 grey levels on a round trip,
  one 40);
- the light level `io` follows each image's exposure: `io` times the image's brightness
  over the reference's, the brightness being the `io_percentile` of the brightest channel
  over the counted pixels (+ 1; the reference's is the median over its images). A
  uniformly darker or brighter copy of a cell then has the same optical densities and is
  normalised to the same pixels; the output is drawn at the light level `io`;
- what the two stains do not explain is kept: each OD splits into stain concentrations
  and a residual along the plane's normal; the concentrations are scaled to the
  reference's 99th percentiles and put on its stains, the residual on its normal, so a
  third absorber keeps its colour instead of being projected away and an image normalised
  to a reference fitted on itself comes back unchanged. The output is rounded, not
  truncated.

This module is the algorithm only (Macenko's mathematics in `leukoflow.stain.macenko`);
`leukoflow.stain.reference` is the workflow step that fits the reference on the training
subjects and measures what it does.

A reference is a small JSON-able dict: `method`, `version`, the method's parameters and its
target (Macenko: stain matrix (3, 2), 99th-percentile concentrations (2,) and, mask-aware,
the `brightness`; Reinhard: LAB means and standard deviations (3,)). `fit_reference`
aggregates per-image estimates by their median, so a few odd training images do not move it.

Degenerate images (fewer than `MIN_STAIN_PIXELS` stained pixels, stain vectors closer than
`MIN_STAIN_ANGLE_DEG`, or no stain concentration; Reinhard: fewer than `MIN_STAIN_PIXELS`
counted pixels, the foreground without its rim) are not normalised: `normalize` returns
them unchanged apart from the black background (documented fallback, logged at debug
level), or raises `DegenerateStainError` with `on_degenerate="raise"`. A Reinhard channel
with no spread (standard deviation below 1e-3) is shifted to the target mean, not scaled.
Output pixels are never NaN.
"""

import functools
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from leukoflow.core.atomic import write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.stain import macenko
from leukoflow.stain.macenko import MIN_STAIN_PIXELS, DegenerateStainError, optical_density

log = logging.getLogger(__name__)

METHODS = ("none", "reinhard", "macenko")
REFERENCE_VERSION = 2
BACKGROUND_MAX = 10  # a pixel whose channels are all <= this is background
EDGE_PX = 2  # rim of the foreground (px) left out of the statistics

_RGB2XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])


def foreground_mask(image: np.ndarray, background_max: int = BACKGROUND_MAX) -> np.ndarray:
    """Bool (H, W): True where some channel of the uint8 RGB image exceeds `background_max`."""
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    return (_brightest(flat) > background_max).reshape(image.shape[:-1])


def _brightest(flat):
    """Largest channel value of each uint8 pixel (N, 3): uint8 (N,)."""
    return np.maximum(np.maximum(flat[:, 0], flat[:, 1]), flat[:, 2])


def interior(fg: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    """The foreground without its rim: `fg` eroded by a (2 radius + 1) square.

    The anti-aliased rim of a segmented cell mixes its stain with black (a grey OD
    direction); the statistics leave it out. With `radius` > 0 the image border counts
    as background too.

    Args:
        fg: bool (N,), the foreground of an image of `shape`, flattened.
        shape: (H, W) with H * W = N.
        radius: pixels taken off the rim.

    Returns:
        bool (N,).
    """
    inner = fg.reshape(shape).copy()
    for _ in range(radius):
        inner[1:] &= inner[:-1].copy()
        inner[:-1] &= inner[1:].copy()
        inner[:, 1:] &= inner[:, :-1].copy()
        inner[:, :-1] &= inner[:, 1:].copy()
        inner[[0, -1]] = False
        inner[:, [0, -1]] = False
    return inner.reshape(-1)


def _statistics_mask(image, brightest, params):
    """(fg, counted): the foreground (N,) and the pixels the statistics use, or (None, None)."""
    if not params["mask"]:
        return None, None
    fg = brightest > params["background_max"]
    return fg, interior(fg, image.shape[:2], params["edge"])


@functools.lru_cache(maxsize=1)
def _linear_lut():
    """sRGB 8-bit value to linear light, float32 (256,), computed as torchstain does."""
    x = np.arange(256, dtype=np.float32) / np.float32(255)
    return np.where(x > 0.04045, ((x + np.float32(0.055)) / np.float32(1.055)) ** 2.4, x / 12.92)


def _rgb_to_lab(flat):
    """uint8 pixels (N, 3) to LAB float32 (3, N), L in [0, 100], as torchstain computes it."""
    xyz = (_RGB2XYZ / _WHITE[:, None]).astype(np.float32) @ np.take(_linear_lut(), flat.T)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + np.float32(16.0 / 116))
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _lab_to_rgb(lab):
    """LAB float32 (3, N) to RGB float32 (3, N) in [0, 1] (torchstain's inverse)."""
    y = (lab[0] + np.float32(16.0)) / 116
    xyz = np.stack([lab[1] / 500 + y, y, y - lab[2] / 200])
    xyz = np.where(xyz > 0.2068966, xyz**3, (xyz - np.float32(16.0 / 116)) / np.float32(7.787))
    rgb = (np.linalg.inv(_RGB2XYZ) * _WHITE).astype(np.float32) @ xyz
    linear = rgb <= 0.0031308
    rgb = np.where(linear, rgb * 12.92, 1.055 * np.maximum(rgb, 0) ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0, 1, out=rgb)


def _reinhard_estimate(lab, counted):
    """Means and standard deviations (3,) of LAB pixels (3, N) where `counted` (None: all)."""
    values = lab if counted is None else lab.take(np.flatnonzero(counted), axis=1)
    if values.shape[1] < MIN_STAIN_PIXELS:
        raise DegenerateStainError(
            f"only {values.shape[1]} foreground pixels (< {MIN_STAIN_PIXELS})"
        )
    return values.mean(axis=1, dtype=np.float64), values.std(axis=1, dtype=np.float64)


def _estimate(image, method, params, brightness=None):
    """Per-image estimate of `method` on uint8 (H, W, 3): a dict of the reference's targets.

    `brightness`: the reference's (mask-aware Macenko), else None.
    """
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    brightest = _brightest(flat)
    _, counted = _statistics_mask(image, brightest, params)
    if method == "macenko":
        io = macenko.light_level(brightest, counted, params, brightness)
        stains, max_c = macenko.estimate(optical_density(flat, io), brightest, counted, io, params)
        return {"stain_matrix": stains, "max_concentrations": max_c}
    means, stds = _reinhard_estimate(_rgb_to_lab(flat), counted)
    return {"lab_means": means, "lab_stds": stds}


def _params(method, mask, **overrides):
    """The parameters of `method` with the defaults filled in."""
    params = {"background_max": BACKGROUND_MAX, "edge": EDGE_PX, "mask": bool(mask)}
    if method == "macenko":
        params.update(macenko.MASKED_MACENKO_DEFAULTS if mask else macenko.MACENKO_DEFAULTS)
    unknown = set(overrides) - set(params)
    if unknown:
        raise LeukoflowError(f"unknown {method} parameters: {', '.join(sorted(unknown))}")
    params.update(overrides)
    return params


def fit_reference(
    images: Iterable[np.ndarray], method: str, mask: bool = True, **params: float
) -> dict:
    """Fit a reference: the median of per-image estimates.

    Degenerate images are skipped (and counted in `skipped`).

    Args:
        images: uint8 (H, W, 3) each.
        method: one of `METHODS`.
        mask: leave the background and the cell's rim out of the statistics.
        **params: overrides of the method's defaults (Macenko: io, alpha, beta, and
            io_percentile with the mask; any: background_max, edge).

    Returns:
        The reference (JSON-able): `method`, `version`, `params`, the method's targets,
        `images` (the images fitted) and `skipped`.

    Raises:
        LeukoflowError: for an unknown method or parameter, or when every image is
            degenerate.
    """
    if method not in METHODS:
        raise LeukoflowError(f"unknown stain method {method!r}; allowed: {', '.join(METHODS)}")
    params = _params(method, mask, **params)
    reference = {"method": method, "version": REFERENCE_VERSION, "params": params}
    if method == "none":
        reference["images"] = sum(1 for _ in images)
        reference["skipped"] = 0
        return reference
    images = list(images)
    brightness = None
    if method == "macenko" and mask:
        brightness = reference["brightness"] = _median_brightness(images, params)
    estimates, skipped = [], 0
    for image in images:
        try:
            estimates.append(_estimate(image, method, params, brightness))
        except DegenerateStainError as error:
            log.debug("reference: image skipped (%s)", error)
            skipped += 1
    if not estimates:
        raise LeukoflowError(
            f"cannot fit a {method} reference: all {skipped} images are degenerate "
            "(nearly blank or one stain only)"
        )
    for key in estimates[0]:
        reference[key] = np.median(np.stack([e[key] for e in estimates]), axis=0)
    if method == "macenko":
        stains = reference["stain_matrix"]
        reference["stain_matrix"] = stains / np.linalg.norm(stains, axis=0, keepdims=True)
    reference = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in reference.items()}
    reference["images"] = len(estimates)
    reference["skipped"] = skipped
    return reference


def _median_brightness(images, params):
    """The median `macenko.brightness` of the images: mask-aware Macenko's reference exposure."""
    levels = []
    for image in images:
        flat = np.ascontiguousarray(image).reshape(-1, 3)
        brightest = _brightest(flat)
        _, counted = _statistics_mask(image, brightest, params)
        try:
            levels.append(macenko.brightness(brightest, counted, params))
        except DegenerateStainError:
            continue
    if not levels:
        raise LeukoflowError(
            f"cannot fit a macenko reference: all {len(images)} images are degenerate "
            "(nearly blank)"
        )
    return float(np.median(levels))


def _reinhard_apply(flat, brightest, counted, reference):
    """Normalised pixels float32 (3, N) in [0, 255] of uint8 pixels (N, 3) (Reinhard)."""
    lab = _rgb_to_lab(flat)
    means, stds = _reinhard_estimate(lab, counted)
    # a flat channel (std ~ 0) is shifted to the target mean, not scaled
    gain = np.where(stds > 1e-3, np.asarray(reference["lab_stds"]) / np.maximum(stds, 1e-3), 1.0)
    shift = np.asarray(reference["lab_means"]) - means * gain
    lab = lab * gain.astype(np.float32)[:, None] + shift.astype(np.float32)[:, None]
    out = _lab_to_rgb(lab)
    return np.multiply(out, np.float32(255), out=out)


def normalize_with_status(image: np.ndarray, reference: dict) -> tuple[np.ndarray, str | None]:
    """Normalise an image to `reference`, and say whether it fell back.

    Method `none` returns a copy of the image as it is.

    Args:
        image: uint8 (H, W, 3).
        reference: from `fit_reference` or `load_reference`.

    Returns:
        (normalised, reason): uint8 (H, W, 3), and None, or why the image is degenerate
        (then it is returned unchanged apart from its black background).
    """
    method = reference["method"]
    if method == "none":
        return image.copy(), None
    params = reference["params"]
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    brightest = _brightest(flat)
    fg, counted = _statistics_mask(image, brightest, params)
    apply = macenko.apply if method == "macenko" else _reinhard_apply
    try:
        channels = apply(flat, brightest, counted, reference)
    except DegenerateStainError as error:
        out = flat.copy()
        if fg is not None:
            out[~fg] = 0
        return out.reshape(image.shape), str(error)
    if fg is not None:
        np.multiply(channels, fg, out=channels)
    out = np.empty_like(flat)
    np.copyto(out.T, channels, casting="unsafe")  # truncates, as torchstain's astype does
    return out.reshape(image.shape), None


def normalize(image: np.ndarray, reference: dict, on_degenerate: str = "identity") -> np.ndarray:
    """Normalise a uint8 RGB image to `reference`.

    Values are truncated to uint8 as torchstain does.

    Args:
        image: uint8 (H, W, 3).
        reference: from `fit_reference` or `load_reference`.
        on_degenerate: `identity`: a degenerate image is returned unchanged apart from
            its background (logged at debug level); `raise`: it raises.

    Returns:
        uint8 (H, W, 3).

    Raises:
        DegenerateStainError: for a degenerate image with `on_degenerate="raise"`.
    """
    out, reason = normalize_with_status(image, reference)
    if reason is not None:
        if on_degenerate == "raise":
            raise DegenerateStainError(reason)
        log.debug("stain normalisation skipped: %s", reason)
    return out


def save_reference(reference: dict, path: str | Path) -> None:
    """Write a reference dict as JSON, atomically."""
    write_text(path, json.dumps(reference, indent=2, sort_keys=True) + "\n")


def load_reference(path: str | Path) -> dict:
    """Read and check a reference JSON written by `save_reference`.

    Raises:
        LeukoflowError: naming the file when it cannot be read or parsed, is not a
            reference, has another `version`, or lacks its method's targets.
    """
    try:
        reference = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise LeukoflowError(f"{path}: cannot read stain reference ({error})") from None
    method = reference.get("method") if isinstance(reference, dict) else None
    if method not in METHODS:
        raise LeukoflowError(f"{path}: not a stain reference (method {method!r})")
    if reference.get("version") != REFERENCE_VERSION:
        raise LeukoflowError(
            f"{path}: stain reference version {reference.get('version')!r}, "
            f"this leukoflow reads version {REFERENCE_VERSION}; rerun stain-reference"
        )
    needed = {
        "macenko": ("stain_matrix", "max_concentrations"),
        "reinhard": ("lab_means", "lab_stds"),
    }.get(method, ())
    if method == "macenko" and reference.get("params", {}).get("mask"):
        needed += ("brightness",)
    missing = [k for k in needed if k not in reference]
    if missing or "params" not in reference:
        raise LeukoflowError(f"{path}: stain reference lacks {', '.join(missing or ['params'])}")
    return reference
