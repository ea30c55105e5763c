"""Training throughput of every architecture on one accelerator: Keras 3 on JAX, bf16, XLA.

For each architecture of `leukoflow.models.registry` at its native input size, build the
model (random weights), compile it as `leukoflow train` does (`leukoflow.core.runtime.decide`
and `leukoflow.train.schedule.compile_model`: AdamW, cosine decay, XLA) under the `mixed_bfloat16`
policy, and train a fixed number of steps on random images of the real shape held on the
device. Prints, per
architecture as it finishes: images/s, step time, compile time, model FLOPs (forward pass
counted from the layers' shapes, x3 for a training step) and the achieved TFLOP/s against the
card's dense bf16 peak. Ends with an estimate of the paper's full experiment (six
architectures, 200 epochs over 10,661 images, validation every epoch).

Runs with JAX and no TensorFlow (`main` sets KERAS_BACKEND to jax before Keras loads).
Needs on the path: jax, numpy, pandas, keras, namex, optree, absl-py, rich, packaging,
typing_extensions, and this repository's `src/`:

    PYTHONPATH=src python scripts/gpu_throughput.py            # all six, native sizes
    PYTHONPATH=src python scripts/gpu_throughput.py --archs SimpleNet --size 32 --steps 1

Writes `$OUT/gpu_throughput.json` when OUT is set, else `results/bench/gpu_throughput.json`
(rewritten after every architecture, so a run cut short keeps what it measured).
"""

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
# Matched in order against `jax.devices()[0].device_kind`: the first substring found wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("GH200", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
# Order: quick to compile first, so a run cut short still has most architectures.
ORDER = ("SimpleNet", "VGG16", "Xception", "ResNet152V2", "EfficientNetB5", "EfficientNetV2M")
PAPER = {"architectures": 6, "epochs": 200, "images": 10661, "val_fraction": 1 / 3}


def peak_tflops(device_kind):
    """The dense bf16 peak (TFLOP/s) of a device name, or None when it is not in the table."""
    for name, peak in PEAK_BF16_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def default_batch(size):
    """Training batch for an input side: 64 up to 299 px, 32 above (EfficientNets)."""
    return 64 if size <= 299 else 32


def forward_flops(model):
    """FLOPs of one forward pass of one image: 2 x the multiply-adds of every convolution
    (plain, grouped, depthwise, separable) and dense layer, from the layers' shapes.

    Normalisation, activations and pooling are left out (a few per cent). Counted from the
    graph, not by the compiler: XLA's cost analysis of the lowered program gave the right
    figures on the CPU but 30-800x too few on the GPU, where convolutions are library calls.
    """
    from keras import layers

    macs = 0
    for layer in model.layers:
        if not isinstance(
            layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)
        ):
            continue
        c_in = layer.input.shape[-1]
        out = layer.output.shape
        positions = int(np.prod(out[1:-1]))
        if isinstance(layer, layers.Dense):
            macs += positions * c_in * out[-1]
            continue
        taps = int(np.prod(layer.kernel_size))
        if isinstance(layer, layers.Conv2D):
            macs += positions * out[-1] * taps * c_in // layer.groups
        elif isinstance(layer, layers.DepthwiseConv2D):
            macs += positions * out[-1] * taps
        else:
            depth = c_in * layer.depth_multiplier
            macs += positions * depth * (taps + out[-1])
    return 2.0 * macs


def measure(arch, size, batch, steps, warmup, precision, host_data, seed=0):
    """Train `arch` at `size` px for `warmup` + `steps` steps of `batch` images; a dict.

    Step times wait for each step's result (`train_on_batch` returns numbers). The first
    warm-up step includes the XLA compilation (`compile_s`).
    """
    import jax
    import keras

    from leukoflow.core import runtime
    from leukoflow.models import build_model
    from leukoflow.train.schedule import compile_model

    decided = runtime.decide({"mixed_precision": precision, "jit_compile": "on"}, gpu=True)
    runtime.apply(decided)
    keras.utils.set_random_seed(seed)
    try:
        start = time.perf_counter()
        model = build_model(arch, size, weights="none")
        build_s = time.perf_counter() - start
        flops = forward_flops(model)
        compile_model(model, 1e-4, 1000, 1e-4, decided.jit_compile)
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 2, batch).astype(np.float32)
        if not host_data:
            images, labels = jax.device_put(images.astype(np.float32)), jax.device_put(labels)
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        compile_s = time.perf_counter() - start
        for _ in range(warmup - 1):
            model.train_on_batch(images, labels)
        times = np.empty(steps)
        for i in range(steps):
            start = time.perf_counter()
            model.train_on_batch(images, labels)
            times[i] = time.perf_counter() - start
        params = int(model.count_params())
    finally:
        keras.config.set_dtype_policy("float32")
    step_s = float(np.median(times))
    return {
        "architecture": arch,
        "input_size": size,
        "batch_size": batch,
        "steps": steps,
        "warmup_steps": warmup,
        "dtype_policy": decided.dtype_policy,
        "jit_compile": decided.jit_compile,
        "data_on_host": host_data,
        "parameters": params,
        "build_s": build_s,
        "compile_s": compile_s,
        "step_ms_median": 1000 * step_s,
        "step_ms_mean": 1000 * float(times.mean()),
        "images_per_s": batch / step_s,
        "forward_gflops_per_image": flops / 1e9,
        "train_tflops_achieved": 3 * flops * batch / step_s / 1e12,
    }


