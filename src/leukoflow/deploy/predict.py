"""Classifying new cell images with a model bundle (`leukoflow predict`).

Every image is read once and goes through `stain.stores.prepare_image` (the square frame
centred on the cell, the Lanczos resize, then stain normalisation with the bundle's
reference) once per distinct input size of the bundle's models, exactly as the training and
test stores were built. Each model predicts from the image at its size; an ensemble's
members' probabilities are combined (`evaluate.ensemble.combine`); the bundle's temperature
calibrates the result (`evaluate.calibration.apply_temperature`), and the threshold and the
referral band apply to the calibrated probability. So a bundle gives the calibrated
probabilities, decisions and referrals evaluate wrote.

Engines: "keras" runs each member's Keras file through the compiled inference function
evaluate uses; "onnx" runs each member's ONNX file with ONNX Runtime (`deploy.onnx_model`),
which needs neither TensorFlow nor JAX. The engine only computes the members' P(all):
combining, calibration, the threshold and the referral band are the same code for both.
`choose_engine` resolves "auto": ONNX Runtime on a CPU when every member has an ONNX file
(it is the faster engine there, docs/PERFORMANCE.md), Keras otherwise.

Speed: a pool of worker threads reads and prepares whole batches ahead of the model (at
most `workers + 1` batches in flight), while the main thread runs the model's compiled
inference function (the one evaluate uses) on the previous batch, so preparation overlaps
the model's compute.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from leukoflow import CLASS_NAMES
from leukoflow.core.atomic import atomic_path
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.images import DEFAULT_MAX_PIXELS, BadImageError, is_image_name, open_rgb
from leukoflow.deploy.bundle import onnx_missing
from leukoflow.deploy.cell_uncertainty import CellUncertainty, check_referral
from leukoflow.evaluate.calibration import apply_temperature
from leukoflow.evaluate.ensemble import combine
from leukoflow.evaluate.referral import referred_by
from leukoflow.models.inference import predict_views, tta_views
from leukoflow.stain.stores import prepare_image

if TYPE_CHECKING:
    from leukoflow.deploy.bundle import Bundle
    from leukoflow.models.inference import PredictFn

log = logging.getLogger(__name__)

COLUMNS = ("path", "calibrated_probability_all", "label", "threshold", "refer", "error")
ENGINE_CHOICES = ("auto", "keras", "onnx")


@dataclass
class Prediction:
    """One output row; `probability` (calibrated), `label` and `refer` are None when the file
    could not be used; `uncertainty`: {column: value} (`deploy.cell_uncertainty`)."""

    path: str
    probability: float | None
    label: str | None
    refer: bool | None
    error: str | None
    uncertainty: dict[str, float] = field(default_factory=dict)


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The files to classify, in the order given.

    A folder contributes every file under it (recursively, sorted) whose extension is one of
    `leukoflow.data.images.IMAGE_EXTENSIONS` in any case, and nothing else (a warning when it has
    none); "file" is anything but a folder, so a dangling symbolic link or a FIFO with an
    image name gets its error row. Any other path is kept as given, whatever its extension
    (it gets an error row if it cannot be read).
    """
    files = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(
                (p for p in given.rglob("*") if not p.is_dir() and is_image_name(p)),
                key=lambda p: p.relative_to(given).parts,
            )
            if not found:
                log.warning("%s: no image files (BMP, PNG, JPEG, TIFF) under this folder", given)
            files.extend(found)
        else:
            files.append(given)
    return files


