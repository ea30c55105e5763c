"""Where and how a job computes: the device, the precision and the compilation, decided once.

`decide` makes every choice from an architecture's settings, in one place, so the same
settings give the same choices everywhere:

- device: a GPU when the active Keras backend sees one, else the CPU; `devices` (the
  training setting, default 1) of them, data-parallel (`compute_devices` lists them:
  the job's GPUs, or the CPU's devices, of which JAX simulates several with
  `XLA_FLAGS=--xla_force_host_platform_device_count=N`);
- precision (`mixed_precision`): `auto` is `mixed_bfloat16` on a GPU with native bfloat16
  (compute capability 8.0 and up: A100, H100, L4, ...), `mixed_float16` on older GPUs
  (V100 7.0, T4 7.5; Keras scales the loss so float16 gradients do not underflow) and on
  a GPU whose capability the backend does not tell, and `float32` on a CPU; `off` is
  `float32`; `mixed_bfloat16` / `mixed_float16` are taken as given;
- compilation (`jit_compile`): XLA `on` or `off`; `auto` is on with a GPU and off on a
  CPU. The JAX backend compiles every step with XLA whatever the setting;
- TensorFlow's graph optimiser (Grappler) stays on only on a GPU: on a CPU it made the
  first (tracing) training step of EfficientNetV2M at 64 px take 98 instead of 72 CPU s
  with the same per-step time, and XLA on a CPU 154 CPU s and each step five times slower.

Training applies every decision (`apply`) and saves the model in the precision it trained
in, so evaluate, timing and `leukoflow predict` run it in that precision and take the
compilation decision only. Saliency does not ask: it runs the saved model with TensorFlow's
XLA off (JAX compiles anyway).

Compilation is paid once per project: `use_compile_cache` points JAX's persistent
compilation cache (with XLA's GPU autotuning results) and TensorFlow's XLA cache at one
folder shared by every job, before the backend is imported; `CompileClock` adds up a job's
compile seconds (JAX) for its log.

This module imports Keras only inside its functions (the Snakefile need not load it).
"""

import json
import logging
import os
import platform
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from leukoflow.core.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "off", "mixed_bfloat16", "mixed_float16")
JIT_SETTINGS = ("auto", "on", "off")
NATIVE_BF16 = (8, 0)  # compute capability from which GPUs compute in bfloat16 natively
COMPILE_CACHE_ENV = "LEUKOFLOW_COMPILE_CACHE"


