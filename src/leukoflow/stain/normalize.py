"""Stain normalisation of single-cell images on a black background: the methods' common frame.

The methods are the entries of `leukoflow.stain.registry` (none, Reinhard, Macenko; their
mathematics in `leukoflow.stain.reinhard` and `leukoflow.stain.macenko`); this module holds
what they share: the mask, `fit_reference`, `normalize` and the reference file.

Mask-aware (the default): background pixels (every channel at most `BACKGROUND_MAX`) take
no part in the statistics and are exactly black in the output; neither does the cell's
`EDGE_PX` rim, where anti-aliasing mixes the stain with black. With the mask switched off
the methods compute what torchstain's numpy normalisers compute, with the pixels held
channel-first (3, N) so each step is one vectorised pass: optical densities and
concentrations in float32, the Macenko mean and Gram matrix in float64 (float32 sums left
the stain vectors ~1e-4 off, by an amount that depended on the BLAS build).

Mask-aware Macenko departs from torchstain's, each departure needed on real
Romanowsky-stained cells (three absorbers, no background to read the light from, stain
vectors only 4-10 degrees apart):

- the stain plane is spanned by the two leading eigenvectors of the uncentred second
  moment of the optical densities (Macenko et al. 2009 take the SVD of the OD tuples), not
  of their centred covariance: once the background is left out, the centred covariance's
  plane need not contain the mean OD direction, and projecting onto it lost the cell's
  average colour (real Wright-stained white cells moved 9-13 grey levels on a round trip,
  one 40);
- the light level `io` follows each image's exposure: `io` times the image's brightness
  over the reference's, the brightness being the mean brightest channel of the brightest
  (100 - `io_percentile`)% of the counted pixels (+ 1; the reference's is the median over
  its images). A uniformly darker or brighter copy of a cell then has the same optical
  densities and is normalised to the same pixels; the output is drawn at the light level
  `io`;
- the estimate is a continuous function of the image (`leukoflow.stain.macenko.estimate`):
  soft weights instead of the transparent-pixel threshold, band means instead of the
  angle and concentration percentiles, the reference's plane as a prior where the image's
  is undetermined, ridge-regularised concentrations, and no switch to the fallback for
  stain vectors too close together. Hard switches made the estimate bistable on real
  C-NMC cells: exposure copies of one cell normalised to two states 10 grey levels apart;
- what the two stains do not explain is kept: each OD is its stain concentrations plus a
  residual; the concentrations are scaled to the reference's 99th percentiles and put on
  its stains, the residual kept, so a third absorber keeps its colour instead of being
  projected away and an image normalised to a reference fitted on itself comes back
  unchanged. The output is rounded, not truncated.

`leukoflow.stain.reference` is the workflow step that fits the reference on the training
subjects and measures what it does.

A reference is a small JSON-able dict: `method`, `version`, the method's parameters and its
targets (the registry's `targets`; mask-aware Macenko also the `brightness`).
`fit_reference` aggregates per-image estimates by their median, so a few odd training
images do not move it.

Degenerate images (fewer than `MIN_STAIN_PIXELS` stained pixels or no stain concentration;
without the mask, Macenko stain vectors closer than `MIN_STAIN_ANGLE_DEG`; Reinhard: fewer
than `MIN_STAIN_PIXELS` counted pixels, the foreground without its rim) are not normalised:
`normalize` returns them unchanged apart from the black background (documented fallback,
logged at debug level), or raises `DegenerateStainError` with `on_degenerate="raise"`.
Output pixels are never NaN.
"""

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from leukoflow.core.atomic import write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.stain.macenko import DegenerateStainError, optical_density
from leukoflow.stain.registry import METHOD_NAMES, StainMethod, get_method

__all__ = [  # with the two of leukoflow.stain.macenko that callers take from here
    "BACKGROUND_MAX",
    "DegenerateStainError",
    "EDGE_PX",
    "METHODS",
    "REFERENCE_VERSION",
    "fit_reference",
    "foreground_mask",
    "interior",
    "load_reference",
    "normalize",
    "normalize_with_status",
    "optical_density",
    "save_reference",
]

log = logging.getLogger(__name__)