def prepare_file(
    path: str | Path, reference: dict, sizes: Sequence[int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[dict[int, np.ndarray] | None, str | None]:
    """Read one file once and prepare it at every size.

    Returns:
        ({size: uint8 (size, size, 3)}, None), or (None, why the file could not be used:
        `leukoflow.data.images.BadImageError`'s reason, e.g. an image of more than
        `max_pixels` pixels).
    """
    try:
        with open_rgb(path, max_pixels=max_pixels) as image:
            return {size: prepare_image(image, reference, size) for size in sizes}, None
    except BadImageError as error:
        return None, error.reason
    except (LeukoflowError, ValueError, OSError) as error:
        return None, str(error)


def prepare_sizes(
    paths: Sequence[str | Path],
    reference: dict,
    sizes: Sequence[int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[dict[int, np.ndarray], list[str | None]]:
    """Read a batch of files and prepare each at every size (`prepare_file`).

    Args:
        paths: the files.
        reference: the stain reference.
        sizes: the distinct sides of the models' inputs, pixels.
        max_pixels: the largest image read; a larger one is a bad file.

    Returns:
        (images, errors): {size: uint8 `(n_ok, size, size, 3)`} for the files that could be
        used, in order, and one entry per path, None for a used file or the reason it was
        not.
    """
    images, errors = {size: [] for size in sizes}, []
    for path in paths:
        prepared, error = prepare_file(path, reference, sizes, max_pixels)
        errors.append(error)
        for size in sizes if prepared is not None else ():
            images[size].append(prepared[size])
    return {
        size: np.stack(found) if found else np.zeros((0, size, size, 3), np.uint8)
        for size, found in images.items()
    }, errors


def prepare_batch(
    paths: Sequence[str | Path], reference: dict, size: int
) -> tuple[np.ndarray, list[str | None]]:
    """Read and prepare a batch of files at one size (`prepare_sizes` with one size).

    Returns:
        (images, errors): uint8 `(n_ok, size, size, 3)` and one error entry per path.
    """
    images, errors = prepare_sizes(paths, reference, (size,))
    return images[size], errors


def choose_engine(requested: str, meta: dict, gpu: bool | None = None) -> str:
    """The engine that runs a bundle: "keras" or "onnx".

    Args:
        requested: "keras", "onnx" or "auto" (ONNX Runtime when every member of the bundle
            has an ONNX file and the Keras backend has no GPU; Keras otherwise).
        meta: the bundle's metadata (`leukoflow.deploy.bundle.read_meta`, with `members`).
        gpu: whether the Keras backend has a GPU; None asks it (`runtime.has_gpu`), only
            for "auto" on a bundle with ONNX files.

    Raises:
        LeukoflowError: for an engine not in `ENGINE_CHOICES`.
    """
    if requested not in ENGINE_CHOICES:
        raise LeukoflowError(
            f"--engine must be one of {', '.join(ENGINE_CHOICES)}, got {requested!r}"
        )
    if requested != "auto":
        return requested
    members = meta.get("members") or []
    if not members or any(onnx_missing(member) for member in members):
        return "keras"
    if gpu is None:
        from leukoflow.core.runtime import has_gpu

        gpu = has_gpu()
    return "keras" if gpu else "onnx"


def make_predict_fns(bundle: Bundle, threads: int | None = None) -> list[PredictFn]:
    """The inference function of each of the bundle's models, for the engine it was loaded
    for: ONNX Runtime on the members' ONNX files, or the compiled inference function evaluate
    builds.

    Args:
        bundle: a bundle from `load_bundle(path, engine)`.
        threads: ONNX Runtime's intra-op threads (None: its default). The Keras engine
            takes its threads from `configure_model_threads`.

    Returns:
        One per member: float32 batch (N, size, size, 3) in [0, 255] -> P(all) float32
        (N,); on Keras, XLA as `leukoflow.core.runtime.decide` says for the member's settings.

    Raises:
        ConfigError: for a `jit_compile` or `mixed_precision` in a member's settings
            outside the allowed values.
        LeukoflowError: on a backend other than TensorFlow or JAX, or when ONNX Runtime
            cannot load an ONNX file.
    """
    if bundle.engine == "onnx":
        from leukoflow.deploy.onnx_model import onnx_inference

        return [onnx_inference(member.onnx_file, threads) for member in bundle.members]
    from leukoflow.core.runtime import decide
    from leukoflow.models.inference import compiled_inference

    return [
        compiled_inference(member.model, jit_compile=decide(member.settings).jit_compile)
        for member in bundle.members
    ]


def configure_model_threads(threads: int | None) -> None:
    """Set the model's intra-op threads (TensorFlow backend) before the model is loaded.

    Other backends take their thread settings from the environment (XLA_FLAGS for JAX), so
    this only logs there.

    Args:
        threads: the number of threads; None keeps the backend's default (all usable
            cores).

    Raises:
        LeukoflowError: for `threads` below 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise LeukoflowError(f"--model-threads must be at least 1, got {threads}")
    import keras

    if keras.backend.backend() != "tensorflow":
        log.warning("--model-threads applies to the TensorFlow backend only; ignored")
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        log.warning("TensorFlow is already initialised; --model-threads %d ignored", threads)


def default_workers() -> int:
    """Preparation workers: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def iter_predictions(
    bundle: Bundle,
    files: Sequence[str | Path],
    batch_size: int = 32,
    tta: str | int | None = None,
    workers: int | None = None,
    progress: bool = True,
    predict_fns: Sequence[PredictFn] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    uncertainty: CellUncertainty | None = None,
) -> Iterator[Prediction]:
    """Yield one `Prediction` per file, in order.

    Batches of `batch_size` files are read and prepared (once per distinct input size) by
    `workers` threads, at most `workers + 1` batches ahead of the models; the main thread
    runs each model on its size's batch as soon as it is ready, combines the members and
    calibrates. Threads, not processes: decoding, stain normalisation and resizing run in
    numpy and PIL with the GIL released, and threads cost nothing to start and pass arrays
    without copies.

    Args:
        bundle: the loaded model bundle.
        files: the image files (`collect_inputs`).
        batch_size: files per batch (at least 1).
        tta: the test-time augmentation (`models.inference.tta_views`); None: the
            bundle's, the one its threshold and temperature were fitted with.
        workers: preparation threads; None: `default_workers()`.
        progress: show a progress bar.
        predict_fns: the inference function of each member; None:
            `make_predict_fns(bundle)`.
        max_pixels: the largest image read; a larger one gets an error row.
        uncertainty: the per-cell uncertainty to compute (its `columns`), or None.

    Raises:
        LeukoflowError: for a batch size or worker count below 1, an unknown `tta`, or a
            referral by an uncertainty `uncertainty` does not compute (before any file is
            read), or as `make_predict_fns`.
    """
    if batch_size < 1:
        raise LeukoflowError(f"--batch-size must be at least 1, got {batch_size}")
    tta = bundle.tta if tta is None else tta
    tta_views(tta)  # checks tta before any image is read
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise LeukoflowError(f"--threads must be at least 1, got {workers}")
    predict_fns = predict_fns or make_predict_fns(bundle)
    sizes, reference, threshold = bundle.input_sizes, bundle.reference, bundle.threshold
    band = bundle.referral
    check_referral(band, uncertainty)
    shape = min(batch_size, max(len(files), 1))  # the one batch shape the model sees
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool,
        threadpool_limits(1, user_api="blas"),  # one BLAS thread per worker
        tqdm(total=len(files), unit="image", disable=not progress) as bar,
    ):
        pending = deque()
        queued = iter(batches)

        def submit():
            batch = next(queued, None)
            if batch is not None:
                future = pool.submit(prepare_sizes, batch, reference, sizes, max_pixels)
                pending.append((batch, future))

        for _ in range(workers + 1):
            submit()
        while pending:
            batch, future = pending.popleft()
            submit()
            images, errors = future.result()
            views = [
                predict_views(fn, images[member.input_size], shape, tta)
                for fn, member in zip(predict_fns, bundle.members, strict=True)
            ]
            combined = combine(np.vstack([v.mean(axis=0) for v in views]), bundle.combiner)
            probabilities = iter(apply_temperature(combined, bundle.temperature).tolist())
            extra = uncertainty(views, images, shape) if uncertainty else {}
            cells = iter(range(len(combined)))
            for path, error in zip(batch, errors, strict=True):
                if error is None:
                    p, i = next(probabilities), next(cells)
                    spread = {column: float(values[i]) for column, values in extra.items()}
                    refer = bool(referred_by(band, p, spread))
                    label = CLASS_NAMES[int(p >= threshold)]
                    yield Prediction(str(path), p, label, refer, None, spread)
                else:
                    yield Prediction(str(path), None, None, None, error)
            bar.update(len(batch))


def write_predictions(
    predictions: Iterable[Prediction], threshold: float, out: str | Path, columns: Sequence = ()
) -> int:
    """Write the predictions CSV (columns `COLUMNS`, then the uncertainty `columns`)
    atomically; returns the rows written.

    `refer` is 1 for a cell in the bundle's referral band, 0 otherwise, empty for a file that
    could not be used.
    """
    rows = 0
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, *columns])
        for row in predictions:
            probability = "" if row.probability is None else repr(row.probability)
            refer = "" if row.refer is None else int(row.refer)
            extra = [repr(row.uncertainty[c]) if c in row.uncertainty else "" for c in columns]
            writer.writerow(
                [row.path, probability, row.label or "", repr(threshold), refer, row.error or ""]
                + extra
            )
            rows += 1
    return rows


def predict(
    bundle: Bundle,
    inputs: Iterable[str | Path],
    out: str | Path,
    batch_size: int = 32,
    tta: str | int | None = None,
    workers: int | None = None,
    progress: bool = True,
    predict_fns: Sequence[PredictFn] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    patients: str | None = None,
) -> tuple[int, int]:
    """Classify the images in `inputs` (files and folders) and write the CSV `out`.

    Every file gets exactly one row in input order; a file that cannot be used gets its
    reason in `error` and empty `calibrated_probability_all`, `label` and `refer`.

    Args:
        bundle: the loaded model bundle.
        inputs: image files and folders (`collect_inputs`).
        out: the predictions CSV to write (`COLUMNS`, then the uncertainty columns
            `deploy.cell_uncertainty.CellUncertainty` computes).
        batch_size: files per model call.
        tta: the test-time augmentation (`models.inference.tta_views`); None: the
            bundle's, the one its threshold and temperature were fitted with.
        workers: preparation threads; None: `default_workers()`.
        progress: show a progress bar.
        predict_fns: the inference function of each member; None:
            `make_predict_fns(bundle)`.
        max_pixels: the largest image read; a larger one gets an error row.
        patients: `subject` or `folder`: also write `patients.csv` beside `out`, one row
            per group of inputs with the bundle's patient-level call
            (`leukoflow.deploy.patients`); None: not.

    Returns:
        (rows, classified): the rows written and how many files were classified.

    Raises:
        LeukoflowError: as `iter_predictions`; with `patients`, as `patient_fit` and
            `patients_csv` (before any file is read).
    """
    from leukoflow.deploy import patients as by_patient

    fitted = by_patient.patient_fit(bundle.meta, patients) if patients else None
    patients_out = by_patient.patients_csv(out) if patients else None
    files = collect_inputs(inputs)
    counts = {"classified": 0}
    seen = []

    uncertainty = CellUncertainty(bundle, bundle.tta if tta is None else tta)

    def counted():
        predictions = iter_predictions(
            bundle, files, batch_size, tta, workers, progress, predict_fns, max_pixels, uncertainty
        )
        for row in predictions:
            counts["classified"] += row.error is None
            if fitted is not None:
                seen.append(row)
            yield row

    rows = write_predictions(counted(), bundle.threshold, out, uncertainty.columns)
    if fitted is not None:
        groups = by_patient.patient_rows(seen, patients, fitted)
        by_patient.write_patients(groups, patients_out)
        log.info("%d groups of cells by %s; their calls in %s", len(groups), patients, patients_out)
    log.info(
        "%d of %d files classified, %d with errors; predictions in %s",
        counts["classified"],
        rows,
        rows - counts["classified"],
        out,
    )
    return rows, counts["classified"]
