"""Reinhard's stain normalisation: the LAB means and standard deviations of a cell matched.

Computed as torchstain's numpy normaliser computes it (sRGB to linear light, XYZ, LAB), with
the pixels held channel-first (3, N) so each step is one vectorised pass. The estimate (a
mean and a standard deviation per channel) is a continuous function of the counted pixels.
A channel with no spread (standard deviation below 1e-3) is shifted to the target mean,
not scaled.
"""

import functools

import numpy as np

from leukoflow.stain.macenko import MIN_STAIN_PIXELS, DegenerateStainError

_RGB2XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])


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


def _statistics(lab, counted):
    """Means and standard deviations (3,) of LAB pixels (3, N) where `counted` (None: all)."""
    values = lab if counted is None else lab.take(np.flatnonzero(counted), axis=1)
    if values.shape[1] < MIN_STAIN_PIXELS:
        raise DegenerateStainError(
            f"only {values.shape[1]} foreground pixels (< {MIN_STAIN_PIXELS})"
        )
    return values.mean(axis=1, dtype=np.float64), values.std(axis=1, dtype=np.float64)


def fit(
    flat: np.ndarray,
    brightest: np.ndarray,
    counted: np.ndarray | None,
    params: dict,
    brightness: float | None = None,
) -> dict:
    """One image's Reinhard estimate: its LAB means and standard deviations.

    Args:
        flat: uint8 (N, 3), the image's pixels.
        brightest: uint8 (N,), their largest channel value (unused: the registry's signature).
        counted: bool (N,), the pixels the statistics use; None: all.
        params: the method's parameters (unused).
        brightness: unused (the registry's signature).

    Returns:
        {"lab_means": (3,), "lab_stds": (3,)}, float64.

    Raises:
        DegenerateStainError: fewer than MIN_STAIN_PIXELS pixels count.
    """
    means, stds = _statistics(_rgb_to_lab(flat), counted)
    return {"lab_means": means, "lab_stds": stds}


def apply(
    flat: np.ndarray, brightest: np.ndarray, counted: np.ndarray | None, reference: dict
) -> np.ndarray:
    """An image's pixels normalised to a Reinhard reference, channel-first.

    Args:
        flat: uint8 (N, 3), the image's pixels.
        brightest: uint8 (N,), their largest channel value (unused: the registry's signature).
        counted: bool (N,), the pixels the statistics use; None: all.
        reference: a Reinhard reference (`leukoflow.stain.normalize.fit_reference`).

    Returns:
        float32 (3, N) in [0, 255], to be truncated to uint8 as torchstain does.

    Raises:
        DegenerateStainError: fewer than MIN_STAIN_PIXELS pixels count.
    """
    lab = _rgb_to_lab(flat)
    means, stds = _statistics(lab, counted)
    # a flat channel (std ~ 0) is shifted to the target mean, not scaled
    gain = np.where(stds > 1e-3, np.asarray(reference["lab_stds"]) / np.maximum(stds, 1e-3), 1.0)
    shift = np.asarray(reference["lab_means"]) - means * gain
    lab = lab * gain.astype(np.float32)[:, None] + shift.astype(np.float32)[:, None]
    out = _lab_to_rgb(lab)
    return np.multiply(out, np.float32(255), out=out)
