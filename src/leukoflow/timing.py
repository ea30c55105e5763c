"""Inference timing: batch-1 latency and batch throughput through a compiled function.

`compiled_inference` is the one backend dispatch for fast inference (TensorFlow:
`tf.function` of `model(x, training=False)`; JAX: `jax.jit` of `model.stateless_call`). It
is used by evaluation too. `naive_predict_latency` times `model.predict` per image, the
slow path the compiled function is compared with.
"""

import json
import logging
import os
import platform
import time

import numpy as np

from leukoflow.atomic import write_text
from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)


def backend_name():
    """The active Keras backend ("tensorflow", "jax", ...)."""
    import keras

    return keras.backend.backend()


def has_gpu():
    """True when the active backend sees a GPU."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    return False


def resolve_jit(setting):
    """XLA on or off from the config value auto | on | off (auto = on with a GPU).

    The JAX backend always compiles with XLA, whatever the setting.
    """
    if backend_name() == "jax" or setting in ("on", True):
        return True
    if setting in ("off", False):
        return False
    return has_gpu()


def device_info():
    """A short description of the device the backend computes on, e.g. 'GPU: NVIDIA H100'."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU: {details.get('device_name', gpus[0].name)}"
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return f"GPU: {device.device_kind}"
    return f"CPU: {cpu_model()} ({os.cpu_count()} cores)"


def cpu_model():
    """The CPU model name from /proc/cpuinfo, or what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    """Keras and backend library versions."""
    import keras

    out = {"keras": keras.__version__}
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    elif backend == "jax":
        import jax

        out["jax"] = jax.__version__
    return out


def model_precision(model):
    """The compute dtypes of the model's layers, e.g. 'float32' or 'bfloat16+float32'."""
    dtypes = sorted({layer.dtype_policy.compute_dtype for layer in model.layers})
    return "+".join(dtypes)


def compiled_inference(model, jit_compile=False):
    """A function float32 batch (N, H, W, 3) -> P(all) (N,) numpy, compiled once per shape.

    The one backend dispatch of inference: TensorFlow traces `model(x, training=False)` in a
    `tf.function` (XLA when `jit_compile`); JAX jits `model.stateless_call` over the
    model's current variables (always XLA).
    """
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=bool(jit_compile), reduce_retracing=True)
        def call(x):
            return model(x, training=False)

        def predict(x):
            return np.asarray(call(tf.convert_to_tensor(x)), dtype="float32").reshape(-1)

        return predict
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def call(trainable, non_trainable, x):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return outputs

        def predict(x):
            out = call(trainable, non_trainable, x)
            return np.asarray(out, dtype="float32").reshape(-1)

        return predict
    raise LeukoflowError(
        f"backend {backend!r} is not supported for inference; use tensorflow or jax"
    )


def _times_ms(fn, x, calls):
    """Wall times in ms of `calls` calls of fn(x); each call waits for its numpy result."""
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn(x)
        times[i] = (time.perf_counter() - start) * 1000
    return times


def random_batch(batch_size, input_size, seed=0):
    """A float32 batch of random pixel values in [0, 255], shape (batch, size, size, 3)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch_size, input_size, input_size, 3)).astype("float32")


def input_size_of(model):
    """The square input size of a model (pixels); a clear error for other shapes."""
    shape = model.input_shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise LeukoflowError(f"model input shape {shape} is not (None, size, size, 3)")
    return int(shape[1])


def measure_compiled(model, warmup=5, calls=100, batch_size=32, jit_compile=False, seed=0):
    """Batch-1 latency and batch throughput of the compiled inference function.

    Returns {latency_ms: {median, p95, mean, min}, throughput_images_per_s, ...}. Each call
    waits for its result. Throughput: images per second over max(10, calls // 5) calls of a
    full batch after `warmup` warm-up calls.
    """
    if calls < 1 or warmup < 1:
        raise LeukoflowError(f"timing needs calls >= 1 and warmup >= 1, got {calls}, {warmup}")
    size = input_size_of(model)
    predict = compiled_inference(model, jit_compile=jit_compile)
    one = random_batch(1, size, seed)
    many = random_batch(batch_size, size, seed + 1)
    _times_ms(predict, one, warmup)
    latency = _times_ms(predict, one, calls)
    _times_ms(predict, many, warmup)
    batch_calls = max(10, calls // 5)
    batch_times = _times_ms(predict, many, batch_calls)
    return {
        "latency_ms": summarise(latency),
        "throughput_images_per_s": float(batch_size * batch_calls / (batch_times.sum() / 1000)),
        "batch_ms": summarise(batch_times),
        "calls": calls,
        "batch_calls": batch_calls,
        "warmup": warmup,
    }


def summarise(times_ms):
    """{median, p95, mean, min} of a vector of times in ms."""
    return {
        "median": float(np.median(times_ms)),
        "p95": float(np.percentile(times_ms, 95)),
        "mean": float(np.mean(times_ms)),
        "min": float(np.min(times_ms)),
    }


def naive_predict_latency(model, calls=20, warmup=2, seed=0):
    """Batch-1 latency summary (ms) of `model.predict` called once per image (the slow path)."""
    x = random_batch(1, input_size_of(model), seed)

    def predict(batch):
        return model.predict(batch, verbose=0)

    _times_ms(predict, x, warmup)
    return summarise(_times_ms(predict, x, calls))


def time_model(model, warmup=5, calls=100, batch_size=32, jit_compile="auto"):
    """The timing record of one model: latency, throughput and what they were measured on."""
    jit = resolve_jit(jit_compile)
    record = measure_compiled(model, warmup, calls, batch_size, jit)
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


def run_timing(model_path, settings, warmup, calls, batch_size, out):
    """The `timing` job: load the model, time it, write the JSON record."""
    from leukoflow.models import load_model

    if calls < 50:
        raise LeukoflowError(f"--calls {calls}: at least 50 calls are needed for a p95")
    model = load_model(model_path)
    record = time_model(model, warmup, calls, batch_size, settings.get("jit_compile", "auto"))
    record["architecture"] = settings.get("architecture")
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
    return record
