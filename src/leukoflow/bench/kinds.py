"""The kinds of `leukoflow bench`: their options, and running one or all of them.

Each kind is a module `leukoflow.bench.<kind>` whose `run(**options)` returns a flat dict of
figures, and one entry of `KINDS`: a help line and its options `(flag, type, default, help)`
(`run` takes them as keyword arguments: the flag without dashes, `-` as `_`; and the output
folder as `out` when it has that parameter). Optional keys: `summary`, the figures (fnmatch
patterns) shown in the summary table of `bench all`, and `quick`, the options `bench all
--quick` uses instead of the defaults. `run_all` runs every kind, then prints one summary
table and writes it to `OUT/summary.md`.
"""

import importlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from leukoflow.bench.common import format_summary, format_table, machine, summary_rows
from leukoflow.core.atomic import write_text
from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)

KINDS = {
    "ingest": {
        "help": "ingest files/s (hash, decode, check) on synthetic 450 px BMPs",
        "options": [
            ("--images", int, 600, "synthetic cells"),
            ("--size", int, 450, "side, px"),
            ("--threads", int, None, "worker processes (default: all cores)"),
        ],
        "summary": ["ingest_files_per_s", "ingest_files_per_s_one_process", "ingest_mb_per_s"],
    },
    "stain": {
        "help": "stain normalisation vs torchstain (speed, agreement, round trip, exposure sweep "
        "on real cells) and store throughput",
        "options": [
            ("--images", int, 20, "synthetic cells timed per method"),
            ("--size", int, 450, "side of the synthetic cells, px"),
            ("--stores-images", int, 200, "images written to a temporary store"),
            ("--store-size", int, 224, "side of the stored images, px"),
            ("--threads", int, None, "store worker processes (default: all cores)"),
            ("--repeats", int, 3, "timing passes (the best is kept)"),
            ("--sweep-size", int, 160, "side of the exposure sweep's cells, px (0: no sweep)"),
        ],
        "summary": [
            "macenko_ms_per_image",
            "torchstain_macenko_ms_per_image",
            "speedup_vs_torchstain",
            "reinhard_ms_per_image",
            "torchstain_reinhard_ms_per_image",
            "mean_abs_diff_vs_torchstain",
            "round_trip_macenko_*",
            "sweep_*macenko_cnmc_*",
            "stores_images_per_s",
        ],
    },
    "loader": {
        "help": "training loader images/s against numpy.copyto of the same bytes (the ceiling)",
        "options": [
            ("--images", int, 2000, "images in the temporary store"),
            ("--size", int, 224, "side, px"),
            ("--batch-size", int, 32, "images per batch"),
            ("--repeats", int, 20, "epochs timed, each against one copy pass (best kept)"),
        ],
        "summary": ["loader_images_per_s", "memcpy_images_per_s", "loader_vs_memcpy"],
    },
    "augment": {
        "help": "offline augmentation images/s",
        "options": [
            ("--images", int, 1000, "synthetic cells, one copy each"),
            ("--size", int, 224, "side, px"),
            ("--threads", int, None, "worker processes (default: all cores)"),
        ],
        "summary": [
            "augment_images_per_s",
            "augment_images_per_s_one_process",
            "augment_cpu_ms_per_image",
        ],
    },
    "inference": {
        "help": "CPU latency (batch 1) and throughput (batch 32) per architecture vs model.predict",
        "options": [
            ("--archs", str, "all", "comma-separated architectures, or all"),
            ("--size", int, 64, "input side, px (0: each architecture's native size)"),
            ("--calls", int, 30, "timed batch-1 calls (batch calls: max(10, calls / 5))"),
            ("--batch-size", int, 32, "throughput batch"),
            ("--naive-calls", int, 10, "timed model.predict calls"),
        ],
        "summary": [
            "*_latency_median_ms",
            "*_latency_p95_ms",
            "*_batch32_images_per_s",
            "*_naive_predict_images_per_s",
            "*_throughput_vs_naive",
        ],
    },
    "predict": {
        "help": "leukoflow predict from BMP files vs the bare model and a naive loop, "
        "Keras and ONNX Runtime in the same run",
        "options": [
            ("--images", int, 100, "synthetic 450 px cells"),
            ("--threads", int, None, "preparation threads (default: all cores)"),
            ("--model-threads", int, None, "TensorFlow and ONNX Runtime intra-op threads"),
            ("--repeats", int, 2, "timing rounds (the best is kept)"),
        ],
        "summary": [
            "*_predict_images_per_s",
            "*_predict_vs_bare",
            "*_predict_vs_naive",
            "*_onnx_vs_keras_bare",
            "*_onnx_vs_keras_predict",
        ],
    },
    "serve": {
        "help": "leukoflow serve under load on 127.0.0.1 (concurrent clients, multipart "
        "requests): latency, images/s against predict's, no error and no lost image",
        "options": [
            ("--clients", int, 32, "concurrent clients"),
            ("--requests", int, 20, "requests per client"),
            ("--per-request", int, 4, "images per request"),
            ("--cells", int, 64, "distinct synthetic 450 px cells, sent round robin"),
            ("--size", int, 128, "SimpleNet's input side, px"),
            ("--threads", int, None, "preparation threads (default: all cores)"),
        ],
        "summary": [
            "serve_latency_p50_ms",
            "serve_latency_p95_ms",
            "serve_images_per_s",
            "predict_images_per_s",
            "serve_vs_predict",
            "serve_errors",
            "serve_lost_images",
        ],
        "quick": {"clients": 8, "requests": 5},
    },
    "plan": {
        "help": "snakemake -n planning time of config/config.yaml with cross-validation, and "
        "with the full 3 x 3 x 2 ablation matrix of its six architectures",
        "options": [
            ("--workflow", str, ".", "the repository folder (Snakefile, workflow/, config/)"),
            ("--folds", int, 5, "cv.folds"),
            ("--repeats", int, 3, "dry runs timed"),
        ],
        "summary": ["plan_jobs", "plan_s_median", "ablation_jobs", "ablation_plan_s_median"],
    },
    "dvc": {
        "help": "dvc add / status / push of a dataset folder against a plain copy",
        "options": [
            ("--images", int, 1000, "synthetic 450 px cells (when no --dataset)"),
            ("--size", int, 450, "side, px"),
            ("--cache-types", str, "copy,hardlink,symlink", "DVC cache.type values"),
            ("--dataset", str, None, "measure this folder instead"),
        ],
        "summary": ["dvc_files", "*_add_files_per_s", "*_add_over_copy", "*_push_over_copy"],
    },
    "prepare": {
        "help": "the workflow's ingest, split, stain reference, stores (snakemake) at 1/8 .. 1/1"
        " of the data",
        "options": [
            ("--images", int, 10661, "synthetic set size (10661: synth --full-scale)"),
            ("--fractions", str, "0.125,0.25,0.5,1", "fractions of the subjects prepared"),
            ("--size", int, 224, "store side, px"),
            ("--threads", int, None, "worker processes (default: all cores)"),
            ("--dataset", str, None, "prepare this C-NMC folder instead of a synthetic set"),
            ("--work", str, None, "folder for temporary files (default: system temp)"),
            ("--workflow", str, ".", "the repository folder (Snakefile, workflow/, config/)"),
        ],
        "summary": [
            "prepare_images",
            "prepare_wall_s",
            "prepare_cpu_s",
            "prepare_images_per_s",
            "prepare_peak_tree_mb",
            "prepare_max_rss_mb",
            "prepare_snakemake_noop_s",
            "prepare_snakemake_overhead_s",
            "scaling_slope_ms_per_image",
            "scaling_intercept_s",
            "scaling_r2",
            "scaling_max_abs_deviation",
            "scaling_cpu_slope_ms_per_image",
            "scaling_cpu_intercept_s",
            "scaling_cpu_r2",
        ],
        "quick": {"images": 2400, "fractions": "0.5,1"},
    },
}


