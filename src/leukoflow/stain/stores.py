"""Image stores: one uint8 array (N, size, size, 3) per split subset and input size, plus index.

`prepare_image` turns a raw cell image into what a model sees (a square frame centred on
the cell, resized with antialiasing, stain-normalised); the stores and `leukoflow predict`
both call it. A store is an `np.lib.format` `.npy` file streamed into through a memory map
(never the whole set in memory), built over worker processes, written under a temporary
name and renamed; its index `<stem>.csv` maps rows to dataset images.
"""

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from leukoflow.core.atomic import atomic_path
from leukoflow.core.diskspace import require_space, store_bytes
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.images import DEFAULT_MAX_PIXELS, open_rgb
from leukoflow.stain.normalize import BACKGROUND_MAX, foreground_mask, normalize_with_status

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["row", "path", "label", "subject", "fold", "sha256", "y"]
MARGIN = 0.05  # of the cell's larger side, on each side of the crop
STAIN_SIDE = 96  # smallest side normalised: smaller cells have too few pixels for a fit
FLUSH_ROWS = 512  # rows written between re-mappings of the store (bounds resident memory)


def square_crop(
    image: np.ndarray, margin: float = MARGIN, background_max: int = BACKGROUND_MAX
) -> np.ndarray:
    """The square frame centred on the cell: the image's shorter side, or larger if needed.

    Keeping the frame rather than cropping to the cell keeps the cell's size, which tells
    blasts (larger) from normal cells. An image without foreground is padded to a square.

    Args:
        image: uint8 (H, W, 3), a cell on a black background.
        margin: space left on each side of the cell, as a share of its larger side.
        background_max: a pixel whose channels are all at most this is background.

    Returns:
        uint8 (S, S, 3) with S = max(min(H, W), the cell's larger side plus `margin` of
        it on each side): the cell centred, black where the square leaves the image.
    """
    mask = foreground_mask(image, background_max)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    else:
        top, bottom, left, right = 0, image.shape[0], 0, image.shape[1]
    extent = max(bottom - top, right - left)
    side = max(min(image.shape[:2]), int(round(extent * (1 + 2 * margin)))) if rows.size else extent
    y0 = (top + bottom - side) // 2
    x0 = (left + right - side) // 2
    out = np.zeros((side, side, 3), dtype=np.uint8)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, image.shape[0]), min(x0 + side, image.shape[1])
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 image (S, S, 3) to (size, size, 3), Lanczos (antialiased)."""
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def shrink(image: Image.Image, size: int) -> Image.Image:
    """A PIL image box-averaged by the largest whole factor that keeps its shorter side >= size.

    The cheap first step of downscaling (`Image.reduce`); `resize_square` does the rest.
    """
    factor = min(image.size) // size
    return image.reduce(factor) if factor > 1 else image


def _prepare(image, reference, size):
    """`prepare_image` that also returns the stain fallback reason (None if none)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    side = max(size, STAIN_SIDE)
    background_max = reference["params"]["background_max"]
    crop = square_crop(np.asarray(shrink(image, side)), background_max=background_max)
    normalised, reason = normalize_with_status(resize_square(crop, side), reference)
    return resize_square(normalised, size), reason


def prepare_image(image: Image.Image | np.ndarray, reference: dict, size: int) -> np.ndarray:
    """Turn a raw cell image into the model's input (what the stores and predict both do).

    Shrunk by a whole factor towards `size` (`shrink`), framed by `square_crop` (aspect
    ratio and cell size kept, cell centred, black padding), resized with Lanczos, then
    stain-normalised with `reference`. Normalising after resizing costs (size / side)^2 of
    normalising the full image: 10x less at 128 px. Below `STAIN_SIDE` px the
    normalisation runs at that size and a last resize follows. A degenerate image keeps
    its own stain (see `leukoflow.stain.normalize`).

    Args:
        image: a PIL RGB image, or uint8 (H, W, 3).
        reference: a stain reference (`leukoflow.stain.normalize.load_reference`).
        size: side of the output, pixels.

    Returns:
        uint8 (size, size, 3).
    """
    return _prepare(image, reference, size)[0]


_WORKER = {}


def _set_job(dataset, reference, size, max_pixels):
    """Keep the job's constants where `_work` finds them."""
    _WORKER.update(dataset=Path(dataset), reference=reference, size=size, max_pixels=max_pixels)


