"""`leukoflow bench augment`: offline augmentation images/s, all cores against one."""

import os
import resource
import tempfile
from pathlib import Path

from leukoflow.bench.common import cpu_seconds, timed

TARGET_IMAGES_PER_S = 300  # the target: 224 px on 2 cores


def timed_augment(n: int, size: int, threads: int, seed: int = 0) -> tuple[float, float]:
    """Augment a store of `n` synthetic cells at `size` px, one copy each, end to end.

    All transformations on (config defaults); the store and index are written and the
    workers' start-up is included.

    Args:
        n: cells in the training store.
        size: their side, px.
        threads: worker processes.
        seed: seed of the cells and of the augmentation.

    Returns:
        (wall seconds, CPU seconds of this process and its workers).
    """
    from leukoflow.augment.offline import augment_store
    from leukoflow.augment.transforms import AugmentSpec
    from leukoflow.data.synth import write_store

    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-augment-") as folder:
        store = write_store(folder, n, size, seed=seed)
        whos = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        cpu = cpu_seconds(*whos)
        wall, _ = timed(
            augment_store,
            store,
            Path(folder) / "train_aug.npy",
            AugmentSpec(),
            seed=seed,
            balance=False,
            copies_per_image=1,
            threads=threads,
        )
        return wall, cpu_seconds(*whos) - cpu


def run(images: int = 1000, size: int = 224, threads: int | None = None) -> dict:
    """Augmented images/s with `threads` processes and with one, their ratio, and the CPU
    time per image (what a busy machine cannot distort), beside the issue's target.

    Args:
        images: synthetic cells, one augmented copy each.
        size: their side, px.
        threads: worker processes (default: all cores).

    Returns:
        The figures: `augment_images_per_s` (and with one process), the speed-up,
        `augment_cpu_ms_per_image` (and with one process), the target and the settings.
    """
    threads = threads or os.cpu_count() or 1
    wall, cpu = timed_augment(images, size, threads)
    wall_one, cpu_one = timed_augment(images, size, 1)
    return {
        "augment_images": images,
        "augment_size_px": size,
        "augment_processes": threads,
        "augment_images_per_s": images / wall,
        "augment_images_per_s_one_process": images / wall_one,
        "augment_speedup_vs_one_process": wall_one / wall,
        "augment_cpu_ms_per_image": 1000 * cpu / images,
        "augment_cpu_ms_per_image_one_process": 1000 * cpu_one / images,
        "augment_target_images_per_s": TARGET_IMAGES_PER_S,
    }
