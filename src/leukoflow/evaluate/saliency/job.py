"""The `saliency` job: pick test cells, measure every method, write the JSON and the figure."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.atomic import atomic_path, write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.saliency.maps import METHODS
from leukoflow.evaluate.saliency.measures import measure

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def select_cells(index: pd.DataFrame, n_cells: int, seed: int = 0) -> np.ndarray:
    """Store rows of `n_cells` test cells, half of each class where possible, drawn with `seed`.

    Args:
        index: the test store's index (column `y`).
        n_cells: cells to pick.
        seed: seed of the draw.

    Returns:
        The rows, sorted.

    Raises:
        LeukoflowError: when the store has only one class.
    """
    rng = np.random.default_rng(seed)
    y = index["y"].to_numpy()
    if len(np.unique(y)) < 2:
        raise LeukoflowError("the test subset has only one class: saliency needs both")
    per_class = {0: n_cells // 2, 1: n_cells - n_cells // 2}
    chosen = []
    for label, n in per_class.items():
        rows = np.flatnonzero(y == label)
        chosen.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


def saliency_figure(
    images: np.ndarray,
    labels: ArrayLike,
    probabilities: ArrayLike,
    maps: Mapping[str, np.ndarray],
    out: str | Path,
    title: str = "",
) -> None:
    """Fig. 1 of the paper, extended: per cell, image and maps on one row, overlays below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(maps)
    n_cols = 1 + len(methods)
    fig, axes = plt.subplots(
        2 * len(images), n_cols, figsize=(2.1 * n_cols, 4.4 * len(images)), squeeze=False
    )
    for i, (image, label, prob) in enumerate(zip(images, labels, probabilities, strict=True)):
        shown = np.clip(image, 0, 255).astype(np.uint8)
        top, bottom = axes[2 * i], axes[2 * i + 1]
        name = "ALL" if label == 1 else "normal (hem)"
        top[0].imshow(shown)
        top[0].set_title(f"{name}\nP(all) = {prob:.2f}", fontsize=9)
        bottom[0].imshow(shown)
        bottom[0].set_title("image", fontsize=9)
        for j, method in enumerate(methods, start=1):
            m = maps[method][i]
            m = m / m.max() if m.max() > 0 else m
            top[j].imshow(m, cmap="inferno", vmin=0, vmax=1)
            top[j].set_title(method.replace("_", " "), fontsize=9)
            bottom[j].imshow(shown)
            bottom[j].imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            bottom[j].set_title("overlay", fontsize=9)
        for ax in (*top, *bottom):
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_saliency(
    model_path: str | Path,
    test_store: str | Path,
    settings: Mapping,
    saliency_config: Mapping,
    measures_out: str | Path,
    figure_out: str | Path,
) -> dict:
    """The `saliency` job: choose test cells, measure every method, write JSON and figure.

    Args:
        model_path: the trained `model.keras`.
        test_store: the test store (`.npy`, index beside).
        settings: the architecture's merged settings (`architecture`).
        saliency_config: the config's `saliency` block (methods, cells,
            smoothgrad_samples, ig_steps, seed).
        measures_out: the measures JSON to write.
        figure_out: the figure PNG to write.

    Returns:
        The measures dict.

    Raises:
        LeukoflowError: for a missing model or store, a test store with one class, an
            unknown method, or a backend other than TensorFlow or JAX.
    """
    from leukoflow.core.runtime import backend_name
    from leukoflow.models import load_model
    from leukoflow.stain.stores import open_store

    model = load_model(model_path)
    images, index = open_store(test_store)
    seed = int(saliency_config.get("seed", 0))
    methods = tuple(saliency_config.get("methods", METHODS))
    rows = select_cells(index, int(saliency_config.get("cells", 8)), seed)
    cells = np.asarray(images[rows], "float32")
    labels = index["y"].to_numpy(int)[rows]
    maps, measures = measure(
        model,
        cells,
        labels,
        methods=methods,
        samples=int(saliency_config.get("smoothgrad_samples", 16)),
        steps=int(saliency_config.get("ig_steps", 32)),
        seed=seed,
    )
    arch = settings.get("architecture", Path(model_path).parent.name)
    measures.update(
        architecture=arch,
        backend=backend_name(),
        cells=[
            {"row": int(r), "path": str(index["path"].iloc[r]), "label": int(labels[i])}
            for i, r in enumerate(rows)
        ],
        settings={k: saliency_config.get(k) for k in ("smoothgrad_samples", "ig_steps", "seed")},
    )
    write_text(measures_out, json.dumps(measures, indent=2, sort_keys=True) + "\n")
    shown = [int(np.flatnonzero(labels == 0)[0]), int(np.flatnonzero(labels == 1)[0])]
    saliency_figure(
        cells[shown],
        labels[shown],
        np.asarray(measures["probability_all"])[shown],
        {m: maps[m][shown] for m in methods},
        figure_out,
        title=arch,
    )
    for method, result in measures["methods"].items():
        log.info(
            "%s %s: mass in cell %.2f (area %.2f), deletion AUC %.3f (random %.3f), "
            "sanity rho %.2f %s",
            arch,
            method,
            result["mass_in_cell"],
            measures["cell_area"],
            result["deletion_auc"],
            measures["random_deletion_auc"],
            result["sanity_spearman"],
            "pass" if result["sanity_pass"] else "FAIL",
        )
    return measures