def _init_worker(dataset, reference, size, max_pixels):
    """Pool initializer: the job's constants, and one BLAS thread per worker process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _set_job(dataset, reference, size, max_pixels)


def _work(task):
    """(row, relative path) -> (row, uint8 (size, size, 3) or None, fallback reason or error)."""
    row, rel = task
    try:
        image = open_rgb(_WORKER["dataset"] / rel, _WORKER["max_pixels"])
    except LeukoflowError as error:  # re-raised by the parent; exceptions with args pickle badly
        return row, None, str(error)
    array, reason = _prepare(image, _WORKER["reference"], _WORKER["size"])
    return row, array, reason


def _results(tasks, dataset, reference, size, threads, max_pixels):
    """Yield `_work` results in task order, in this process or over `threads` processes."""
    if threads <= 1 or len(tasks) < 2:
        _set_job(dataset, reference, size, max_pixels)
        yield from map(_work, tasks)
        return
    context = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(tasks) // (threads * 4)))
    with context.Pool(threads, _init_worker, (str(dataset), reference, size, max_pixels)) as pool:
        yield from pool.imap(_work, tasks, chunksize=chunk)


def store_index_path(npy_path: str | Path) -> Path:
    """The index CSV of a store: same folder and stem, `.csv`."""
    return Path(npy_path).with_suffix(".csv")


def check_index_path(npy_path: str | Path, index_path: str | Path) -> None:
    """Check that `index_path` is where a store's index lives: the `.csv` beside its `.npy`.

    Args:
        npy_path: the store.
        index_path: the index path a caller was given.

    Raises:
        LeukoflowError: naming both paths when it is not.
    """
    expected = store_index_path(npy_path)
    if Path(index_path) != expected:
        raise LeukoflowError(
            f"the index of store {npy_path} is {expected} (same folder and name, .csv); "
            f"got {index_path}"
        )


def make_index(rows: pd.DataFrame) -> pd.DataFrame:
    """The index of a store built from split rows (in that order): `INDEX_COLUMNS`.

    `row` numbers the store's images from 0 and `y` is 1 for `all`, 0 for `hem`.
    """
    index = rows[["path", "label", "subject", "fold", "sha256"]].reset_index(drop=True)
    index.insert(0, "row", np.arange(len(index)))
    index["y"] = (index["label"] == "all").astype(int)
    return index[INDEX_COLUMNS]


def build_store(
    rows: pd.DataFrame,
    dataset: str | Path,
    reference: dict,
    size: int,
    npy_path: str | Path,
    threads: int = 1,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> int:
    """Write the store of `rows` (split rows) at `size` px: `npy_path` and its index CSV.

    Each image goes through `prepare_image`. A failure leaves neither file (nor a stale
    temporary one). `threads` > 1 uses spawned worker processes, so a script that calls
    this needs the `if __name__ == "__main__":` guard.

    Args:
        rows: split rows (`path` relative to `dataset`, `label`, `subject`, `fold`,
            `sha256`), in store order.
        dataset: the dataset folder.
        reference: the stain reference.
        size: side of the stored images, pixels (at least 8).
        npy_path: the store to write; its index is the `.csv` beside it.
        threads: worker processes.
        progress: show a progress bar.
        max_pixels: the largest image read (`leukoflow.data.images`); ingest's limit.

    Returns:
        The number of images whose stain normalisation fell back (see `leukoflow.stain.normalize`).

    Raises:
        LeukoflowError: for a size below 8, or naming the file when an image cannot be
            read as RGB (it passed ingest, so it changed since).
    """
    if size < 8:
        raise LeukoflowError(f"store size {size} px is too small (at least 8)")
    index = make_index(rows)
    tasks = list(enumerate(index["path"]))
    shape = (len(tasks), size, size, 3)
    require_space(Path(npy_path).parent, store_bytes(len(tasks), size), f"the store {npy_path}")
    fallbacks = 0
    with atomic_path(npy_path) as tmp_npy, atomic_path(store_index_path(npy_path)) as tmp_csv:
        store = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=shape)
        bar = tqdm(
            total=len(tasks),
            desc=f"store {size}px",
            unit="img",
            mininterval=1.0,
            disable=not progress,
        )
        with bar:
            results = _results(tasks, dataset, reference, size, threads, max_pixels)
            for row, array, reason in results:
                if array is None:
                    raise LeukoflowError(
                        f"stores: {reason}; it passed ingest, so the dataset changed since: "
                        "run the workflow again from ingest"
                    )
                store[row] = array
                fallbacks += reason is not None
                bar.update()
                if (row + 1) % FLUSH_ROWS == 0:  # drop the written pages from this process
                    store.flush()
                    del store
                    store = np.lib.format.open_memmap(tmp_npy, mode="r+")
        store.flush()
        del store
        index.to_csv(tmp_csv, index=False)
    if fallbacks:
        log.warning("%d of %d images kept their own stain (degenerate)", fallbacks, len(tasks))
    log.info("wrote %s: %d images at %d px", npy_path, len(tasks), size)
    return fallbacks


def open_store(npy_path: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Open a store read-only.

    Args:
        npy_path: the store's `.npy` file; its index is the `.csv` beside it.

    Returns:
        (images, index): uint8 (N, S, S, 3) memory-mapped, and the index DataFrame.

    Raises:
        LeukoflowError: naming the file when it is missing or unreadable, or when the index
            has no `y` column or not one row per image.
    """
    npy_path = Path(npy_path)
    try:
        images = np.load(npy_path, mmap_mode="r")
        index = pd.read_csv(
            store_index_path(npy_path),
            dtype={"path": str, "label": str, "subject": str, "fold": str},
        )
    except (OSError, ValueError) as error:
        raise LeukoflowError(f"{npy_path}: cannot open store ({error})") from None
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(index):
        raise LeukoflowError(
            f"{npy_path}: store {images.dtype} {images.shape} does not match its index "
            f"({len(index)} rows)"
        )
    if "y" not in index.columns:
        raise LeukoflowError(f"{store_index_path(npy_path)}: the index has no `y` column")
    return images, index