def estimate_experiment(results, epochs, images, val_fraction):
    """Hours of the paper's experiment from measured training images/s per architecture.

    Per architecture: `epochs` passes over `images` training images at the measured rate,
    plus validation of `val_fraction` x `images` every epoch at 3x that rate (a forward
    pass costs a third of a training step), plus the one-off compilation. Early stopping
    only shortens it; data loading is assumed to keep up (see `leukoflow bench loader`).
    """
    per_arch = {}
    for r in results:
        train_s = epochs * images / r["images_per_s"]
        val_s = epochs * images * val_fraction / (3 * r["images_per_s"])
        per_arch[r["architecture"]] = (train_s + val_s + r["compile_s"]) / 3600
    return {
        "epochs": epochs,
        "images": images,
        "val_fraction": val_fraction,
        "hours_per_architecture": per_arch,
        "hours_total": float(sum(per_arch.values())),
    }


def device_description():
    """(device kind, platform, count) of JAX's default backend."""
    import jax

    devices = jax.devices()
    return devices[0].device_kind, devices[0].platform, len(devices)


def output_path():
    """`$OUT/gpu_throughput.json` when OUT is set, else `results/bench/gpu_throughput.json`."""
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("results/bench")
    return folder / "gpu_throughput.json"


def write_json(path, record):
    """Write `record` as JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def format_result(r, peak):
    """One line of the per-architecture table."""
    share = f"{100 * r['train_tflops_achieved'] / peak:6.1f}%" if peak else f"{'n/a':>7}"
    return (
        f"{r['architecture']:<16}{r['input_size']:>5}{r['batch_size']:>6}"
        f"{r['images_per_s']:>10.1f}{r['step_ms_median']:>10.1f}{r['compile_s']:>10.1f}"
        f"{r['forward_gflops_per_image']:>9.2f}{r['train_tflops_achieved']:>9.1f}{share}"
    )


HEADER = (
    f"{'architecture':<16}{'px':>5}{'batch':>6}{'img/s':>10}{'step ms':>10}{'compile s':>10}"
    f"{'GFLOP':>9}{'TFLOP/s':>9}{'of peak':>8}"
)


def parse_args(argv):
    from leukoflow.models.registry import ARCHITECTURES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=",".join(ORDER), help="comma-separated architectures")
    p.add_argument("--size", type=int, help="input side for every architecture (default native)")
    p.add_argument("--size-scale", type=float, default=1.0, help="multiply the native sizes")
    p.add_argument("--batch", type=int, help="batch size (default 64 up to 299 px, 32 above)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per architecture")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps (the first compiles)")
    p.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy")
    p.add_argument(
        "--host-data",
        action="store_true",
        help="feed uint8 numpy batches from the host each step (as training does), "
        "instead of float32 arrays already on the device",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=300,
        help="start no further architecture once this many seconds have passed",
    )
    p.add_argument("--epochs", type=int, default=PAPER["epochs"], help="for the estimate")
    p.add_argument("--images", type=int, default=PAPER["images"], help="for the estimate")
    args = p.parse_args(argv)
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in args.archs if a not in ARCHITECTURES]
    if unknown or args.steps < 1 or args.warmup < 1:
        p.error(f"unknown architectures {unknown}, or --steps/--warmup below 1")
    args.sizes = {
        a: args.size or max(32, round(ARCHITECTURES[a].native_size * args.size_scale))
        for a in args.archs
    }
    return args


def main(argv=None):
    """Measure every architecture asked for; print the table and the estimate; write JSON."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    args = parse_args(argv)
    kind, platform_name, count = device_description()
    peak = peak_tflops(kind)
    record = {
        "device": kind,
        "platform": platform_name,
        "devices": count,
        "peak_bf16_tflops": peak,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "host": platform.node(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "results": [],
        "skipped": [],
    }
    path = output_path()
    peak_text = f"{peak:.0f} TFLOP/s bf16 dense" if peak else "peak n/a"
    print(f"{kind} ({platform_name} x{count}, {peak_text}); jax {jax.__version__}", flush=True)
    print(HEADER, flush=True)
    start = time.perf_counter()
    for arch in args.archs:
        if time.perf_counter() - start > args.budget_s:
            record["skipped"].append(arch)
            print(f"{arch:<16} skipped: past --budget-s {args.budget_s:.0f}", flush=True)
            continue
        size = args.sizes[arch]
        batch = args.batch or default_batch(size)
        result = measure(arch, size, batch, args.steps, args.warmup, args.precision, args.host_data)
        if peak:
            result["share_of_peak"] = result["train_tflops_achieved"] / peak
        record["results"].append(result)
        print(format_result(result, peak), flush=True)
        write_json(path, record)
        keras.backend.clear_session()
        gc.collect()
    record["estimate"] = estimate_experiment(
        record["results"], args.epochs, args.images, PAPER["val_fraction"]
    )
    record["wall_s"] = time.perf_counter() - start
    write_json(path, record)
    estimate = record["estimate"]
    measured = len(record["results"])
    print(
        f"estimate, {measured} of {PAPER['architectures']} architectures measured: "
        f"{estimate['hours_total']:.1f} h for {args.epochs} epochs over {args.images} images "
        f"with validation ("
        + ", ".join(f"{a} {h:.1f} h" for a, h in estimate["hours_per_architecture"].items())
        + f"); run took {record['wall_s']:.0f} s; wrote {path}",
        flush=True,
    )
    return record


if __name__ == "__main__":
    main()
