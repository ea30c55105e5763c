"""The stain step of the workflow: the reference fitted on the training subjects, and its effect.

`build_reference` samples training images of one split, fits the reference
(`leukoflow.stain.normalize.fit_reference`), measures how much the between-subject spread of mean
foreground optical density shrinks once normalised (training and held-out samples), and
draws a before/after figure; it writes each of the three to the path it is given.
`round_trip` measures how a method treats one cell (its own reference, darker and brighter
copies) and `exposure_sweep` how continuously (copies at exposures 0.60 to 1.00): the
checks every method is held to on real pixels. The algorithm itself is in
`leukoflow.stain.normalize`.
"""

import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.core.atomic import write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.images import DEFAULT_MAX_PIXELS, BadImageError, read_rgb
from leukoflow.stain.normalize import (
    fit_reference,
    foreground_mask,
    interior,
    normalize,
    optical_density,
    save_reference,
)

log = logging.getLogger(__name__)


def mean_foreground_od(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean optical density (io 256) of the masked pixels of an image.

    Args:
        image: uint8 (H, W, 3).
        mask: bool (H * W,) or (H, W), the pixels that count.

    Returns:
        float64 (3,); NaN when the mask is empty.
    """
    flat = np.ascontiguousarray(image).reshape(-1, 3)
    od = optical_density(flat, 256).take(np.flatnonzero(mask.reshape(-1)), axis=1)
    return od.mean(axis=1, dtype=np.float64) if od.shape[1] else np.full(3, np.nan)


def exposed(image: np.ndarray, factor: float) -> np.ndarray:
    """A uniformly darker (`factor` < 1) or brighter copy of a cell on black.

    The foreground's pixels times `factor`, rounded and clipped to 255; the background
    stays black.

    Args:
        image: uint8 (H, W, 3).
        factor: the exposure, > 0.

    Returns:
        uint8 (H, W, 3).
    """
    fg = foreground_mask(image)
    out = np.clip(np.rint(image * float(factor)), 0, 255).astype(np.uint8)
    out[~fg] = 0
    return out


def round_trip(
    image: np.ndarray,
    method: str | Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
    darker: float = 0.85,
    brighter: float = 1.1,
) -> dict:
    """How a normaliser treats a cell, and uniformly darker and brighter copies of it.

    All figures are mean absolute differences in grey levels over the cell's pixels (the
    foreground of `image`, all three channels).

    Args:
        image: uint8 (H, W, 3), a cell on black.
        method: one of `leukoflow.stain.normalize.METHODS` (mask-aware), or a function that
            returns the normaliser (uint8 image -> uint8 image) to a reference fitted on
            the image it is given (another implementation, torchstain's say).
        darker: exposure of the darker copy (`exposed`).
        brighter: exposure of the brighter copy, at most: lowered to the largest that
            saturates no pixel of the cell (a uniformly brighter copy must not clip).

    Returns:
        `self`: the cell normalised against the cell; `darker`, `brighter`: the
        normalised copy against the normalised cell (`brighter` None when the cell
        already holds a 255, so no copy can be uniformly brighter); `brighter_factor`.
    """
    if isinstance(method, str):
        reference = fit_reference([image], method)
        normalise = functools.partial(normalize, reference=reference)
    else:
        normalise = method(image)
    fg = foreground_mask(image)
    normalised = normalise(image)

    def change(a, b):
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[fg].mean())

    factor = min(brighter, 255.0 / max(int(image[fg].max()), 1))
    return {
        "self": change(normalised, image),
        "darker": change(normalise(exposed(image, darker)), normalised),
        "brighter": change(normalise(exposed(image, factor)), normalised) if factor > 1 else None,
        "brighter_factor": factor,
    }


SWEEP_FACTORS = tuple(round(0.6 + 0.01 * k, 2) for k in range(41))  # 0.60, 0.61, ..., 1.00


def hue_shifted(image: np.ndarray, degrees: float) -> np.ndarray:
    """A copy of a cell on black with its colours turned `degrees` about the grey axis.

    Args:
        image: uint8 (H, W, 3).
        degrees: the turn; a few degrees is a small hue shift.

    Returns:
        uint8 (H, W, 3), the foreground's pixels turned, rounded and clipped; the
        background stays black.
    """
    t = np.radians(degrees)
    cross = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / np.sqrt(3)
    turn = np.cos(t) * np.eye(3) + (1 - np.cos(t)) / 3 + np.sin(t) * cross
    out = np.clip(np.rint(image @ turn.T), 0, 255).astype(np.uint8)
    out[~foreground_mask(image)] = 0
    return out


def exposure_sweep(
    image: np.ndarray,
    normalise: Callable[[np.ndarray], np.ndarray],
    factors: Sequence[float] = SWEEP_FACTORS,
) -> dict:
    """How continuously a normaliser treats uniformly darker copies of a cell.

    A stain estimate that is a continuous function of the image moves little from one
    exposure to the next; one that flips between two states jumps. Figures are mean
    absolute differences in grey levels over the cell's pixels (as `round_trip`'s).

    Args:
        image: uint8 (H, W, 3), a cell on black.
        normalise: uint8 image -> uint8 image (normalised to some fixed reference).
        factors: the exposures (`exposed`), in increasing order, the last 1.0.

    Returns:
        `step`: the largest difference between the normalised copies of neighbouring
        exposures; `distance`: the largest difference of a normalised copy from the
        normalised image.
    """
    fg = foreground_mask(image)
    outputs = [normalise(exposed(image, f)).astype(np.int16)[fg] for f in factors]
    original = normalise(image).astype(np.int16)[fg]
    steps = [np.abs(a - b).mean() for a, b in zip(outputs, outputs[1:], strict=False)]
    return {
        "step": float(max(steps)),
        "distance": float(max(np.abs(out - original).mean() for out in outputs)),
    }


def sample_rows(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most `n` of `rows`, drawn with `seed`, in their original order."""
    return rows.sample(n=min(n, len(rows)), random_state=seed).sort_index()


