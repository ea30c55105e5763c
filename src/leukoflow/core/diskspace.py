"""Room on the disk before a step writes: what it will need against what is free.

The steps that write large files (image stores, the augmented store, training checkpoints)
estimate their bytes first and stop with a message naming the folder, the bytes needed and
the bytes free, instead of failing half way. Atomic writes already keep half-written files
out; this keeps the time a doomed job would spend.
"""

import os
from pathlib import Path

from leukoflow.core.errors import LeukoflowError

NPY_HEADER_BYTES = 128
INDEX_BYTES_PER_ROW = 256  # a generous bound on one row of a store's index CSV
# What one training epoch keeps on disk, in copies of the model's float32 variables: the
# checkpoint's model, best and the optimizer's two AdamW moments, twice while a new
# checkpoint folder replaces the old one, and the final model.keras.
TRAIN_COPIES = 2 * (1 + 1 + 2) + 1


def human_bytes(count: float) -> str:
    """A byte count as text with a binary unit, e.g. '1.5 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: str | Path) -> int:
    """Bytes available to this user on the file system that holds `folder`.

    The folder need not exist yet: its nearest existing parent is asked.
    """
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def require_space(folder: str | Path, needed: int, what: str) -> None:
    """Check that `folder` has room for `needed` bytes.

    Args:
        folder: where the files will be written.
        needed: the estimate of the bytes they take.
        what: what will be written, for the message (e.g. "the store train.npy").

    Raises:
        LeukoflowError: naming the folder, the bytes needed and the bytes free.
    """
    free = free_bytes(folder)
    if needed > free:
        raise LeukoflowError(
            f"not enough disk space for {what} in {Path(folder).absolute()}: it needs about "
            f"{human_bytes(needed)} ({needed} bytes), {human_bytes(free)} ({free} bytes) are "
            "free; free some space there, or run the workflow from a larger disk"
        )


def store_bytes(images: int, size: int) -> int:
    """Bytes of a store of `images` uint8 RGB images of `size` x `size` px, index included."""
    return NPY_HEADER_BYTES + images * (size * size * 3 + INDEX_BYTES_PER_ROW)


def training_bytes(parameters: int) -> int:
    """Bytes a training job keeps on disk at its peak, for a model of `parameters` weights."""
    return TRAIN_COPIES * 4 * parameters
