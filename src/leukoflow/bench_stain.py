"""`leukoflow bench stain`: stain normalisation against torchstain, and store throughput.

Everything is measured side by side in one process on synthetic 450 px cells (and, for
agreement, scikit-image's bundled immunohistochemistry image): torchstain's numpy
normalisers are the baseline and the oracle. Stain timings use one BLAS thread.
"""

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from leukoflow.stain import fit_reference, normalize
from leukoflow.stores import build_store
from leukoflow.synth import render_cell, subject_style

log = logging.getLogger(__name__)


def synthetic_cells(n, size, seed=0, subjects=4):
    """`n` synthetic cells uint8 (size, size, 3) on black from `subjects` stain styles."""
    rng = np.random.default_rng(seed)
    styles = [subject_style(rng) for _ in range(subjects)]
    return [render_cell(rng, ("all", "hem")[i % 2], styles[i % subjects], size) for i in range(n)]


def _ms_per_image(function, images, repeats):
    """Best over `repeats` passes of the mean time of `function(image)`, in ms per image."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            function(image)
        best = min(best, (time.perf_counter() - start) / len(images))
    return 1000 * best


def _mean_abs_diff(a, b):
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def stain_figures(images, ihc, repeats=3):
    """Timings (ms per image) and agreement (grey levels) of Macenko and Reinhard."""
    import torchstain
    from threadpoolctl import threadpool_limits

    source, targets = images[0], images[1:]
    oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    oracle.fit(source)
    unmasked = fit_reference([source], "macenko", mask=False)
    masked = fit_reference([source], "macenko")
    oracle_ihc = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    oracle_ihc.fit(ihc)
    reinhard_oracle = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
    reinhard_oracle.fit(source)
    reinhard = fit_reference([source], "reinhard", mask=False)
    with threadpool_limits(1):
        figures = {
            "torchstain_macenko_ms_per_image": _ms_per_image(
                lambda im: oracle.normalize(im, stains=False), targets, repeats
            ),
            "macenko_ms_per_image": _ms_per_image(
                lambda im: normalize(im, masked), targets, repeats
            ),
            "macenko_unmasked_ms_per_image": _ms_per_image(
                lambda im: normalize(im, unmasked), targets, repeats
            ),
            "torchstain_reinhard_ms_per_image": _ms_per_image(
                reinhard_oracle.normalize, targets, repeats
            ),
            "reinhard_ms_per_image": _ms_per_image(
                lambda im: normalize(im, reinhard), targets, repeats
            ),
        }
    figures["speedup_vs_torchstain"] = (
        figures["torchstain_macenko_ms_per_image"] / figures["macenko_ms_per_image"]
    )
    figures["speedup_unmasked_vs_torchstain"] = (
        figures["torchstain_macenko_ms_per_image"] / figures["macenko_unmasked_ms_per_image"]
    )
    figures["mean_abs_diff_vs_torchstain"] = float(
        np.mean(
            [
                _mean_abs_diff(normalize(im, unmasked), oracle.normalize(im, stains=False)[0])
                for im in targets
            ]
        )
    )
    ihc_reference = fit_reference([ihc], "macenko", mask=False)
    figures["mean_abs_diff_vs_torchstain_ihc"] = _mean_abs_diff(
        normalize(ihc, ihc_reference), oracle_ihc.normalize(ihc, stains=False)[0]
    )
    figures["reinhard_mean_abs_diff_vs_torchstain"] = float(
        np.mean(
            [
                _mean_abs_diff(normalize(im, reinhard), reinhard_oracle.normalize(im))
                for im in targets
            ]
        )
    )
    return figures


def stores_figures(n, image_size, store_size, threads, seed=0):
    """Images per second of `build_store` on `n` synthetic BMPs written to a temp folder."""
    images = synthetic_cells(n, image_size, seed=seed + 1, subjects=8)
    reference = fit_reference(images[:20], "macenko")
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-") as tmp:
        rows = []
        for i, image in enumerate(images):
            rel = f"cells/{i:05d}.bmp"
            (Path(tmp) / rel).parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(Path(tmp) / rel)
            label = ("all", "hem")[i % 2]
            rows.append((rel, label, str(i % 8), "0", f"{i:064x}"))
        rows = pd.DataFrame(rows, columns=["path", "label", "subject", "fold", "sha256"])
        start = time.perf_counter()
        build_store(rows, tmp, reference, store_size, Path(tmp) / "store.npy", threads, False)
        seconds = time.perf_counter() - start
    return {
        "stores_images_per_s": n / seconds,
        "stores_images": n,
        "stores_image_size": image_size,
        "stores_store_size": store_size,
        "stores_threads": threads,
    }


def run(images=20, size=450, stores_images=200, store_size=224, threads=None, repeats=3):
    """All figures of `leukoflow bench stain` as a flat dict."""
    import skimage.data

    threads = threads or os.cpu_count() or 1
    cells = synthetic_cells(images + 1, size)
    figures = {"images": images, "image_size": size}
    figures.update(stain_figures(cells, skimage.data.immunohistochemistry(), repeats))
    figures.update(stores_figures(stores_images, size, store_size, threads))
    return figures