@dataclass(frozen=True)
class Runtime:
    """The decisions of one job: backend, device, dtype policy, XLA, Grappler, devices."""

    backend: str
    gpu: bool
    dtype_policy: str
    jit_compile: bool
    graph_optimizer: bool
    devices: int = 1

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


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) compute capability of the first GPU the backend sees; None if unknown."""
    backend = backend_name()
    text = None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get(
                "compute_capability"
            )
            return tuple(capability) if capability else None
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        text = getattr(device, "compute_capability", None) if device.platform == "gpu" else None
    if not text:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def auto_precision(gpu: bool, compute_capability: tuple[int, int] | None) -> str:
    """The dtype policy of `mixed_precision: auto` (see the module docstring)."""
    if not gpu:
        return "float32"
    if compute_capability is not None and tuple(compute_capability) >= NATIVE_BF16:
        return "mixed_bfloat16"
    return "mixed_float16"


def decide(
    settings: Mapping,
    gpu: bool | None = None,
    backend: str | None = None,
    compute_capability: tuple[int, int] | None = None,
) -> Runtime:
    """Decide device, precision and compilation from an architecture's settings.

    Args:
        settings: merged settings; reads `mixed_precision` and `jit_compile` (both default
            "auto") and `devices` (default 1).
        gpu: whether a GPU is used; None asks the backend (`has_gpu`).
        backend: the Keras backend; None asks Keras (`backend_name`).
        compute_capability: the GPU's (major, minor); None asks the backend
            (`gpu_compute_capability`) when `mixed_precision` is auto on a GPU.

    Returns:
        The `Runtime` (see the module docstring for the rules).

    Raises:
        ConfigError: for a value outside `PRECISIONS` or `JIT_SETTINGS`, or `devices`
            below 1.
    """
    backend = backend_name() if backend is None else backend
    gpu = has_gpu() if gpu is None else gpu
    precision = settings.get("mixed_precision", "auto")
    jit = settings.get("jit_compile", "auto")
    devices = settings.get("devices", 1)
    if precision not in PRECISIONS:
        raise ConfigError(f"mixed_precision: {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if jit not in JIT_SETTINGS:
        raise ConfigError(f"jit_compile: {jit!r}; allowed: {', '.join(JIT_SETTINGS)}")
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices: {devices!r}; allowed: 1 or more")
    if precision == "auto":
        if gpu and compute_capability is None:
            compute_capability = gpu_compute_capability()
        policy = auto_precision(gpu, compute_capability)
    else:
        policy = "float32" if precision == "off" else precision
    jit_compile = backend == "jax" or jit == "on" or (jit == "auto" and gpu)
    return Runtime(backend, gpu, policy, jit_compile, graph_optimizer=gpu, devices=devices)


def compute_devices(runtime: Runtime) -> list:
    """The backend's devices the job computes on: the first `runtime.devices` of its GPUs
    (or of its CPU devices without a GPU).

    JAX: `jax.Device`s; TensorFlow: logical device names ("/device:GPU:0").

    Raises:
        ConfigError: when the backend sees fewer devices than `runtime.devices` (both
            numbers named).
    """
    kind = "gpu" if runtime.gpu else "cpu"
    if runtime.backend == "jax":
        import jax

        found = jax.devices(kind)
    elif runtime.backend == "tensorflow":
        import tensorflow as tf

        found = [device.name for device in tf.config.list_logical_devices(kind.upper())]
    else:
        raise ConfigError(f"backend {runtime.backend!r}: devices > 1 needs tensorflow or jax")
    if len(found) < runtime.devices:
        raise ConfigError(
            f"training.devices: {runtime.devices}, but this job sees {len(found)} "
            f"{kind.upper()} device(s); lower training.devices to {len(found)} or give the "
            f"job {runtime.devices} GPUs"
        )
    return list(found[: runtime.devices])


def apply(runtime: Runtime) -> None:
    """Set the global dtype policy and, on TensorFlow, Grappler on or off, for this process."""
    import keras

    keras.config.set_dtype_policy(runtime.dtype_policy)
    if runtime.backend == "tensorflow":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": not runtime.graph_optimizer}
        )


def saved_dtype_policy(model_path: str | Path) -> str:
    """The dtype policy a `.keras` model file was saved with: that of its layers, the float32
    ones (input scaling, the output layer) aside; read from the file, without Keras.

    Returns:
        "float32", "mixed_bfloat16" or "mixed_float16".
    """
    with zipfile.ZipFile(model_path) as archive:
        config = json.loads(archive.read("config.json"))
    names, nodes = set(), [config]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                names.add(node["config"]["name"])
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    mixed = sorted(names - {"float32"})
    return mixed[0] if mixed else "float32"


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


def use_compile_cache(folder: str | Path) -> Path:
    """Keep compiled programs in `folder`, shared by every job; call before the backend loads.

    JAX: its persistent compilation cache in `folder/jax` (with XLA's per-fusion GPU
    autotuning results, which JAX keeps beside it by default); a program is written there
    when it took at least `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` (JAX's default 1 s)
    to compile. TensorFlow: XLA's persistent cache of `jit_compile` functions in
    `folder/tensorflow` (`TF_XLA_FLAGS`). A cache the user set in the environment
    (`JAX_COMPILATION_CACHE_DIR`, a `--tf_xla_persistent_cache_directory` flag) is kept.

    Args:
        folder: the cache folder (created); relative paths are resolved now.

    Returns:
        The folder, absolute.
    """
    folder = Path(folder).resolve()
    (folder / "jax").mkdir(parents=True, exist_ok=True)
    (folder / "tensorflow").mkdir(exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(folder / "jax"))
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "--tf_xla_persistent_cache_directory" not in flags:
        flag = f"--tf_xla_persistent_cache_directory={folder / 'tensorflow'}"
        os.environ["TF_XLA_FLAGS"] = f"{flags} {flag}".strip()
    return folder


class CompileClock:
    """The compile seconds of this process, for its log (JAX; see `summary`).

    `start` registers listeners of JAX's compile events: lowering to XLA and XLA's compile
    (or its retrieval from the persistent cache), each program once; the hits and misses
    of the persistent cache are counted.
    """

    EVENTS = {
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering",
        "/jax/core/compile/backend_compile_duration": "compile",
    }

    def __init__(self):
        self.seconds = {"lowering": 0.0, "compile": 0.0}
        self.programs = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.backend = None

    def start(self, backend: str) -> None:
        """Listen to the compile events of `backend` (JAX only; TensorFlow has none)."""
        self.backend = backend
        if backend != "jax":
            return
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event, duration_secs, **_):
        kind = self.EVENTS.get(event)
        if kind:
            self.seconds[kind] += duration_secs
            self.programs += kind == "compile"

    def _on_event(self, event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.cache_misses += 1

    def summary(self) -> str:
        """One log line, e.g. 'compile seconds: 12.3 (XLA 11.0 s for 4 programs, 3 from
        the persistent cache; lowering 1.3 s)'."""
        if self.backend != "jax":
            return (
                f"compile seconds: not measured on {self.backend} (its first call of each "
                "function traces and compiles; see the first epoch's time)"
            )
        total = self.seconds["compile"] + self.seconds["lowering"]
        return (
            f"compile seconds: {total:.2f} (XLA {self.seconds['compile']:.2f} s for "
            f"{self.programs} programs, {self.cache_hits} from the persistent cache, "
            f"{self.cache_misses} compiled; lowering {self.seconds['lowering']:.2f} s)"
        )
