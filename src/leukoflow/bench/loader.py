"""`leukoflow bench loader`: the training loader against a plain copy of the same bytes."""

import tempfile

import numpy as np

from leukoflow.bench.common import timed
from leukoflow.core.errors import LeukoflowError


def memcpy_images_per_s(
    images: np.ndarray, batch_size: int, batches: int, repeats: int = 3
) -> float:
    """The loader's ceiling: images/s of `np.copyto` of contiguous row blocks into one batch.

    Copies `batches` blocks of `batch_size` consecutive rows (wrapping around) into one
    preallocated array: the bytes a loader epoch of `batches` batches delivers.

    Args:
        images: uint8 (N, s, s, 3), N >= batch_size (a memmap is fine).
        batch_size: rows per block.
        batches: blocks per pass.
        repeats: passes; the best is kept.

    Returns:
        Images per second of the best pass.

    Raises:
        LeukoflowError: fewer images than one batch.
    """
    n = len(images)
    if n < batch_size:
        raise LeukoflowError(f"{n} images: fewer than one batch of {batch_size}")
    out = np.empty((batch_size, *images.shape[1:]), dtype=images.dtype)
    starts = (np.arange(batches) * batch_size) % (n - batch_size + 1)

    def one_pass():
        for start in starts:
            np.copyto(out, images[start : start + batch_size])

    best = min(timed(one_pass)[0] for _ in range(repeats))
    return batches * batch_size / best


def run(images: int = 2000, size: int = 224, batch_size: int = 32, repeats: int = 20) -> dict:
    """Training-loader images/s (`TrainBatches`: shuffled rows, prefetch thread) on a store of
    synthetic cells memory-mapped from disk, against `memcpy_images_per_s` of as many images.

    Both read from the page cache: the store is written, then read once, before timing. One
    epoch of each, `repeats` times in turn (so both see the same machine load); the best of
    each is kept (an epoch of the default store takes tens of ms, so a busy machine needs
    many repeats).

    Args:
        images: cells in the temporary store.
        size: their side, px.
        batch_size: images per batch.
        repeats: epochs timed, each against one copy pass.

    Returns:
        The figures: `loader_images_per_s`, `memcpy_images_per_s`, their ratio
        `loader_vs_memcpy`, both in GB/s, and the settings.
    """
    from leukoflow.data.synth import write_store
    from leukoflow.stain.stores import open_store
    from leukoflow.train.loader import TrainBatches, measure_throughput

    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-loader-") as tmp:
        stored, index = open_store(write_store(tmp, images, size))
        batches = TrainBatches(stored, index["y"], batch_size, seed=0)
        memcpy_images_per_s(stored, batch_size, len(batches), repeats=1)  # into the page cache
        rates, ceilings = [], []
        for epoch in range(repeats):
            rates.append(measure_throughput(batches, epoch))
            ceilings.append(memcpy_images_per_s(stored, batch_size, len(batches), repeats=1))
        rate, ceiling = max(rates), max(ceilings)
    megabytes = size * size * 3 / 1e6
    return {
        "loader_images": images,
        "loader_image_size": size,
        "loader_batch_size": batch_size,
        "loader_images_per_s": rate,
        "memcpy_images_per_s": ceiling,
        "loader_vs_memcpy": rate / ceiling,
        "loader_gb_per_s": rate * megabytes / 1000,
        "memcpy_gb_per_s": ceiling * megabytes / 1000,
    }
