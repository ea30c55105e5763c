"""`leukoflow bench stain`: stain normalisation against torchstain, and store throughput.

Everything is measured side by side in one process on synthetic 450 px cells (and, for
agreement and the round trip, scikit-image's bundled immunohistochemistry image):
torchstain's numpy normalisers are the baseline and the oracle. Stain timings use one BLAS
thread. The round trip (`leukoflow.stain.reference.round_trip`) gives, per method and
image, the change of an image normalised to a reference fitted on itself (`self`) and the
larger difference of a uniformly darker or brighter copy from the normalised image
(`exposure`), in grey levels.

The exposure sweep (`leukoflow.stain.reference.exposure_sweep`, exposures 0.60 to 1.00 in
steps of 0.01) gives, per method and group of cells, the largest step between neighbouring
exposures and the largest distance from the normalised cell, each cell normalised to a
reference fitted on its group and to itself: on the real C-NMC 2019 cells found in the
folder `$LEUKOFLOW_REAL_CELLS` names (default `../shared/cnmc` beside the checkout; the
group is left out when there is none), the BCCD white cells of the tests and synthetic
cells, resized to `sweep_size` px.
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from leukoflow.bench.common import ms_per_item, timed
from leukoflow.stain.normalize import fit_reference, normalize
from leukoflow.stain.reference import exposure_sweep, round_trip

REAL_CELLS_VARIABLE = "LEUKOFLOW_REAL_CELLS"
_CHECKOUT = Path(__file__).resolve().parents[3]


def real_cells_folder() -> Path:
    """The folder of real C-NMC cells: `$LEUKOFLOW_REAL_CELLS`, else `../shared/cnmc`
    beside the checkout (it need not exist)."""
    value = os.environ.get(REAL_CELLS_VARIABLE)
    return Path(value) if value else _CHECKOUT.parent / "shared" / "cnmc"


def read_cells(folder: str | Path, pattern: str, size: int | None = None) -> dict:
    """The cells `pattern` matches in `folder`, by file stem, sorted.

    Args:
        folder: where they are.
        pattern: a glob, e.g. `*.bmp`.
        size: resize each to (size, size) with a box filter; None: as they are.

    Returns:
        {stem: uint8 (H, W, 3)}; {} when the folder does not exist.

    Raises:
        BadImageError: naming a file that cannot be read as RGB.
    """
    from PIL import Image

    from leukoflow.data.images import open_rgb

    cells = {}
    for path in sorted(Path(folder).glob(pattern)):
        image = open_rgb(path)
        if size:
            image = image.resize((size, size), Image.Resampling.BOX)
        cells[path.stem] = np.asarray(image)
    return cells


def sweep_groups(size: int = 160) -> dict:
    """The groups of cells the exposure sweep runs on: {group: {name: uint8 image}}.

    `cnmc` (the real C-NMC cells of `real_cells_folder`, resized to `size`; absent when
    there are none), `bccd` (the tests' BCCD white cells as they are) and `synthetic`
    (three of `leukoflow.data.synth`'s cells at `size`).
    """
    from leukoflow.data.synth import cells

    groups = {"cnmc": read_cells(real_cells_folder(), "*.bmp", size)}
    groups["bccd"] = read_cells(_CHECKOUT / "tests" / "data" / "bccd", "*.png")
    pixels = cells(3, size, seed=7, subjects=3)[0]
    groups["synthetic"] = {f"synthetic-{k}": image for k, image in enumerate(pixels)}
    return {group: images for group, images in groups.items() if images}


def _mean_abs_diff(a, b):
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def stain_figures(images: np.ndarray, ihc: np.ndarray, repeats: int = 3) -> dict:
    """Timings (ms per image) and agreement (grey levels) of Macenko and Reinhard.

    Args:
        images: uint8 (n, s, s, 3) cells, n >= 2: the first is the reference, the others
            are normalised and timed.
        ihc: an RGB image for a second agreement check (skimage's immunohistochemistry).
        repeats: timing passes; the best is kept.

    Returns:
        The figures: ms per image of ours and torchstain's (Macenko masked and unmasked,
        Reinhard), the speed-ups, and the mean absolute differences from torchstain.
    """
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
            "torchstain_macenko_ms_per_image": ms_per_item(
                lambda im: oracle.normalize(im, stains=False), targets, repeats
            ),
            "macenko_ms_per_image": ms_per_item(lambda im: normalize(im, masked), targets, repeats),
            "macenko_unmasked_ms_per_image": ms_per_item(
                lambda im: normalize(im, unmasked), targets, repeats
            ),
            "torchstain_reinhard_ms_per_image": ms_per_item(
                reinhard_oracle.normalize, targets, repeats
            ),
            "reinhard_ms_per_image": ms_per_item(
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


def _fit_torchstain(image):
    """`round_trip`'s fit for torchstain's numpy Macenko."""
    import torchstain

    oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    oracle.fit(image)
    return lambda x: oracle.normalize(x, stains=False)[0]


def round_trip_figures(images: dict) -> dict:
    """Round-trip figures of Macenko (ours, torchstain's) and Reinhard on named images.

    Args:
        images: name -> uint8 (H, W, 3).

    Returns:
        `round_trip_{method}_{name}_self` and `..._exposure` (the larger of the darker and
        brighter copies' figures), grey levels.
    """
    methods = {"macenko": "macenko", "torchstain_macenko": _fit_torchstain, "reinhard": "reinhard"}
    figures = {}
    for name, image in images.items():
        for label, method in methods.items():
            trip = round_trip(image, method)
            exposure = [v for v in (trip["darker"], trip["brighter"]) if v is not None]
            figures[f"round_trip_{label}_{name}_self"] = trip["self"]
            figures[f"round_trip_{label}_{name}_exposure"] = max(exposure)
    return figures


def _torchstain(method):
    """A fit (images -> normaliser uint8 -> uint8) of torchstain's numpy `method`, on the
    images side by side (torchstain fits one image)."""
    import torchstain

    def fit(images):
        height = max(image.shape[0] for image in images)
        pad = [((0, height - image.shape[0]), (0, 0), (0, 0)) for image in images]
        mosaic = np.concatenate([np.pad(im, p) for im, p in zip(images, pad, strict=True)], 1)
        if method == "macenko":
            oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
            oracle.fit(mosaic)
            return lambda x: oracle.normalize(x, stains=False)[0]
        oracle = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
        oracle.fit(mosaic)
        return oracle.normalize

    return fit


def _ours(method):
    """A fit (images -> normaliser uint8 -> uint8) of our mask-aware `method`."""

    def fit(images):
        reference = fit_reference(images, method)
        return lambda x: normalize(x, reference)

    return fit


def sweep_figures(groups: dict) -> dict:
    """The exposure sweep's worst step and distance per method (ours, torchstain's) and group.

    Args:
        groups: {group: {name: uint8 image}} (`sweep_groups`).

    Returns:
        `sweep_{method}_{group}_step` and `..._distance`, grey levels: the worst over the
        group's cells, each normalised to a reference fitted on the group's cells and to
        one fitted on itself; `sweep_{group}_cells`.
    """
    figures = {}
    for group, images in groups.items():
        figures[f"sweep_{group}_cells"] = len(images)
        cells = list(images.values())
        for method in ("macenko", "reinhard"):
            for label, fit in ((method, _ours), (f"torchstain_{method}", _torchstain)):
                trained = fit(method)(cells)
                sweeps = [
                    exposure_sweep(image, normalise)
                    for image in cells
                    for normalise in (trained, fit(method)([image]))
                ]
                figures[f"sweep_{label}_{group}_step"] = max(s["step"] for s in sweeps)
                figures[f"sweep_{label}_{group}_distance"] = max(s["distance"] for s in sweeps)
    return figures


def stores_figures(n: int, image_size: int, store_size: int, threads: int, seed: int = 0) -> dict:
    """Images per second of `build_store` on `n` synthetic BMPs written to a temporary folder.

    Args:
        n: synthetic cells (8 subjects' styles).
        image_size: their side, px.
        store_size: side of the stored images, px.
        threads: store worker processes.
        seed: `seed + 1` seeds the cells.

    Returns:
        The figures: `stores_images_per_s` and the settings.
    """
    from leukoflow.data.images import read_rgb
    from leukoflow.data.synth import write_cells
    from leukoflow.stain.stores import build_store

    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-") as tmp:
        rows = write_cells(Path(tmp) / "cells", n, image_size, seed=seed + 1, subjects=8)
        rows["path"] = "cells/" + rows["path"]
        rows["fold"] = "0"
        rows["sha256"] = [f"{i:064x}" for i in range(n)]
        reference = fit_reference((read_rgb(Path(tmp) / p) for p in rows["path"][:20]), "macenko")
        seconds, _ = timed(
            build_store, rows, tmp, reference, store_size, Path(tmp) / "store.npy", threads, False
        )
    return {
        "stores_images_per_s": n / seconds,
        "stores_images": n,
        "stores_image_size": image_size,
        "stores_store_size": store_size,
        "stores_threads": threads,
    }


def run(
    images: int = 20,
    size: int = 450,
    stores_images: int = 200,
    store_size: int = 224,
    threads: int | None = None,
    repeats: int = 3,
    sweep_size: int = 160,
) -> dict:
    """All figures of `leukoflow bench stain`.

    Args:
        images: synthetic cells timed per method.
        size: their side, px.
        stores_images: images written to a temporary store.
        store_size: side of the stored images, px.
        threads: store worker processes (default: all cores).
        repeats: timing passes (the best is kept).
        sweep_size: side of the real and synthetic cells of the exposure sweep, px; 0: no
            sweep.

    Returns:
        The figures of `stain_figures`, `round_trip_figures`, `sweep_figures` and
        `stores_figures`, with the settings.
    """
    import skimage.data

    from leukoflow.data.synth import cells

    threads = threads or os.cpu_count() or 1
    pixels, _, _ = cells(images + 1, size)
    ihc = skimage.data.immunohistochemistry()
    figures = {"images": images, "image_size": size}
    figures.update(stain_figures(pixels, ihc, repeats))
    figures.update(round_trip_figures({"synthetic": pixels[0], "ihc": ihc}))
    if sweep_size:
        figures["sweep_size"] = sweep_size
        figures.update(sweep_figures(sweep_groups(sweep_size)))
    figures.update(stores_figures(stores_images, size, store_size, threads))
    return figures
