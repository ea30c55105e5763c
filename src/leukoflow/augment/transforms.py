"""One augmented copy of a cell image: its parameters, drawn from a seed, and the
transformation they describe (used by `leukoflow.augment.offline` for the augmented store).

Transformations, in this order: flips; rotation by an angle in [0, 360) degrees about the
centre of the cell's bounding box, bilinear, black fill; on the cell only (the pixels of
`leukoflow.stain.normalize.foreground_mask`, the stores' notion of foreground): stain jitter (off by
default), contrast and brightness jitter, then additive Gaussian noise (one draw per cell
pixel and channel, in row-major order of the cell pixels). Background pixels stay as they
are (black).

Stain jitter is Tellez et al.'s (2018) HED augmentation: each pixel's optical density
-log((v + 1) / 256) is split into concentrations of Ruifrok and Johnston's haematoxylin,
eosin and DAB vectors (`RGB_FROM_HED`, a full basis, so every colour is represented); each
concentration c becomes alpha c + beta, with alpha in [1 - s, 1 + s] and beta in [-s, s]
drawn per copy and stain, s = `stain_jitter`. The alternative to stain normalisation that
the literature uses where normalisation is doubtful.
"""

import dataclasses

import numpy as np
from PIL import Image

from leukoflow.core.errors import ConfigError
from leukoflow.stain.normalize import foreground_mask