def _read_rows(rows, dataset, max_pixels):
    """The images of split rows, uint8 (H, W, 3) each; a bad file raises BadImageError."""
    images = []
    for rel in rows["path"]:
        try:
            images.append(read_rgb(Path(dataset) / rel, max_pixels))
        except BadImageError as error:
            raise BadImageError(
                error.path,
                f"{error.reason} (the stain reference reads the split's images: if the dataset "
                "changed since ingest, run the workflow again from ingest)",
            ) from None
    return images


def stain_spread(subjects: Sequence[str], images: Sequence[np.ndarray], reference: dict) -> dict:
    """Between-subject spread of mean foreground OD, before and after normalisation.

    The foreground leaves out the cell's rim, as the statistics of the methods do.

    Args:
        subjects: the subject of each image.
        images: uint8 (H, W, 3) each.
        reference: the stain reference applied.

    Returns:
        `subjects`, `images`, the per-channel standard deviations across subjects of the
        per-subject mean OD (`od_std_before`, `od_std_after`), their means
        (`spread_before`, `spread_after`) and `reduction` = 1 - after / before (0.5 = the
        spread halved).

    Raises:
        LeukoflowError: when the images come from fewer than two subjects.
    """
    rows = []
    for subject, image in zip(subjects, images, strict=True):
        params = reference["params"]
        fg = foreground_mask(image, params["background_max"])
        mask = interior(fg.reshape(-1), fg.shape, params["edge"])
        before = mean_foreground_od(image, mask)
        after = mean_foreground_od(normalize(image, reference), mask)
        rows.append([subject, *before, *after])
    columns = ["subject", "b0", "b1", "b2", "a0", "a1", "a2"]
    per_subject = pd.DataFrame(rows, columns=columns).groupby("subject").mean()
    if len(per_subject) < 2:
        raise LeukoflowError("the stain spread needs images of at least two subjects")
    std = per_subject.std(ddof=1)
    before, after = std[["b0", "b1", "b2"]].to_numpy(), std[["a0", "a1", "a2"]].to_numpy()
    return {
        "subjects": len(per_subject),
        "images": len(rows),
        "od_std_before": before.round(5).tolist(),
        "od_std_after": after.round(5).tolist(),
        "spread_before": round(float(before.mean()), 5),
        "spread_after": round(float(after.mean()), 5),
        "reduction": round(float(1 - after.mean() / before.mean()), 4),
    }


