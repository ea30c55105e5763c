"""`leukoflow bench predict`: end-to-end throughput against the bare model and a naive loop.

On synthetic 450x450 BMP cells, for each architecture (random weights, `weights="none"`) and
each engine of its bundle (Keras, and ONNX Runtime on the bundle's model.onnx), in the same
run:
- bare model: the engine's inference function on the already prepared arrays, batches of
  32 (the ceiling: the model's own compute);
- predict: `iter_predictions` from the files (read, resize, stain in workers, model in the
  main thread), the same function, already traced;
- naive (SimpleNet): read, prepare and one `model.predict` call per image, in one thread.
Keras' figures keep their names (`bare_model_images_per_s`, `predict_images_per_s`);
ONNX Runtime's are prefixed `onnx_`.
"""

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from leukoflow.bench.common import timed
from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)

DEFAULT_ARCHS = (("SimpleNet", 128), ("EfficientNetB5", 456))


def make_bundle(arch: str, size: int, reference: dict, out_dir: str | Path, seed: int = 0):
    """Write a bundle of a randomly initialised `arch` at `size` px.

    Args:
        arch: the architecture.
        size: its input side, px.
        reference: the stain reference the bundle carries.
        out_dir: the bundle's folder (its sources go beside it, in `<out_dir>.src`).
        seed: Keras' random seed for the weights.

    Returns:
        The loaded `leukoflow.deploy.bundle.Bundle`.
    """
    import keras

    from leukoflow.deploy.bundle import load_bundle
    from leukoflow.deploy.bundle_write import write_bundle
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


def _measure(measures, n, repeats, chunk):
    """Time the named functions `f(start, stop)` over items [0, n); best seconds, results.

    Rounds (`repeats` of them) of whole passes, one function after the other, the best kept;
    or, when `chunk` < n (a slow model), one pass that alternates the functions every
    `chunk` items and sums their times, so that a shared machine's changing load falls on
    all of them alike.
    """
    seconds = {name: np.inf for name in measures}
    results = {}
    rounds = repeats if chunk >= n else 1
    for _ in range(rounds):
        spent = dict.fromkeys(measures, 0.0)
        parts = {name: [] for name in measures}
        for start in range(0, n, chunk):
            for name, function in measures.items():
                elapsed, part = timed(function, start, min(start + chunk, n))
                spent[name] += elapsed
                parts[name].append(part)
        for name in measures:
            seconds[name] = min(seconds[name], spent[name])
            results[name] = np.concatenate(parts[name])
    return seconds, results


