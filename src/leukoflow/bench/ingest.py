"""`leukoflow bench ingest`: files/s of the ingest step on synthetic BMPs."""

import os
import tempfile
from pathlib import Path

from leukoflow.bench.common import synthetic_dataset, timed
from leukoflow.core.errors import LeukoflowError


def run(images: int = 600, size: int = 450, threads: int | None = None) -> dict:
    """Files/s of `leukoflow.data.ingest.ingest` (hash, decode, check) on synthetic BMPs.

    Measured with `threads` processes and with one; the files are freshly written, so they
    are read from the page cache.

    Args:
        images: about how many synthetic cells (see `synthetic_dataset`).
        size: their side, px.
        threads: worker processes (default: all cores).

    Returns:
        The figures: `ingest_files_per_s` (and with one process), `ingest_mb_per_s`, the
        number of files, their size and the processes.

    Raises:
        LeukoflowError: ingest did not keep every image.
    """
    from leukoflow.data.ingest import ingest

    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-ingest-") as tmp:
        root = Path(tmp) / "data"
        n = synthetic_dataset(root, images, size, threads)
        megabytes = sum(p.stat().st_size for p in root.rglob("*.bmp")) / 1e6
        seconds = {}
        for workers in (threads, 1):
            seconds[workers], result = timed(ingest, root, threads=workers)
            if len(result.manifest) != n:
                raise LeukoflowError(f"ingest kept {len(result.manifest)} of {n} images")
    return {
        "ingest_files": n,
        "ingest_image_size": size,
        "ingest_processes": threads,
        "ingest_files_per_s": n / seconds[threads],
        "ingest_mb_per_s": megabytes / seconds[threads],
        "ingest_files_per_s_one_process": n / seconds[1],
    }