METHODS = METHOD_NAMES
REFERENCE_VERSION = 3  # 3: the continuous Macenko estimate (brightness a tail mean)
BACKGROUND_MAX = 10  # a pixel whose channels are all <= this is background
EDGE_PX = 2  # rim of the foreground (px) left out of the statistics


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


def _estimate(image, spec, params, brightness=None):
    """Per-image estimate of method `spec` on uint8 (H, W, 3): a dict of its targets.

    `brightness`: the reference's (a method with an `exposure`, mask-aware), else None.
    """
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    brightest = _brightest(flat)
    _, counted = _statistics_mask(image, brightest, params)
    return spec.function("fit")(flat, brightest, counted, params, brightness)


def _params(spec, mask, **overrides):
    """The parameters of method `spec` with the defaults filled in."""
    params = {"background_max": BACKGROUND_MAX, "edge": EDGE_PX, "mask": bool(mask)}
    params.update(spec.masked_defaults if mask and spec.masked_defaults else spec.defaults)
    unknown = set(overrides) - set(params)
    if unknown:
        raise LeukoflowError(f"unknown {spec.name} parameters: {', '.join(sorted(unknown))}")
    params.update(overrides)
    return params


def _uses_exposure(spec: StainMethod, params: dict) -> bool:
    """Whether a reference of `spec` with `params` holds a `brightness` (mask-aware exposure)."""
    return bool(spec.exposure) and params["mask"]


def fit_reference(
    images: Iterable[np.ndarray], method: str, mask: bool = True, **params: float
) -> dict:
    """Fit a reference: the median of per-image estimates.

    Degenerate images are skipped (and counted in `skipped`).

    Args:
        images: uint8 (H, W, 3) each.
        method: one of `METHODS` (`leukoflow.stain.registry`).
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
    spec = get_method(method)
    params = _params(spec, mask, **params)
    reference = {"method": method, "version": REFERENCE_VERSION, "params": params}
    if not spec.fit:
        reference["images"] = sum(1 for _ in images)
        reference["skipped"] = 0
        return reference
    images = list(images)
    brightness = None
    if _uses_exposure(spec, params):
        brightness = reference["brightness"] = _median_brightness(images, spec, params)
    estimates, skipped = [], 0
    for image in images:
        try:
            estimates.append(_estimate(image, spec, params, brightness))
        except DegenerateStainError as error:
            log.debug("reference: image skipped (%s)", error)
            skipped += 1
    if not estimates:
        raise LeukoflowError(
            f"cannot fit a {method} reference: all {skipped} images are degenerate "
            "(nearly blank or one stain only)"
        )
    medians = {k: np.median(np.stack([e[k] for e in estimates]), axis=0) for k in spec.targets}
    if spec.finish:
        medians = spec.function("finish")(medians)
    reference.update({k: v.tolist() for k, v in medians.items()})
    reference["images"] = len(estimates)
    reference["skipped"] = skipped
    return reference


def _median_brightness(images, spec, params):
    """The median exposure (`spec.exposure`) of the images: the reference's `brightness`."""
    exposure = spec.function("exposure")
    levels = []
    for image in images:
        flat = np.ascontiguousarray(image).reshape(-1, 3)
        brightest = _brightest(flat)
        _, counted = _statistics_mask(image, brightest, params)
        try:
            levels.append(exposure(brightest, counted, params))
        except DegenerateStainError:
            continue
    if not levels:
        raise LeukoflowError(
            f"cannot fit a {spec.name} reference: all {len(images)} images are degenerate "
            "(nearly blank)"
        )
    return float(np.median(levels))


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
    spec = get_method(reference["method"])
    if not spec.apply:
        return image.copy(), None
    params = reference["params"]
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    brightest = _brightest(flat)
    fg, counted = _statistics_mask(image, brightest, params)
    try:
        channels = spec.function("apply")(flat, brightest, counted, reference)
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
    spec = get_method(method)
    needed = spec.targets
    if spec.exposure and reference.get("params", {}).get("mask"):
        needed += ("brightness",)
    missing = [k for k in needed if k not in reference]
    if missing or "params" not in reference:
        raise LeukoflowError(f"{path}: stain reference lacks {', '.join(missing or ['params'])}")
    return reference