def bench_architecture(
    arch: str,
    size: int,
    files: list[Path],
    reference: dict,
    folder: str | Path,
    batch_size: int = 32,
    workers: int | None = None,
    naive: bool = False,
    repeats: int = 3,
    budget_s: float = 60,
    model_threads: int | None = None,
) -> dict:
    """The figures of one architecture over `files`.

    A model whose bare pass over `files` takes more than `budget_s` is timed in one pass
    that alternates bare model and predict every 4 batches (see `_measure`).

    `ideal_vs_bare` is the best `predict_vs_bare` possible when the bare model already keeps
    every core busy: preparation then has to share the cores, so over n images the wall time
    is at least bare + n x single-thread preparation / cores.

    Args:
        arch: the architecture (random weights).
        size: its input side, px.
        files: the image files.
        reference: the stain reference.
        folder: where its bundle is written.
        batch_size: images per model call.
        workers: preparation threads (default: the cores).
        naive: also time the naive read-prepare-`model.predict` loop.
        repeats: timing rounds, the best kept.
        budget_s: the bare pass above which the model is timed in one alternating pass.
        model_threads: ONNX Runtime's intra-op threads (None: its default).

    Returns:
        images/s of the bare model, of predict (and of the naive loop), their ratios, the
        preparation cost and the largest difference between predict and the bare model;
        the same with an `onnx_` prefix for ONNX Runtime (`onnx_vs_keras_bare`: its bare
        throughput over Keras', `max_abs_diff_onnx_vs_keras`), or `onnx_missing` (why the
        bundle has no ONNX model).

    Raises:
        LeukoflowError: an image could not be prepared.
    """
    from leukoflow.data.images import open_rgb
    from leukoflow.deploy.bundle import onnx_missing
    from leukoflow.deploy.onnx_model import onnx_inference
    from leukoflow.deploy.predict import (
        default_workers,
        iter_predictions,
        make_predict_fns,
        prepare_batch,
    )
    from leukoflow.models.inference import predict_arrays
    from leukoflow.stain.stores import prepare_image

    bundle = make_bundle(arch, size, reference, Path(folder) / arch)
    (keras_fn,) = make_predict_fns(bundle)
    engines = {"": keras_fn}  # Keras' figures keep their unprefixed names
    (member,) = bundle.members
    if member.onnx_file is not None:
        engines["onnx_"] = onnx_inference(member.onnx_file, model_threads)
    prep_s, (images, errors) = timed(lambda: prepare_batch(files, bundle.reference, size))
    if any(errors):
        raise LeukoflowError(f"benchmark images could not be prepared: {set(errors) - {None}}")
    batch_s = 0.0
    for predict_fn in engines.values():
        predict_arrays(predict_fn, images[:batch_size], batch_size)  # trace the batch shape
        batch_s += timed(lambda f=predict_fn: predict_arrays(f, images[:batch_size], batch_size))[0]
    n = len(files)
    slow = batch_s * n / batch_size > budget_s  # one pass of the bare models takes that long
    chunk = 4 * batch_size if slow else n

    def bare(predict_fn):
        def run(start, stop):
            return np.concatenate(
                [
                    predict_arrays(predict_fn, images[i : min(i + batch_size, stop)], batch_size)
                    for i in range(start, stop, batch_size)
                ]
            )

        return run

    def end_to_end(predict_fn):
        def run(start, stop):
            rows = iter_predictions(
                bundle,
                files[start:stop],
                batch_size,
                workers=workers,
                progress=False,
                predict_fns=[predict_fn],
            )
            return np.array([row.probability for row in rows], np.float32)

        return run

    def naive_loop(start, stop):
        probabilities = []
        for path in files[start:stop]:
            x = prepare_image(open_rgb(path), bundle.reference, size)
            probabilities.append(bundle.model.predict(x[None].astype(np.float32), verbose=0)[0, 0])
        return np.array(probabilities, np.float32)

    measures = {}
    for prefix, predict_fn in engines.items():
        measures[f"{prefix}bare"] = bare(predict_fn)
        measures[f"{prefix}predict"] = end_to_end(predict_fn)
    if naive:
        bundle.model.predict(images[:1].astype(np.float32), verbose=0)
        measures["naive"] = naive_loop
    log.info("timing %s at %d px over %d images: %s", arch, size, len(files), ", ".join(measures))
    best, results = _measure(measures, n, repeats, chunk)
    cores = default_workers()
    figures = {
        "architecture": arch,
        "input_size": size,
        "images": n,
        "cores": cores,
        "prepare_ms_per_image_1_thread": 1000 * prep_s / n,
    }
    for prefix in engines:
        bare_s, predict_s = best[f"{prefix}bare"], best[f"{prefix}predict"]
        difference = np.abs(results[f"{prefix}predict"] - results[f"{prefix}bare"]).max()
        figures.update(
            {
                f"{prefix}bare_model_images_per_s": n / bare_s,
                f"{prefix}predict_images_per_s": n / predict_s,
                f"{prefix}predict_vs_bare": bare_s / predict_s,
                f"{prefix}ideal_vs_bare": bare_s / (bare_s + prep_s / cores),
                f"{prefix}max_abs_diff_vs_bare": float(difference),
            }
        )
    if "onnx_" in engines:
        figures["onnx_vs_keras_bare"] = best["bare"] / best["onnx_bare"]
        figures["onnx_vs_keras_predict"] = best["predict"] / best["onnx_predict"]
        difference = np.abs(results["onnx_bare"] - results["bare"]).max()
        figures["max_abs_diff_onnx_vs_keras"] = float(difference)
    else:
        figures["onnx_missing"] = onnx_missing(bundle.meta["members"][0])
    if naive:
        figures["naive_images_per_s"] = n / best["naive"]
        figures["predict_vs_naive"] = best["naive"] / best["predict"]
    return figures