STAINS = ("h", "e", "d")  # haematoxylin, eosin, DAB: the rows of RGB_FROM_HED
STAIN_ALPHAS = tuple(f"stain_alpha_{k}" for k in STAINS)
STAIN_BETAS = tuple(f"stain_beta_{k}" for k in STAINS)
PARAM_COLUMNS = (
    "angle",
    "flip_h",
    "flip_v",
    "noise_std",
    "noise_seed",
    "brightness",
    "contrast",
    *STAIN_ALPHAS,
    *STAIN_BETAS,
)
IDENTITY = {
    "angle": 0.0,
    "flip_h": False,
    "flip_v": False,
    "noise_std": 0.0,
    "noise_seed": 0,
    "brightness": 0.0,
    "contrast": 1.0,
    **dict.fromkeys(STAIN_ALPHAS, 1.0),
    **dict.fromkeys(STAIN_BETAS, 0.0),
}
# Ruifrok & Johnston's optical-density vectors (rows) of haematoxylin, eosin and DAB, as in
# scikit-image's `rgb_from_hed`, scaled to unit length
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
DECIMALS = 6  # parameters are stored rounded, so a CSV round trip gives the same doubles


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The transformation knobs (config block `augment`).

    rotation: uniform angle in [0, 360) degrees; flip: horizontal and vertical flips, each
    with probability 1/2; noise_std: std of the additive Gaussian noise on the cell, in
    grey levels (0-255); brightness: offset drawn from [-b, b] times 255 grey levels;
    contrast: factor drawn from [1 - c, 1 + c] about the cell's mean colour; stain_jitter:
    s of the HED stain jitter (alpha in [1 - s, 1 + s], beta in [-s, s]; 0: off).
    """

    rotation: bool = True
    flip: bool = True
    noise_std: float = 4.0
    brightness: float = 0.05
    contrast: float = 0.05
    stain_jitter: float = 0.0

    def __post_init__(self):
        if not self.noise_std >= 0:
            raise ConfigError(f"augment.noise_std: {self.noise_std} must be >= 0")
        if not 0 <= self.brightness <= 1:
            raise ConfigError(f"augment.brightness: {self.brightness} must be in [0, 1]")
        if not 0 <= self.contrast <= 1:
            raise ConfigError(f"augment.contrast: {self.contrast} must be in [0, 1]")
        if not 0 <= self.stain_jitter < 1:
            raise ConfigError(f"augment.stain_jitter: {self.stain_jitter} must be in [0, 1)")


def cell_centre(mask):
    """Centre (x, y) of the mask's bounding box in PIL's continuous pixel coordinates.

    Pixel column i spans [i, i + 1); an empty mask gives the image centre.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask.shape[1] / 2, mask.shape[0] / 2
    return (cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2


def draw_params(seed, source_row, copy, spec):
    """The parameters of copy `copy` (>= 1) of training row `source_row`: a dict of PARAM_COLUMNS.

    Drawn from `SeedSequence([seed, source_row, copy])` in a fixed order whatever the knobs,
    so switching one transformation off leaves the others' draws unchanged.
    """
    rng = np.random.default_rng([seed, source_row, copy])
    u = rng.random(5)
    noise_seed = int(rng.integers(0, 2**32))
    jitter = (2.0 * rng.random(2 * len(STAINS)) - 1.0) * spec.stain_jitter
    stain = {name: round(1.0 + j, DECIMALS) for name, j in zip(STAIN_ALPHAS, jitter[:3])}
    stain |= {name: round(j, DECIMALS) + 0.0 for name, j in zip(STAIN_BETAS, jitter[3:])}
    return stain | {
        "angle": round(360.0 * u[0], DECIMALS) % 360.0 if spec.rotation else 0.0,
        "flip_h": bool(u[1] < 0.5) if spec.flip else False,
        "flip_v": bool(u[2] < 0.5) if spec.flip else False,
        "noise_std": round(float(spec.noise_std), DECIMALS),
        "noise_seed": noise_seed if spec.noise_std > 0 else 0,
        "brightness": round((2.0 * u[3] - 1.0) * spec.brightness, DECIMALS),
        "contrast": round(1.0 + (2.0 * u[4] - 1.0) * spec.contrast, DECIMALS),
    }


def regenerate(source_image, params):
    """Apply one row's transformation to its source image.

    source_image: uint8 (H, W, 3); params: a mapping (dict, pandas Series, index row) with
    the keys of PARAM_COLUMNS. Returns a new uint8 (H, W, 3); identity parameters return an
    unchanged copy.
    """
    angle = round(float(params["angle"]), DECIMALS)
    noise_std = round(float(params["noise_std"]), DECIMALS)
    brightness = round(float(params["brightness"]), DECIMALS)
    contrast = round(float(params["contrast"]), DECIMALS)
    alphas = np.array([round(float(params[k]), DECIMALS) for k in STAIN_ALPHAS])
    betas = np.array([round(float(params[k]), DECIMALS) for k in STAIN_BETAS])
    stain = not (np.all(alphas == 1.0) and np.all(betas == 0.0))
    image = np.asarray(source_image, dtype=np.uint8)
    if bool(params["flip_h"]):
        image = image[:, ::-1]
    if bool(params["flip_v"]):
        image = image[::-1]
    image = np.ascontiguousarray(image)
    if angle != 0.0:
        rotated = Image.fromarray(image).rotate(
            angle,
            resample=Image.Resampling.BILINEAR,
            center=cell_centre(foreground_mask(image)),
            fillcolor=(0, 0, 0),
        )
        image = np.asarray(rotated)
    if brightness == 0.0 and contrast == 1.0 and noise_std == 0.0 and not stain:
        return image.copy()
    mask = foreground_mask(image)
    if not mask.any():
        return image.copy()
    cell = image[mask].astype(np.float32)  # (M, 3)
    if stain:
        cell = jitter_stain(cell, alphas, betas)
    if brightness != 0.0 or contrast != 1.0:
        mean = cell.mean(axis=0)
        cell = (cell - mean) * np.float32(contrast) + (mean + np.float32(255.0 * brightness))
    if noise_std != 0.0:
        noise = np.random.default_rng(int(params["noise_seed"])).standard_normal(
            cell.shape, dtype=np.float32
        )
        cell += noise * np.float32(noise_std)
    out = image.copy()
    out[mask] = np.clip(np.rint(cell), 0, 255).astype(np.uint8)
    return out


def jitter_stain(cell: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Tellez et al.'s HED jitter of cell pixels: concentrations c -> alpha c + beta.

    Args:
        cell: float32 (M, 3), pixel values in grey levels (0-255).
        alphas: (3,), the factors of the haematoxylin, eosin and DAB concentrations.
        betas: (3,), their offsets (concentration units: optical density along a unit
            stain vector).

    Returns:
        float32 (M, 3), grey levels, unrounded and unclipped.
    """
    od = -np.log((cell + np.float32(1)) / np.float32(256))
    # OD = c @ RGB_FROM_HED, so OD' = (OD @ inv(RGB_FROM_HED) * alpha + beta) @ RGB_FROM_HED
    matrix = (np.linalg.inv(RGB_FROM_HED) * alphas) @ RGB_FROM_HED
    shifted = od @ matrix.astype(np.float32) + (betas @ RGB_FROM_HED).astype(np.float32)
    return np.float32(256) * np.exp(-shifted) - np.float32(1)