def example_figure(
    subjects: Sequence[str],
    images: Sequence[np.ndarray],
    reference: dict,
    path: str | Path,
    cells: int = 4,
) -> None:
    """Save a before/after PNG of up to `cells` images of different subjects, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leukoflow.core.atomic import atomic_path

    chosen, seen = [], set()
    for subject, image in zip(subjects, images, strict=True):
        if subject not in seen:
            seen.add(subject)
            chosen.append((subject, image))
        if len(chosen) == cells:
            break
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.2 * len(chosen), 4.6), squeeze=False)
    for column, (subject, image) in enumerate(chosen):
        for row, (shown, label) in enumerate(
            [(image, "before"), (normalize(image, reference), reference["method"])]
        ):
            axes[row, column].imshow(shown)
            axes[row, column].set_title(f"{subject}: {label}", fontsize=8)
            axes[row, column].axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def build_reference(
    split: pd.DataFrame,
    dataset: str | Path,
    split_id: str,
    method: str,
    images: int = 200,
    image: str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    spread_path: str | Path | None = None,
    examples_path: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[dict, dict]:
    """Fit a reference on the training subset of `split_id` and write its three outputs.

    Fits on a sample of `images` training images (or on the one dataset image `image`),
    then measures the stain spread on that sample plus a sample of the other subsets
    (applied only).

    Args:
        split: the split table (`leukoflow.data.split`).
        dataset: the dataset folder the split's paths start from.
        split_id: `main` or `fold{k}`.
        method: one of `leukoflow.stain.normalize.METHODS`.
        images: training images sampled (and as many of the other subsets).
        image: fit on this one image instead (path relative to `dataset`); None: the sample.
        seed: seed of the samples.
        out: the reference JSON to write; None: not written.
        spread_path: the spread JSON (`stain_spread`) to write; None: not written.
        examples_path: the before/after PNG to write; None: not written.
        max_pixels: the largest image read (`leukoflow.data.images`); ingest's limit.

    Returns:
        (reference, spread).

    Raises:
        LeukoflowError: for an unknown split id, an empty training subset, a reference
            that cannot be fitted (every image degenerate), or a sample of fewer than two
            subjects.
        BadImageError: naming an image that cannot be read as RGB.
    """
    from leukoflow.data.split import subset_rows

    train = subset_rows(split, split_id, "train")
    if train.empty:
        raise LeukoflowError(f"split {split_id}: the training subset is empty")
    train_sample = sample_rows(train, images, seed)
    train_images = _read_rows(train_sample, dataset, max_pixels)
    if image:
        fit_images = _read_rows(pd.DataFrame({"path": [image]}), dataset, max_pixels)
    else:
        fit_images = train_images
    reference = fit_reference(fit_images, method)
    reference["fitted_on"] = {"split": split_id, "image": image or None, "seed": seed}
    log.info(
        "%s reference fitted on %s: %d images (%d degenerate skipped)",
        method,
        image or f"a sample of the {len(train)} training images",
        reference["images"],
        reference["skipped"],
    )
    others = split.drop(index=train.index)
    other_sample = sample_rows(others, images, seed + 1)
    subjects = list(train_sample["subject"]) + list(other_sample["subject"])
    other_images = _read_rows(other_sample, dataset, max_pixels)
    spread = stain_spread(subjects, train_images + other_images, reference)
    log.info(
        "between-subject spread of mean foreground OD: %.4f before, %.4f after (%.0f%% less)",
        spread["spread_before"],
        spread["spread_after"],
        100 * spread["reduction"],
    )
    if out:
        save_reference(reference, out)
    if spread_path:
        write_text(spread_path, json.dumps(spread, indent=2) + "\n")
    if examples_path:
        example_figure(list(train_sample["subject"]), train_images, reference, examples_path)
    return reference, spread
