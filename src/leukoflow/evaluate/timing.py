"""Inference timing: batch-1 latency and batch throughput through the compiled function.

The function timed is `leukoflow.models.inference.compiled_inference`, the one evaluation and
`predict` use, on the model in the precision it was trained and is deployed in (its saved
dtype policy); `naive_predict_latency` times `model.predict` per image, the slow path it
is compared with. With a test-time augmentation (`evaluate.tta`), the same latency and
throughput are measured again through `predict_arrays` with it (`tta` in the record), so its
cost stands beside the single pass. `run_timing` is the `timing` job.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.atomic import write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.core.runtime import backend_name, decide, device_info, saved_dtype_policy, versions
from leukoflow.models.inference import compiled_inference, predict_arrays, tta_views

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


def model_precision(model: keras.Model) -> str:
    """The compute dtypes of the model's layers, e.g. 'float32' or 'bfloat16+float32'."""
    dtypes = sorted({layer.dtype_policy.compute_dtype for layer in model.layers})
    return "+".join(dtypes)


def _times_ms(fn, x, calls):
    """Wall times in ms of `calls` calls of fn(x); each call waits for its numpy result."""
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn(x)
        times[i] = (time.perf_counter() - start) * 1000
    return times


def random_batch(batch_size: int, input_size: int, seed: int = 0) -> np.ndarray:
    """A float32 batch of random pixel values in [0, 255], shape (batch, size, size, 3)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch_size, input_size, input_size, 3)).astype("float32")


def input_size_of(model: keras.Model) -> int:
    """The side of a model's square input, pixels.

    Raises:
        LeukoflowError: when the input is not (None, size, size, 3).
    """
    shape = model.input_shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise LeukoflowError(f"model input shape {shape} is not (None, size, size, 3)")
    return int(shape[1])


def measure_compiled(
    model: keras.Model,
    warmup: int = 5,
    calls: int = 100,
    batch_size: int = 32,
    jit_compile: bool = False,
    seed: int = 0,
    tta: str | int = "none",
) -> dict:
    """Batch-1 latency and batch throughput of the compiled inference function.

    Each call waits for its result. Throughput: images per second over max(10, calls // 5)
    calls of a full batch after `warmup` warm-up calls. The inputs are random.

    Args:
        model: the Keras classifier (square input).
        warmup: untimed calls before each measurement (at least 1).
        calls: timed batch-1 calls (at least 1).
        batch_size: the batch of the throughput.
        jit_compile: compile with XLA (TensorFlow).
        seed: seed of the random inputs.
        tta: a test-time augmentation (`leukoflow.models.inference.tta_views`) to time as
            well; `none`: only the single pass.

    Returns:
        `latency_ms` and `batch_ms` ({median, p95, mean, min}),
        `throughput_images_per_s`, `calls`, `batch_calls`, `warmup`, and `tta`: None, or
        {mode, views, latency_ms, batch_ms, throughput_images_per_s} with it.

    Raises:
        LeukoflowError: for `calls` or `warmup` below 1, or a model whose input is not
            square.
    """
    if calls < 1 or warmup < 1:
        raise LeukoflowError(f"timing needs calls >= 1 and warmup >= 1, got {calls}, {warmup}")
    size = input_size_of(model)
    predict = compiled_inference(model, jit_compile=jit_compile)
    one = random_batch(1, size, seed)
    many = random_batch(batch_size, size, seed + 1)
    batch_calls = max(10, calls // 5)
    views = len(tta_views(tta))

    def measure(fn):
        _times_ms(fn, one, warmup)
        latency = _times_ms(fn, one, calls)
        _times_ms(fn, many, warmup)
        batch_times = _times_ms(fn, many, batch_calls)
        return {
            "latency_ms": summarise(latency),
            "throughput_images_per_s": float(batch_size * batch_calls / (batch_times.sum() / 1000)),
            "batch_ms": summarise(batch_times),
        }

    record = measure(predict)
    with_tta = None
    if views > 1:
        with_tta = {"mode": tta, "views": views}
        with_tta.update(measure(lambda x: predict_arrays(predict, x, len(x), tta)))
    return {**record, "calls": calls, "batch_calls": batch_calls, "warmup": warmup, "tta": with_tta}


def summarise(times_ms: np.ndarray) -> dict[str, float]:
    """{median, p95, mean, min} of a vector of times in ms."""
    return {
        "median": float(np.median(times_ms)),
        "p95": float(np.percentile(times_ms, 95)),
        "mean": float(np.mean(times_ms)),
        "min": float(np.min(times_ms)),
    }


def naive_predict_latency(
    model: keras.Model, calls: int = 20, warmup: int = 2, seed: int = 0
) -> dict[str, float]:
    """Batch-1 latency summary (ms) of `model.predict` called once per image (the slow path)."""
    x = random_batch(1, input_size_of(model), seed)

    def predict(batch):
        return model.predict(batch, verbose=0)

    _times_ms(predict, x, warmup)
    return summarise(_times_ms(predict, x, calls))


def time_model(
    model: keras.Model,
    warmup: int = 5,
    calls: int = 100,
    batch_size: int = 32,
    jit_compile: str = "auto",
    tta: str | int = "none",
) -> dict:
    """The timing record of one model: latency, throughput and what they were measured on.

    Args:
        model: the Keras classifier.
        warmup: as `measure_compiled`.
        calls: as `measure_compiled`.
        batch_size: as `measure_compiled`.
        jit_compile: the `jit_compile` setting (auto | on | off), decided by
            `leukoflow.core.runtime.decide`.
        tta: as `measure_compiled`.

    Returns:
        The record of `measure_compiled` with device, backend, precision, jit_compile,
        batch sizes, input size, versions, host and time (UTC).

    Raises:
        ConfigError: for a `jit_compile` outside auto, on, off.
        LeukoflowError: as `measure_compiled`.
    """
    jit = decide({"jit_compile": jit_compile}).jit_compile
    record = measure_compiled(model, warmup, calls, batch_size, jit, tta=tta)
    record.update(
        device=device_info(),
        backend=backend_name(),
        precision=model_precision(model),
        jit_compile=jit,
        batch_sizes={"latency": 1, "throughput": batch_size},
        input_size=input_size_of(model),
        versions=versions(),
        host=platform.node(),
        time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return record


def run_timing(
    model_path: str | Path,
    settings: Mapping,
    warmup: int,
    calls: int,
    batch_size: int,
    out: str | Path,
    tta: str | int = "none",
) -> dict:
    """The `timing` job: load the model, time it, write the JSON record to `out`.

    Args:
        model_path: the trained `model.keras`.
        settings: the architecture's merged settings (`architecture`, `jit_compile`).
        warmup: untimed calls first.
        calls: timed batch-1 calls (at least 50, for a p95).
        batch_size: the batch of the throughput.
        out: the JSON record to write.
        tta: evaluate's test-time augmentation, timed as well (`measure_compiled`).

    Returns:
        The record (`time_model`, with `architecture` and `dtype_policy`: the model runs in
        the precision it was trained in, which it was saved with).

    Raises:
        ConfigError: as `time_model`.
        LeukoflowError: for fewer than 50 calls (no p95) or a missing model.
    """
    from leukoflow.models import load_model

    if calls < 50:
        raise LeukoflowError(f"timing.calls: {calls}; at least 50 calls are needed for a p95")
    model = load_model(model_path)
    jit_compile = settings.get("jit_compile", "auto")
    record = time_model(model, warmup, calls, batch_size, jit_compile, tta)
    record["architecture"] = settings.get("architecture")
    record["dtype_policy"] = saved_dtype_policy(model_path)
    write_text(out, json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info(
        "%s: batch-1 median %.2f ms (p95 %.2f), batch-%d %.1f images/s on %s",
        record["architecture"],
        record["latency_ms"]["median"],
        record["latency_ms"]["p95"],
        batch_size,
        record["throughput_images_per_s"],
        record["device"],
    )
    if record["tta"]:
        log.info(
            "with TTA %s: batch-1 median %.2f ms, %.1f images/s",
            tta,
            record["tta"]["latency_ms"]["median"],
            record["tta"]["throughput_images_per_s"],
        )
    return record