def results_table(results: list[dict]) -> str:
    """The figures of `bench_architecture`, one row per architecture and engine, as text."""
    lines = [
        f"{'architecture':<16}{'engine':>7}{'px':>5}{'bare img/s':>12}{'predict img/s':>15}"
        f"{'pred/bare':>11}{'ideal':>7}{'naive img/s':>13}{'pred/naive':>12}{'prep ms/img':>13}"
    ]
    for r in results:
        naive = r.get("naive_images_per_s")
        for engine, prefix in (("keras", ""), ("onnx", "onnx_")):
            if f"{prefix}bare_model_images_per_s" not in r:
                lines.append(
                    f"{r['architecture']:<16}{engine:>7}  no ONNX model: {r['onnx_missing']}"
                )
                continue
            lines.append(
                f"{r['architecture']:<16}{engine:>7}{r['input_size']:>5}"
                f"{r[f'{prefix}bare_model_images_per_s']:>12.1f}"
                f"{r[f'{prefix}predict_images_per_s']:>15.1f}{r[f'{prefix}predict_vs_bare']:>11.0%}"
                f"{r[f'{prefix}ideal_vs_bare']:>7.0%}"
                + (
                    f"{naive:>13.1f}{r['predict_vs_naive']:>11.1f}x"
                    if naive and not prefix
                    else f"{'-':>13}{'-':>12}"
                )
                + f"{r['prepare_ms_per_image_1_thread']:>13.1f}"
            )
    return "\n".join(lines)


def bench_predict(
    n_images: int = 500,
    archs: tuple[tuple[str, int], ...] = DEFAULT_ARCHS,
    naive_archs: tuple[str, ...] = ("SimpleNet",),
    batch_size: int = 32,
    workers: int | None = None,
    model_threads: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Run the predict benchmark on `n_images` synthetic 450 px cells; print a table.

    Args:
        n_images: synthetic cells, written as BMP files (`leukoflow.data.synth.write_cells`).
        archs: (architecture, input size) pairs, random weights.
        naive_archs: those also timed with the naive loop.
        batch_size: images per model call.
        workers: preparation threads (default: the cores).
        model_threads: intra-op threads of TensorFlow (applies only before TensorFlow
            starts) and of ONNX Runtime.
        repeats: timing rounds, the best kept (a slow model gets one).
        seed: seed of the cells.

    Returns:
        {"images", "batch_size", "results": one dict per architecture (`bench_architecture`)}.
    """
    from leukoflow.data.images import read_rgb
    from leukoflow.data.synth import write_cells
    from leukoflow.deploy.predict import configure_model_threads
    from leukoflow.stain.normalize import fit_reference

    configure_model_threads(model_threads)
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-predict-") as folder:
        cells = Path(folder) / "cells"
        files = [cells / name for name in write_cells(cells, n_images, 450, seed=seed)["path"]]
        reference = fit_reference((read_rgb(p) for p in files[:50]), "macenko")
        results = [
            bench_architecture(
                arch,
                size,
                files,
                reference,
                folder,
                batch_size,
                workers,
                naive=arch in naive_archs,
                repeats=repeats,
                model_threads=model_threads,
            )
            for arch, size in archs
        ]
    print(results_table(results), flush=True)
    return {"images": n_images, "batch_size": batch_size, "results": results}


def run(
    images: int = 500,
    threads: int | None = None,
    model_threads: int | None = None,
    repeats: int = 3,
) -> dict:
    """`leukoflow bench predict`: the figures of `bench_predict`, flat.

    Args:
        images: synthetic 450 px cells.
        threads: preparation threads (default: all cores).
        model_threads: TensorFlow intra-op threads.
        repeats: timing rounds (the best is kept).

    Returns:
        `images`, `batch_size` and `<architecture>_<figure>`, e.g. `SimpleNet_predict_vs_bare`.
    """
    figures = bench_predict(images, workers=threads, model_threads=model_threads, repeats=repeats)
    flat = {"images": figures["images"], "batch_size": figures["batch_size"]}
    for result in figures["results"]:
        arch = result["architecture"]
        flat.update(
            {f"{arch}_{key}": value for key, value in result.items() if key != "architecture"}
        )
    return flat