def kind_function(kind: str) -> Callable[..., dict]:
    """The `run` function of `kind` (its module is imported now)."""
    return importlib.import_module(f"leukoflow.bench.{kind}").run


def option_name(flag: str) -> str:
    """The keyword argument of an option flag: `--batch-size` -> `batch_size`."""
    return flag[2:].replace("-", "_")


def default_options(kind: str, quick: bool = False) -> dict:
    """The options of `kind` for `bench all`: its defaults, or its `quick` ones."""
    spec = KINDS[kind]
    options = {option_name(flag): default for flag, _, default, _ in spec["options"]}
    if quick:
        options.update(spec.get("quick", {}))
    return options


def run_kind(kind: str, options: dict, out: str | Path) -> dict:
    """Run one kind with `options`, print its table, write `<out>/<kind>.json`.

    Args:
        kind: a key of `KINDS`.
        options: its keyword arguments.
        out: folder of the JSON file (and of what the kind writes itself).

    Returns:
        Its figures, with the machine (CPU, cores, time) and the 1-minute load average
        before and after.
    """
    function = kind_function(kind)
    if "out" in inspect.signature(function).parameters:
        options = {**options, "out": out}
    before = machine()
    figures = function(**options)
    figures.update(
        load_avg_1min_before=before["load_avg_1min"],
        load_avg_1min_after=round(os.getloadavg()[0], 2),
        cpu_model=before["cpu_model"],
        cores=before["cores"],
        time_utc=before["time_utc"],
    )
    print(format_table(kind, figures), flush=True)
    path = Path(out) / f"{kind}.json"
    write_text(path, json.dumps(figures, indent=2) + "\n")
    log.info("wrote %s", path)
    return figures


def run_all(out: str | Path, quick: bool = False, skip: Iterable[str] = ()) -> None:
    """Every kind but `skip`; then one summary table, printed and written to `out/summary.md`.

    A skipped kind whose `out/KIND.json` exists shows those figures, marked as an earlier
    run. A kind that fails is reported in the table and the others still run.

    Raises:
        LeukoflowError: at the end, if any kind failed.
    """
    rows, failed = [], []
    start = machine()
    for kind, spec in KINDS.items():
        if kind in skip:
            earlier = Path(out) / f"{kind}.json"
            if earlier.is_file():  # its figures from an earlier run, labelled as such
                figures = json.loads(earlier.read_text())
                label = f"{kind} (earlier run)"
                rows.append((label, "time_utc", figures.get("time_utc", "?")))
                rows.extend(summary_rows(label, figures, spec.get("summary")))
            continue
        try:
            figures = run_kind(kind, default_options(kind, quick), out)
        except Exception as error:  # reported in the summary; the other kinds still run
            log.exception("bench %s failed", kind)
            failed.append(kind)
            rows.append((kind, "FAILED", f"{type(error).__name__}: {error}".splitlines()[0]))
            continue
        rows.extend(summary_rows(kind, figures, spec.get("summary")))
        load = f"{figures['load_avg_1min_before']} / {figures['load_avg_1min_after']}"
        rows.append((kind, "load_avg_1min_before/after", load))
    header = (
        f"leukoflow bench all{' --quick' if quick else ''}: {start['cpu_model']}, "
        f"{start['cores']} cores, started {start['time_utc']}"
    )
    table = format_summary(rows, header)
    print("\n" + table, flush=True)
    write_text(Path(out) / "summary.md", table + "\n")
    if failed:
        raise LeukoflowError(f"bench kinds failed: {', '.join(failed)} (see the log above)")
