"""Samples of synthetic cells for benchmarks and tests: arrays, BMP files, or an image store.

Every function here draws its cells with `cells`, and `cells` with
`leukoflow.data.synth.render.render_cell`: one generator seeded with `seed` draws the subjects'
styles first, then the cells in order, so the same arguments give the same pixels, and the
first k of n cells are the k cells drawn alone (same seed, subjects and labels).
"""

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from leukoflow import CLASS_NAMES
from leukoflow.core.atomic import atomic_path
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.synth.render import render_cell, subject_style


def _checked_labels(n: int, subjects: int, labels: Sequence[int] | None) -> np.ndarray:
    """`labels` as int64 (n,) of 0/1, by default 1, 0, 1, 0, ... (all, hem, ...)."""
    if n < 0 or subjects < 1:
        raise LeukoflowError(f"synthetic cells: n {n} must be >= 0 and subjects {subjects} >= 1")
    if labels is None:
        return (np.arange(n) + 1) % 2
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != n or not np.isin(labels, (0, 1)).all():
        raise LeukoflowError(f"synthetic cells: labels must be {n} values of 0 (hem) or 1 (all)")
    return labels


def _drawn(
    n: int, size: int, seed: int, subjects: int, labels: np.ndarray
) -> Iterator[tuple[np.ndarray, int, int]]:
    """Yield (image, label, subject) for cells 0..n-1, one at a time (see `cells`)."""
    rng = np.random.default_rng(seed)
    styles = [subject_style(rng) for _ in range(subjects)]
    for i in range(n):
        label = int(labels[i])
        yield render_cell(rng, CLASS_NAMES[label], styles[i % subjects], size), label, i % subjects


def cells(
    n: int,
    size: int,
    seed: int = 0,
    subjects: int = 4,
    labels: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw `n` synthetic cells of `size` px from `subjects` subjects' stain and morphology.

    Cell i belongs to subject i % `subjects`. One generator seeded with `seed` draws the
    subjects' styles, then the cells in order.

    Args:
        n: number of cells.
        size: side of each image, px (the renderer is meant for 32 px and more).
        seed: seed of the generator.
        subjects: number of subjects (stain and morphology styles).
        labels: class of each cell, 1 (`all`) or 0 (`hem`); default: 1, 0, 1, 0, ...

    Returns:
        (images, labels, subjects): uint8 (n, size, size, 3) cells on an exactly black
        background; int64 (n,) labels; int64 (n,) subject numbers.

    Raises:
        LeukoflowError: `n` < 0, `subjects` < 1, or `labels` not `n` values of 0 or 1.
    """
    labels = _checked_labels(n, subjects, labels)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, (image, _, _) in enumerate(_drawn(n, size, seed, subjects, labels)):
        images[i] = image
    return images, labels, np.arange(n) % subjects


def write_cells(
    folder: str | Path, n: int, size: int, seed: int = 0, subjects: int = 4
) -> pd.DataFrame:
    """Write the cells of `cells(n, size, seed, subjects)` as 24-bit BMP files.

    Files `folder/cell_00000.bmp`, ... are rendered and written one at a time.

    Args:
        folder: where to write the files (created if missing).
        n, size, seed, subjects: as for `cells` (the labels alternate, all first).

    Returns:
        One row per file: `path` (relative to `folder`), `label` (`all`/`hem`), `subject`
        (its number, as text) and `y` (1 = all).

    Raises:
        LeukoflowError: as `cells`.
    """
    labels = _checked_labels(n, subjects, None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, label, subject) in enumerate(_drawn(n, size, seed, subjects, labels)):
        name = f"cell_{i:05d}.bmp"
        Image.fromarray(image).save(folder / name, format="BMP")
        rows.append((name, CLASS_NAMES[label], str(subject), label))
    return pd.DataFrame(rows, columns=["path", "label", "subject", "y"])


def write_store(folder: str | Path, n: int, size: int, seed: int = 0, stem: str = "train") -> Path:
    """Write the cells of `cells(n, size, seed)` (4 subjects) as an image store.

    The store is `folder/{stem}.npy` (uint8 (n, size, size, 3), filled one cell at a time
    through a memory map) and its index `folder/{stem}.csv` with the stores' columns
    (`leukoflow.stain.stores.INDEX_COLUMNS`): made-up paths `{stem}/cell_00000.bmp`, subjects
    `{stem}0`, `{stem}1`, ... (so stores of different stems share none), fold `0`, and the
    sha256 of each cell's pixels. Both files are written atomically.

    Args:
        folder: the store's folder (created if missing).
        n, size, seed: as for `cells` (the labels alternate, all first).
        stem: the store's name, e.g. `train`, `val`, `test`.

    Returns:
        The path of the `.npy` file.

    Raises:
        LeukoflowError: as `cells`.
    """
    from leukoflow.stain.stores import make_index, store_index_path

    subjects = 4
    labels = _checked_labels(n, subjects, None)
    npy_path = Path(folder) / f"{stem}.npy"
    rows = []
    with atomic_path(npy_path) as tmp_npy, atomic_path(store_index_path(npy_path)) as tmp_csv:
        store = np.lib.format.open_memmap(
            tmp_npy, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
        )
        for i, (image, label, subject) in enumerate(_drawn(n, size, seed, subjects, labels)):
            store[i] = image
            sha256 = hashlib.sha256(image.tobytes()).hexdigest()
            rows.append(
                (f"{stem}/cell_{i:05d}.bmp", CLASS_NAMES[label], f"{stem}{subject}", sha256)
            )
        store.flush()
        del store
        rows = pd.DataFrame(rows, columns=["path", "label", "subject", "sha256"]).assign(fold="0")
        make_index(rows).to_csv(tmp_csv, index=False)
    return npy_path
