"""Where and how a job computes: the device, the precision and the compilation, decided once.

`decide` makes every choice from an architecture's settings, in one place, so the same
settings give the same choices everywhere:

- device: a GPU when the active Keras backend sees one, else the CPU;
- precision (`mixed_precision`): `auto` is `mixed_bfloat16` on a GPU and `float32` on a
  CPU; `off` is `float32`; `mixed_bfloat16` / `mixed_float16` are taken as given;
- compilation (`jit_compile`): XLA `on` or `off`; `auto` is on with a GPU and off on a
  CPU. The JAX backend compiles every step with XLA whatever the setting;
- TensorFlow's graph optimiser (Grappler) stays on only on a GPU: on a CPU it made the
  first (tracing) training step of EfficientNetV2M at 64 px take 98 instead of 72 CPU s
  with the same per-step time, and XLA on a CPU 154 CPU s and each step five times slower.

Training applies every decision (`apply`); evaluate, timing and `leukoflow predict` run the
saved float32 model and take the compilation decision only. Saliency does not ask: it runs
the saved model with TensorFlow's XLA off (JAX compiles anyway).

This module imports Keras only inside its functions (the Snakefile need not load it).
"""

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from leukoflow.errors import ConfigError

PRECISIONS = ("auto", "off", "mixed_bfloat16", "mixed_float16")
JIT_SETTINGS = ("auto", "on", "off")


@dataclass(frozen=True)
class Runtime:
    """The decisions of one job: backend, device, dtype policy, XLA, Grappler."""

    backend: str
    gpu: bool
    dtype_policy: str
    jit_compile: bool
    graph_optimizer: bool

    def as_dict(self) -> dict:
        """The decisions as a plain dict (for logs and JSON records)."""
        return asdict(self)


def backend_name() -> str:
    """The active Keras backend: "tensorflow", "jax", ..."""
    import keras

    return keras.backend.backend()


def has_gpu() -> bool:
    """Whether the active Keras backend computes on a GPU."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    return False


def decide(settings: Mapping, gpu: bool | None = None, backend: str | None = None) -> Runtime:
    """Decide device, precision and compilation from an architecture's settings.

    Args:
        settings: merged settings; reads `mixed_precision` and `jit_compile` (both default
            "auto").
        gpu: whether a GPU is used; None asks the backend (`has_gpu`).
        backend: the Keras backend; None asks Keras (`backend_name`).

    Returns:
        The `Runtime` (see the module docstring for the rules).

    Raises:
        ConfigError: for a value outside `PRECISIONS` or `JIT_SETTINGS`.
    """
    backend = backend_name() if backend is None else backend
    gpu = has_gpu() if gpu is None else gpu
    precision = settings.get("mixed_precision", "auto")
    jit = settings.get("jit_compile", "auto")
    if precision not in PRECISIONS:
        raise ConfigError(f"mixed_precision: {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if jit not in JIT_SETTINGS:
        raise ConfigError(f"jit_compile: {jit!r}; allowed: {', '.join(JIT_SETTINGS)}")
    if precision == "auto":
        policy = "mixed_bfloat16" if gpu else "float32"
    else:
        policy = "float32" if precision == "off" else precision
    jit_compile = backend == "jax" or jit == "on" or (jit == "auto" and gpu)
    return Runtime(backend, gpu, policy, jit_compile, graph_optimizer=gpu)


def apply(runtime: Runtime) -> None:
    """Set the global dtype policy and, on TensorFlow, Grappler on or off, for this process."""
    import keras

    keras.config.set_dtype_policy(runtime.dtype_policy)
    if runtime.backend == "tensorflow":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": not runtime.graph_optimizer}
        )


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> str:
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


def versions() -> dict:
    """The versions of Keras and of the active backend's library, by package name."""
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
