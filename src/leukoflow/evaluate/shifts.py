"""Acquisition shifts of the stress test: one registry, each shift a deterministic function.

A shift imitates what another microscope, stain batch or camera does to a prepared cell
image. Pixel shifts act on the stored uint8 test images (after preparation); a preparation
shift (`stain_off`) prepares the raw test images again with a changed stain reference
(`leukoflow.evaluate.stress` does that). Each shift has named strengths, each strength its
parameters; every random draw comes from `(seed, row)`, so a shifted store is the same on
every run and for every model.

To add a shift: write a function `(image uint8 (S, S, 3), rng, **params) -> uint8 (S, S, 3)`
and register a `Shift` in `SHIFTS`; the config (`stress.strengths`), the stress step, the
report and the README table (checked by a test) follow from the registry.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from leukoflow.augment.transforms import jitter_stain
from leukoflow.core.errors import ConfigError
from leukoflow.stain.normalize import foreground_mask

PixelShift = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Shift:
    """One acquisition shift.

    Attributes:
        name: its name in the config, the tables and the report.
        description: what it imitates and what its parameters mean (README, report).
        strengths: {strength name: its parameters}, mildest first; a preparation shift's
            parameters are the stain-reference keys it overrides.
        apply: the pixel function `(image, rng, **params)`, or None for a preparation shift.
    """

    name: str
    description: str
    strengths: Mapping[str, Mapping[str, float | int | str]]
    apply: PixelShift | None = None


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Tellez's HED jitter of the cell (`leukoflow.augment.transforms.jitter_stain`), one draw
    per image: each stain's concentration c -> alpha c + beta, alpha in [1 - sigma, 1 + sigma],
    beta in [-sigma, sigma]; the black background stays black."""
    alphas = rng.uniform(1 - sigma, 1 + sigma, 3)
    betas = rng.uniform(-sigma, sigma, 3)
    mask = foreground_mask(image)
    out = image.copy()
    if mask.any():
        cell = jitter_stain(image[mask].astype(np.float32), alphas, betas)
        out[mask] = np.clip(np.rint(cell), 0, 255).astype(np.uint8)
    return out


def exposure(image: np.ndarray, rng: np.random.Generator, factor: float) -> np.ndarray:
    """Every pixel value times `factor` (< 1 darker, > 1 brighter), clipped to [0, 255]."""
    del rng
    return np.clip(np.rint(image.astype(np.float32) * np.float32(factor)), 0, 255).astype(np.uint8)


def defocus(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel, std `sigma` as a fraction of the image side (so a
    shift means the same optics at every input size); the edges wrap, which keeps the mean."""
    del rng
    side = (sigma * image.shape[0], sigma * image.shape[1], 0)
    blurred = gaussian_filter(image.astype(np.float32), sigma=side, mode="wrap")
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, rng: np.random.Generator, quality: int) -> np.ndarray:
    """JPEG compression at `quality` (1-100, PIL's encoder, 4:2:0 chroma), decoded again."""
    del rng
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def resolution(image: np.ndarray, rng: np.random.Generator, factor: int) -> np.ndarray:
    """Down-sampled by `factor` (box average), then up-sampled to the side again (bilinear)."""
    del rng
    side = image.shape[0]
    small = Image.fromarray(image).reduce(int(factor))
    return np.asarray(small.resize((side, side), Image.Resampling.BILINEAR))


SHIFTS: dict[str, Shift] = {
    shift.name: shift
    for shift in (
        Shift(
            "stain",
            "HED stain jitter of the cell (Tellez et al. 2018), one draw per image: "
            "concentrations c -> alpha c + beta, alpha in [1 - sigma, 1 + sigma], "
            "beta in [-sigma, sigma]",
            {"mild": {"sigma": 0.05}, "strong": {"sigma": 0.2}},
            stain_jitter,
        ),
        Shift(
            "exposure",
            "every pixel value times factor (a darker or brighter lamp or camera)",
            {"darker": {"factor": 0.7}, "brighter": {"factor": 1.3}},
            exposure,
        ),
        Shift(
            "defocus",
            "Gaussian blur, std sigma as a fraction of the image side",
            {"mild": {"sigma": 0.01}, "strong": {"sigma": 0.03}},
            defocus,
        ),
        Shift(
            "jpeg",
            "JPEG compression at quality q, decoded again",
            {"q50": {"quality": 50}, "q20": {"quality": 20}},
            jpeg,
        ),
        Shift(
            "resolution",
            "down-sampled by factor (box average), up-sampled again (bilinear)",
            {"half": {"factor": 2}, "quarter": {"factor": 4}},
            resolution,
        ),
        Shift(
            "stain_off",
            "the stain normalisation switched off: the raw test images prepared with the "
            "`none` stain method",
            {"off": {"method": "none"}},
        ),
    )
}


def chosen_strengths(strengths: Mapping[str, list[str]] | None) -> list[tuple[str, str]]:
    """The (shift, strength) pairs a stress job runs, in registry order.

    Args:
        strengths: the config's `stress.strengths`: {shift: [strength names]}; a shift left
            out runs all its strengths, an empty list none; None runs every strength.

    Returns:
        [(shift, strength)].

    Raises:
        ConfigError: naming an unknown shift or strength and the allowed ones.
    """
    strengths = dict(strengths or {})
    unknown = set(strengths) - set(SHIFTS)
    if unknown:
        raise ConfigError(
            f"stress.strengths: unknown shift(s) {sorted(unknown)}; allowed: {', '.join(SHIFTS)}"
        )
    pairs = []
    for name, shift in SHIFTS.items():
        chosen = strengths.get(name, list(shift.strengths))
        wrong = [s for s in chosen if s not in shift.strengths]
        if wrong:
            raise ConfigError(
                f"stress.strengths.{name}: unknown strength(s) {wrong}; allowed: "
                f"{', '.join(shift.strengths)}"
            )
        pairs += [(name, s) for s in shift.strengths if s in chosen]
    return pairs


def shift_images(
    images: np.ndarray, name: str, strength: str, seed: int, first_row: int = 0
) -> np.ndarray:
    """A pixel shift applied to a batch of prepared images.

    Args:
        images: uint8 (N, S, S, 3), rows `first_row`... of the test store.
        name: a pixel shift of `SHIFTS`.
        strength: one of its strengths.
        seed: the stress seed; the image of store row r draws from (seed, r).
        first_row: the store row of `images[0]`.

    Returns:
        uint8 (N, S, S, 3).

    Raises:
        ConfigError: for an unknown shift or strength, or a preparation shift.
    """
    shift = SHIFTS.get(name)
    if shift is None or shift.apply is None or strength not in shift.strengths:
        raise ConfigError(f"{name}/{strength} is not a pixel shift of the stress registry")
    params = shift.strengths[strength]
    return np.stack(
        [
            shift.apply(np.asarray(image), np.random.default_rng([seed, row]), **params)
            for row, image in enumerate(images, start=first_row)
        ]
    )


def shifts_markdown() -> str:
    """The registry as the README's Markdown table (a test checks the README holds it)."""
    lines = ["| Shift | Strengths (parameters) | What it does |", "| --- | --- | --- |"]
    for shift in SHIFTS.values():
        strengths = "; ".join(
            f"`{s}` ({', '.join(f'{k}={v}' for k, v in params.items())})"
            for s, params in shift.strengths.items()
        )
        lines.append(f"| `{shift.name}` | {strengths} | {shift.description} |")
    return "\n".join(lines)
