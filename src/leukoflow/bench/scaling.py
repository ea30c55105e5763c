"""How `leukoflow bench prepare` scales: nested subsets of a dataset's subjects, a fitted line
through the points, and its plot."""

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from leukoflow.core.errors import LeukoflowError


def subject_subset(
    candidates: Iterable[tuple[str, str]], fraction: float, seed: int = 0
) -> set[str]:
    """The first `fraction` (rounded up, at least one) of each class's subjects, in a seeded
    order, so subsets at growing fractions are nested.

    Args:
        candidates: (label, subject) of every image.
        fraction: in (0, 1].
        seed: seed of the order.

    Returns:
        The chosen subjects.
    """
    candidates = list(candidates)
    chosen = set()
    rng = np.random.default_rng(seed)
    for label in sorted({label for label, _ in candidates}):
        subjects = sorted({s for lab, s in candidates if lab == label})
        order = rng.permutation(len(subjects))
        count = max(1, int(np.ceil(fraction * len(subjects) - 1e-9)))
        chosen.update(subjects[i] for i in order[:count])
    return chosen


def link_subset(
    dataset: str | Path, dest: str | Path, fraction: float, seed: int = 0
) -> tuple[int, int]:
    """Hard-link the training images of a `subject_subset` of `dataset` into `dest`.

    Same layout; symbolic links where `dest` is on another file system. Only the training
    folders are used (the preliminary-test set has no subject in its file names).

    Args:
        dataset: a folder of the C-NMC layout.
        dest: the subset's folder.
        fraction: of each class's subjects.
        seed: seed of the subjects' order.

    Returns:
        (images linked, subjects chosen).

    Raises:
        LeukoflowError: `dataset` has no training image of the C-NMC layout.
    """
    from leukoflow.data.ingest import find_candidates

    candidates = [
        c
        for c in find_candidates(dataset)[0]
        if c.subject and c.path.startswith("training_data/") and not c.problem
    ]
    if not candidates:
        raise LeukoflowError(f"{dataset}: no training images of the C-NMC layout")
    subjects = subject_subset([(c.label, c.subject) for c in candidates], fraction, seed)
    images = 0
    for c in candidates:
        if c.subject in subjects:
            target = Path(dest) / c.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(Path(dataset) / c.path, target)
            except OSError:  # another file system
                os.symlink((Path(dataset) / c.path).resolve(), target)
            images += 1
    return images, len(subjects)


def linear_fit(images: Sequence[float], seconds: Sequence[float]) -> dict:
    """Least-squares line seconds = intercept + slope x images.

    Returns:
        {"slope_ms_per_image", "intercept_s", "r2", "deviation": the relative deviation of
        every point from the line}.
    """
    x, y = np.asarray(images, float), np.asarray(seconds, float)
    slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (y[0] / x[0], 0.0)
    fitted = intercept + slope * x
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum((y - fitted) ** 2) / total if total > 0 else 1.0
    return {
        "slope_ms_per_image": 1000 * float(slope),
        "intercept_s": float(intercept),
        "r2": float(r2),
        "deviation": [float(d) for d in (y - fitted) / fitted],
    }


def plot_scaling(
    points: Sequence[dict],
    fits: Mapping[str, dict],
    groups: Mapping[str, Sequence[str]],
    path: str | Path,
) -> None:
    """Plot wall time (left) and CPU time (right) against images, as a PNG.

    Args:
        points: one preparation each: {"images", "steps": {step: {"s", "cpu_s", ...}}}.
        fits: {"s": the wall-time fit, "cpu_s": the CPU-time fit} (`linear_fit`).
        groups: {legend label: the steps summed into one line}.
        path: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leukoflow.core.atomic import atomic_path

    images = np.array([p["images"] for p in points])
    line = np.linspace(0, images.max() * 1.05, 50)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (key, fit), title in zip(axes, fits.items(), ("wall time", "CPU time")):
        total = [sum(p["steps"][n][key] for n in p["steps"]) for p in points]
        ax.plot(images, total, "o", color="black", label="total")
        ax.plot(
            line,
            fit["intercept_s"] + fit["slope_ms_per_image"] / 1000 * line,
            "-",
            color="black",
            lw=1,
            label=f"fit: {fit['intercept_s']:.1f} s + {fit['slope_ms_per_image']:.2f} ms/image"
            f" (R² {fit['r2']:.3f})",
        )
        for label, names in groups.items():
            values = [sum(p["steps"][n][key] for n in names) for p in points]
            ax.plot(images, values, ".--", lw=1, label=label)
        ax.set_xlabel("images")
        ax.set_ylabel(f"{title}, s")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_title(f"Data preparation, {title}")
        ax.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
