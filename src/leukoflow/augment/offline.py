"""Offline augmentation of the training store: class-balanced, deterministic, traceable.

The augmented store (`train_aug.npy` + `train_aug.csv`) has the format of the other stores:
the training images first, unchanged, then augmented copies: `copies_per_image` copies of
every image, then (with balancing) copies of the smaller classes until every class has as
many rows as the largest. A copy's parameters depend only on `(seed, source_row, copy)` and
are recorded in the index (`source_row` and `PARAM_COLUMNS`), so
`regenerate(images[source_row], index_row)` rebuilds any row byte for byte, whatever the
number of threads.

The transformations and their parameters are in `leukoflow.augment.transforms`.
"""

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from leukoflow.augment.transforms import (
    IDENTITY,
    PARAM_COLUMNS,
    STAIN_ALPHAS,
    draw_params,
    regenerate,
)
from leukoflow.core.atomic import atomic_path
from leukoflow.core.diskspace import require_space, store_bytes
from leukoflow.core.errors import ConfigError, LeukoflowError
from leukoflow.stain.stores import open_store

log = logging.getLogger(__name__)

TRAIN_STEM = "train"  # the stores rule names the training store `train.npy`
HELD_OUT_STEMS = ("val", "test")  # the stores of held-out subsets, beside the training store
CHUNK_ROWS = 32
ROWS_PER_PROCESS = 256  # fewer augmented rows per process than this: fewer processes
EXAMPLE_GRID = 3  # the examples figure: 3 x 3 = the source and 8 augmentations


def plan_rows(labels, copies_per_image, balance, seed):
    """Which training row and copy number each output row comes from.

    labels: int (N,), the class of every training row. Returns (source_row, copy), int64
    arrays of the output length: rows 0..N-1 are the originals (copy 0); then copies 1..K
    of every row; then, with `balance`, each smaller class is topped up to the largest one's
    count: whole rounds over its rows (each round a new copy number), then a seeded random
    subset of its rows without replacement.
    """
    labels = np.asarray(labels)
    n = labels.size
    rows = np.arange(n, dtype=np.int64)
    sources = [np.tile(rows, copies_per_image + 1)]
    copies = [np.repeat(np.arange(copies_per_image + 1, dtype=np.int64), n)]
    if balance:
        classes, counts = np.unique(labels, return_counts=True)
        target = counts.max()
        for label, count in zip(classes, counts, strict=True):
            members = rows[labels == label]
            rounds, rest = divmod(int(target - count) * (copies_per_image + 1), int(count))
            for r in range(rounds):
                sources.append(members)
                copies.append(np.full(count, copies_per_image + 1 + r, dtype=np.int64))
            if rest:
                rng = np.random.default_rng([seed, 1, int(label)])
                sources.append(np.sort(rng.choice(members, rest, replace=False)))
                copies.append(np.full(rest, copies_per_image + 1 + rounds, dtype=np.int64))
    return np.concatenate(sources), np.concatenate(copies)


def check_training_store(npy_path, index, subject_disjoint=True):
    """Raise LeukoflowError unless `npy_path` is a training store that shares nothing with
    the held-out stores.

    Checks: the file is named `train.npy` (what the stores rule writes for the training
    subset); the index is not already augmented (no `source_row`); a `subset` column, if
    any, says `train` on every row; and the `val`/`test` stores beside it, where present,
    share no image path and, with `subject_disjoint` (all but the ablation's image-level
    random split), no subject with it.
    """
    npy_path = Path(npy_path)
    if npy_path.stem != TRAIN_STEM:
        raise LeukoflowError(
            f"{npy_path}: only the training store ({TRAIN_STEM}.npy) may be augmented; "
            f"{npy_path.name} is not one"
        )
    if "source_row" in index.columns:
        raise LeukoflowError(f"{npy_path}: the index has `source_row`: already augmented")
    missing = {"path", "subject", "y"} - set(index.columns)
    if missing:
        raise LeukoflowError(f"{npy_path.with_suffix('.csv')}: missing columns {sorted(missing)}")
    if "subset" in index.columns and (index["subset"] != TRAIN_STEM).any():
        bad = index.loc[index["subset"] != TRAIN_STEM, "subset"].unique()
        raise LeukoflowError(
            f"{npy_path.with_suffix('.csv')}: rows of subset(s) {sorted(map(str, bad))} "
            "in the training store"
        )
    for stem in HELD_OUT_STEMS:
        held_out_csv = npy_path.with_name(f"{stem}.csv")
        if not held_out_csv.is_file():
            continue
        held_out = pd.read_csv(held_out_csv, dtype=str)
        if not {"path", "subject"} <= set(held_out.columns):
            raise LeukoflowError(f"{held_out_csv}: store index without path/subject columns")
        for column in ("path", "subject") if subject_disjoint else ("path",):
            shared = set(index[column].astype(str)) & set(held_out[column])
            if shared:
                raise LeukoflowError(
                    f"{npy_path}: {len(shared)} {column}(s) also in the {stem} store "
                    f"{held_out_csv} (e.g. {sorted(shared)[0]!r}); the split leaks"
                )


