"""Benchmark of `leukoflow predict`: end-to-end throughput against the bare model and a naive loop.

On synthetic 450x450 BMP cells, for each architecture (random weights, `weights="none"`):
- bare model: the compiled inference function on the already prepared arrays, batches of 32
  (the ceiling: the model's own compute);
- predict: `iter_predictions` from the files (read, stain, resize in workers, model in the
  main thread), the same compiled function, already traced;
- naive (SimpleNet): read, prepare and one `model.predict` call per image, in one thread.
"""

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_ARCHS = (("SimpleNet", 128), ("EfficientNetB5", 456))


def write_synthetic_cells(folder, n, size=450, seed=0, per_subject=50):
    """Write `n` synthetic cell BMPs (size x size) into `folder`; returns their paths."""
    from leukoflow.synth import render_cell, subject_style

    rng = np.random.default_rng(seed)
    paths, style = [], None
    for i in range(n):
        if i % per_subject == 0:
            style = subject_style(rng)
        label = "all" if rng.random() < 0.68 else "hem"
        path = Path(folder) / f"cell_{i:05d}.bmp"
        Image.fromarray(render_cell(rng, label, style, size)).save(path)
        paths.append(path)
    return paths


def make_bundle(arch, size, reference, out_dir, seed=0):
    """A bundle of a randomly initialised `arch` at `size` px in `out_dir`; the loaded Bundle."""
    import keras

    from leukoflow.bundle import load_bundle, write_bundle
    from leukoflow.models import build_model

    keras.utils.set_random_seed(seed)
    out_dir = Path(out_dir)
    work = out_dir.parent / f"{out_dir.name}.src"
    work.mkdir(parents=True, exist_ok=True)
    build_model(arch, size, weights="none").save(work / "model.keras")
    (work / "metrics.json").write_text(json.dumps({"threshold": 0.5, "test": {}}))
    (work / "reference.json").write_text(json.dumps(reference))
    settings = {"architecture": arch, "input_size": size, "jit_compile": "auto"}
    write_bundle(
        work / "model.keras",
        work / "metrics.json",
        work / "reference.json",
        settings,
        "benchmark",
        out_dir,
    )
    return load_bundle(out_dir)


def _timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_architecture(arch, size, files, reference, folder, batch_size=32, workers=None,
                       naive=False):
    """The figures of one architecture over `files`; a dict (images/s and ratios)."""
    from leukoflow.predict import iter_predictions, make_predict_fn, predict_arrays, prepare_batch

    bundle = make_bundle(arch, size, reference, Path(folder) / arch)
    predict_fn = make_predict_fn(bundle)
    prep_s, (images, errors) = _timed(lambda: prepare_batch(files, bundle.reference, size))
    assert not any(errors), errors
    predict_arrays(predict_fn, images[:batch_size], batch_size)  # trace the one batch shape
    n = len(files)

    def bare():
        return np.concatenate(
            [
                predict_arrays(predict_fn, images[i : i + batch_size], batch_size)
                for i in range(0, n, batch_size)
            ]
        )

    bare_s, bare_p = _timed(bare)
    e2e_s, rows = _timed(
        lambda: list(
            iter_predictions(
                bundle, files, batch_size, workers=workers, progress=False, predict_fn=predict_fn
            )
        )
    )
    e2e_p = np.array([row.probability for row in rows], np.float32)
    result = {
        "architecture": arch,
        "input_size": size,
        "images": n,
        "prepare_ms_per_image_1_thread": 1000 * prep_s / n,
        "bare_model_images_per_s": n / bare_s,
        "predict_images_per_s": n / e2e_s,
        "predict_vs_bare": bare_s / e2e_s,
        "max_abs_diff_vs_bare": float(np.abs(e2e_p - bare_p).max()),
    }
    if naive:
        from leukoflow.images import read_rgb
        from leukoflow.shards import prepare_image

        model = bundle.model
        model.predict(images[:1].astype(np.float32), verbose=0)

        def loop():
            for path in files:
                x = prepare_image(read_rgb(path), bundle.reference, size)
                model.predict(x[None].astype(np.float32), verbose=0)

        naive_s, _ = _timed(loop)
        result["naive_images_per_s"] = n / naive_s
        result["predict_vs_naive"] = naive_s / e2e_s
    return result


def format_table(results):
    """The benchmark's figures as a text table."""
    lines = [
        f"{'architecture':<16}{'px':>5}{'bare img/s':>12}{'predict img/s':>15}"
        f"{'pred/bare':>11}{'naive img/s':>13}{'pred/naive':>12}{'prep ms/img':>13}"
    ]
    for r in results:
        naive = r.get("naive_images_per_s")
        lines.append(
            f"{r['architecture']:<16}{r['input_size']:>5}{r['bare_model_images_per_s']:>12.1f}"
            f"{r['predict_images_per_s']:>15.1f}{r['predict_vs_bare']:>10.0%} "
            + (f"{naive:>12.1f}{r['predict_vs_naive']:>11.1f}x" if naive else f"{'-':>12}{'-':>12}")
            + f"{r['prepare_ms_per_image_1_thread']:>13.1f}"
        )
    return "\n".join(lines)


def bench_predict(n_images=500, archs=DEFAULT_ARCHS, naive_archs=("SimpleNet",), batch_size=32,
                  workers=None, seed=0):
    """Run the predict benchmark on `n_images` synthetic cells; print a table, return a dict.

    The dict: `images`, `results` (one dict per architecture: bare model, predict and naive
    images/s, the ratios `predict_vs_bare` and `predict_vs_naive`, single-thread preparation
    ms/image, and the largest difference between predict's and the bare model's probabilities).
    """
    from leukoflow.images import read_rgb
    from leukoflow.stain import fit_reference

    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-predict-") as folder:
        cells = Path(folder) / "cells"
        cells.mkdir()
        files = write_synthetic_cells(cells, n_images, seed=seed)
        reference = fit_reference((read_rgb(p) for p in files[:50]), "macenko")
        results = [
            bench_architecture(
                arch, size, files, reference, folder, batch_size, workers, arch in naive_archs
            )
            for arch, size in archs
        ]
    print(format_table(results))
    return {"images": n_images, "batch_size": batch_size, "results": results}