def augment_index(index, source_row, copy, spec, seed):
    """The augmented store's index: source rows' columns, new `row`, `source_row`, `copy_index`,
    and one column per transformation parameter (identity values for the originals)."""
    out = index.iloc[source_row].reset_index(drop=True)
    out["row"] = np.arange(len(out), dtype=np.int64)
    out["source_row"] = source_row
    out["copy_index"] = copy
    params = [
        IDENTITY if c == 0 else draw_params(seed, int(s), int(c), spec)
        for s, c in zip(source_row, copy, strict=True)
    ]
    table = pd.DataFrame(params, columns=list(PARAM_COLUMNS))
    return pd.concat([out, table], axis=1)


def _fill(train_npy, out_npy, rows, sources, params):
    """Write `out[row] = regenerate(train[source], params)` for each row; returns the count.

    Both files are memory-mapped for this call only, so no process keeps the pages of
    the whole store resident.
    """
    images = np.load(train_npy, mmap_mode="r")
    out = np.load(out_npy, mmap_mode="r+")
    for row, source, row_params in zip(rows, sources, params, strict=True):
        out[row] = regenerate(images[source], row_params)
    out.flush()
    return len(rows)


def _fill_rows(train_npy, out_npy, index, start, threads):
    """Compute rows `start:` of the store `out_npy` from `index`, with a progress bar.

    Up to `threads` worker processes (spawned, so safe beside TensorFlow's threads), one
    per ROWS_PER_PROCESS rows at least, each writing disjoint chunks of rows into the file;
    one process: in this process.
    """
    processes = min(threads, max(1, (len(index) - start) // ROWS_PER_PROCESS))
    sources = index["source_row"].to_numpy()
    params = index[list(PARAM_COLUMNS)].to_dict("records")
    bounds = [(a, min(a + CHUNK_ROWS, len(index))) for a in range(start, len(index), CHUNK_ROWS)]
    chunks = [(train_npy, out_npy, range(a, b), sources[a:b], params[a:b]) for a, b in bounds]
    log.info("augmenting %d rows in %d process(es)", len(index) - start, processes)
    with tqdm(total=len(index) - start, desc="augment", unit="img", mininterval=1) as bar:
        if processes == 1:
            for chunk in chunks:
                bar.update(_fill(*chunk))
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            for future in as_completed([pool.submit(_fill, *chunk) for chunk in chunks]):
                bar.update(future.result())


def _copy_rows(images, out_npy, block=512):
    """Copy `images` into the first rows of the store `out_npy`, one mapping per block."""
    for start in range(0, len(images), block):
        stop = min(start + block, len(images))
        out = np.load(out_npy, mmap_mode="r+")
        out[start:stop] = images[start:stop]
        out.flush()
        del out


def augment_store(
    train_npy,
    out_npy,
    spec,
    seed=0,
    balance=True,
    copies_per_image=0,
    threads=1,
    examples=None,
    subject_disjoint=True,
):
    """Write the augmented training store `out_npy` (+ `.csv` index) from `train_npy`.

    Returns the index (DataFrame). Rows are computed in chunks by `threads` processes into a
    preallocated memory-mapped file, renamed into place at the end; the bytes do not depend
    on `threads`. `examples`: optional PNG path for a grid of one cell and 8 augmentations.
    `subject_disjoint=False` lets the held-out stores share subjects with the training
    store (the ablation's image-level random split, leaky on purpose).
    """
    train_npy, out_npy = Path(train_npy), Path(out_npy)
    if seed < 0:
        raise ConfigError(f"augment.seed: {seed} must be >= 0")
    if copies_per_image < 0:
        raise ConfigError(f"augment.copies_per_image: {copies_per_image} must be >= 0")
    if threads < 1:
        raise ConfigError(f"--threads: {threads} must be >= 1")
    if out_npy.suffix != ".npy" or out_npy.resolve() == train_npy.resolve():
        raise LeukoflowError(f"{out_npy}: the output must be a new .npy path")
    images, index = open_store(train_npy)
    if images.shape[-1] != 3:
        raise LeukoflowError(f"{train_npy}: expected RGB images (N, H, W, 3), got {images.shape}")
    check_training_store(train_npy, index, subject_disjoint)
    if len(images) == 0:
        raise LeukoflowError(f"{train_npy}: the training store is empty")
    labels = index["y"].to_numpy()
    if balance and np.unique(labels).size < 2:
        log.warning("%s: one class only, nothing to balance", train_npy)
    source_row, copy = plan_rows(labels, copies_per_image, balance, seed)
    out_index = augment_index(index, source_row, copy, spec, seed)
    n = len(images)
    log.info(
        "%s: %d training images -> %d rows (%d augmented); class counts %s",
        train_npy,
        n,
        len(out_index),
        len(out_index) - n,
        out_index["y"].value_counts().sort_index().to_dict(),
    )
    what = f"the augmented store {out_npy}"
    require_space(out_npy.parent, store_bytes(len(out_index), images.shape[1]), what)
    with atomic_path(out_npy) as tmp:
        shape = (len(out_index), *images.shape[1:])
        # header and size now; the rows are written through short-lived mappings
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
        _copy_rows(images, tmp)
        _fill_rows(train_npy, tmp, out_index, n, threads)
        with atomic_path(out_npy.with_suffix(".csv")) as tmp_csv:
            out_index.to_csv(tmp_csv, index=False)
    if examples is not None:
        write_examples(images, index, spec, seed, examples)
    return out_index


def example_source(labels):
    """The row shown in the examples: the first row of the smallest class (the one topped up)."""
    classes, counts = np.unique(labels, return_counts=True)
    return int(np.flatnonzero(labels == classes[np.argmin(counts)])[0])


def write_examples(images, index, spec, seed, path):
    """PNG grid (3 x 3): one training cell and 8 augmentations of it (copies 1..8 of its row,
    as the store draws them)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    row = example_source(index["y"].to_numpy())
    source = np.asarray(images[row])
    figure = Figure(figsize=(7, 7.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(EXAMPLE_GRID, EXAMPLE_GRID)
    axes[0, 0].imshow(source)
    axes[0, 0].set_title(f"source row {row}", fontsize=9)
    for copy, ax in enumerate(axes.flat[1:], start=1):
        params = draw_params(seed, row, copy, spec)
        ax.imshow(regenerate(source, params))
        flips = "".join(f for f, on in (("H", params["flip_h"]), ("V", params["flip_v"])) if on)
        title = (
            f"{params['angle']:.0f}° {flips or '-'} b{params['brightness']:+.2f}"
            f" c{params['contrast']:.2f}"
        )
        if spec.stain_jitter > 0:
            title += "\nHED x" + " ".join(f"{params[k]:.2f}" for k in STAIN_ALPHAS)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    label = index["label"].iloc[row] if "label" in index.columns else index["y"].iloc[row]
    figure.suptitle(
        f"Offline augmentation ({label}): rotation={spec.rotation}, flip={spec.flip}, "
        f"noise std={spec.noise_std:g}, stain jitter={spec.stain_jitter:g}",
        fontsize=10,
    )
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
