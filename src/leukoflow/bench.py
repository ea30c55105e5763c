"""Benchmarks of `leukoflow bench`: ingest, loader, inference, planning, DVC; the summary table.

Every function here returns a flat dict of figures (what `leukoflow bench KIND` prints and
writes to `results/bench/KIND.json`) and measures its baseline in the same run: the loader
against a plain copy of the same bytes, compiled inference against `model.predict` per image.
The work is done by the library functions the workflow runs (`leukoflow.ingest.ingest`,
`leukoflow.loader.TrainBatches`, `leukoflow.timing`, `leukoflow.bench_dvc.measure_dvc`,
`snakemake -n`); this module only sets up inputs and times them.
"""

import fnmatch
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs", "profiles")


def machine():
    """Where and when figures are measured: CPU model, cores, 1-minute load average, UTC time."""
    from leukoflow.timing import cpu_model

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "host": platform.node(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def synthetic_dataset(root, images, size=450, threads=1, seed=0):
    """A synthetic dataset in the C-NMC training layout with about `images` cells at `size` px.

    Subjects of 25 images each (at least 6 subjects), no preliminary-test set. Returns the
    number of images written.
    """
    from leukoflow.synth import generate_dataset

    per_subject = min(25, max(1, images // 6))
    summary = generate_dataset(
        root,
        subjects=max(6, round(images / per_subject)),
        images_per_subject=per_subject,
        size=size,
        seed=seed,
        threads=threads,
        prelim_subjects=0,
    )
    return summary["training_images"]


def ingest(images=600, size=450, threads=None):
    """Files/s of `leukoflow.ingest.ingest` (hash, decode, check) on synthetic BMPs.

    Measured with `threads` processes (default: all cores) and with one; the files are
    freshly written, so they are read from the page cache.
    """
    from leukoflow.ingest import ingest as ingest_dataset

    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-ingest-") as tmp:
        root = Path(tmp) / "data"
        n = synthetic_dataset(root, images, size, threads)
        megabytes = sum(p.stat().st_size for p in root.rglob("*.bmp")) / 1e6
        seconds = {}
        for workers in (threads, 1):
            start = time.perf_counter()
            result = ingest_dataset(root, threads=workers)
            seconds[workers] = time.perf_counter() - start
            if len(result.manifest) != n:
                raise LeukoflowError(f"ingest kept {len(result.manifest)} of {n} images")
    return {
        "ingest_files": n,
        "ingest_image_size": size,
        "ingest_processes": threads,
        "ingest_files_per_s": n / seconds[threads],
        "ingest_mb_per_s": megabytes / seconds[threads],
        "ingest_files_per_s_one_process": n / seconds[1],
    }


def memcpy_images_per_s(images, batch_size, batches, repeats=3):
    """The loader's ceiling: images/s of `np.copyto` of contiguous row blocks into one batch.

    `images`: uint8 `(N, s, s, 3)` (a memmap is fine), N >= batch_size; copies `batches`
    blocks of `batch_size` consecutive rows (wrapping around) into one preallocated array,
    the same bytes a loader epoch of `batches` batches delivers. Best of `repeats` passes.
    """
    n = len(images)
    if n < batch_size:
        raise LeukoflowError(f"{n} images: fewer than one batch of {batch_size}")
    out = np.empty((batch_size, *images.shape[1:]), dtype=images.dtype)
    starts = (np.arange(batches) * batch_size) % (n - batch_size + 1)
    best = np.inf
    for _ in range(repeats):
        begin = time.perf_counter()
        for start in starts:
            np.copyto(out, images[start : start + batch_size])
        best = min(best, time.perf_counter() - begin)
    return batches * batch_size / best


def loader(images=2000, size=224, batch_size=32, repeats=20):
    """Training-loader images/s (`TrainBatches`: shuffled rows, prefetch thread) on a store
    memory-mapped from disk, against `memcpy_images_per_s` of the same number of images.

    Both read from the page cache: the store is written, then read once, before timing.
    One epoch of each, `repeats` times in turn; the best of each is kept (an epoch of the
    default store takes tens of ms, so a busy machine needs many repeats).
    """
    from leukoflow.augment import write_synthetic_store
    from leukoflow.loader import TrainBatches, measure_throughput
    from leukoflow.stores import open_store

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-loader-") as tmp:
        pixels = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
        store = write_synthetic_store(tmp, pixels, np.arange(images) % 2)
        del pixels
        stored, index = open_store(store)
        batches = TrainBatches(stored, index["y"], batch_size, seed=0)
        memcpy_images_per_s(stored, batch_size, len(batches), repeats=1)  # into the page cache
        rates, ceilings = [], []
        for epoch in range(repeats):  # interleaved, so both see the same machine load
            rates.append(measure_throughput(batches, epoch))
            ceilings.append(memcpy_images_per_s(stored, batch_size, len(batches), repeats=1))
        rate, ceiling = max(rates), max(ceilings)
    megabytes = size * size * 3 / 1e6
    return {
        "loader_images": images,
        "loader_image_size": size,
        "loader_batch_size": batch_size,
        "loader_images_per_s": rate,
        "memcpy_images_per_s": ceiling,
        "loader_vs_memcpy": rate / ceiling,
        "loader_gb_per_s": rate * megabytes / 1000,
        "memcpy_gb_per_s": ceiling * megabytes / 1000,
    }


def architecture_names(archs):
    """The architectures of a comma-separated list, or every one for "all"."""
    from leukoflow.models.registry import ARCHITECTURES, get_spec

    if archs == "all":
        return list(ARCHITECTURES)
    return [get_spec(name.strip()).name for name in archs.split(",") if name.strip()]


def inference(archs="all", size=64, calls=30, batch_size=32, naive_calls=10):
    """CPU inference per architecture (random weights): batch-1 latency (median, p95) and
    batch throughput of the compiled function (`leukoflow.timing`), against `model.predict`
    called once per image (the naive path), at `size` px (0 = each one's native size).
    """
    import keras

    from leukoflow.models import build_model
    from leukoflow.models.registry import ARCHITECTURES
    from leukoflow.timing import measure_compiled, naive_predict_latency, resolve_jit

    figures = {"input_size": size or "native", "batch_size": batch_size, "calls": calls}
    jit = resolve_jit("auto")
    for arch in architecture_names(archs):
        side = size or ARCHITECTURES[arch].native_size
        keras.utils.set_random_seed(0)
        model = build_model(arch, side, weights="none")
        record = measure_compiled(model, 3, calls, batch_size, jit)
        naive = naive_predict_latency(model, calls=naive_calls, warmup=2)
        naive_rate = 1000 / naive["median"]
        figures.update(
            {
                f"{arch}_input_size": side,
                f"{arch}_latency_median_ms": record["latency_ms"]["median"],
                f"{arch}_latency_p95_ms": record["latency_ms"]["p95"],
                f"{arch}_batch{batch_size}_images_per_s": record["throughput_images_per_s"],
                f"{arch}_naive_predict_median_ms": naive["median"],
                f"{arch}_naive_predict_images_per_s": naive_rate,
                f"{arch}_latency_vs_naive": naive["median"] / record["latency_ms"]["median"],
                f"{arch}_throughput_vs_naive": record["throughput_images_per_s"] / naive_rate,
            }
        )
        log.info("%s: %s", arch, {k: v for k, v in figures.items() if k.startswith(arch)})
        del model
        keras.backend.clear_session()
    return figures


def copy_workflow(source, dest):
    """Copy the workflow files (`WORKFLOW_FILES`, not results) of `source` into `dest`."""
    source, dest = Path(source), Path(dest)
    if not (source / "Snakefile").is_file():
        raise LeukoflowError(f"{source}: no Snakefile; pass --workflow, the repository folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, dest / name)
        elif path.is_file():
            shutil.copy2(path, dest / name)
    return dest


def planned_jobs(text):
    """{rule: jobs} from the "Job stats" table of a snakemake dry run (without `all`)."""
    if "Job stats:" not in text:
        return {}
    jobs = {}
    for line in text.split("Job stats:", 1)[1].splitlines()[3:]:
        match = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not match or match[1] == "total":
            break
        if match[1] != "all":
            jobs[match[1]] = int(match[2])
    return jobs


def plan(workflow=".", folds=5, repeats=3):
    """Wall time of `snakemake -n` for the paper's config (config/config.yaml, `cv.folds`).

    The workflow is copied to a fresh folder (no results, so every job is planned) and
    pointed at a small synthetic dataset of the real layout: the plan does not grow with
    the number of images. Best and median of `repeats` runs, and the jobs planned.
    """
    from leukoflow.synth import generate_dataset

    snakemake = Path(sys.executable).parent / "snakemake"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-plan-") as tmp:
        work = copy_workflow(workflow, Path(tmp) / "wf")
        dataset = Path(tmp) / "C-NMC"
        generate_dataset(dataset, subjects=12, images_per_subject=2, size=32)
        config = yaml.safe_load((work / "config" / "config.yaml").read_text())
        config["dataset"]["path"] = str(dataset)
        config["cv"] = {"folds": folds}
        (work / "config" / "bench.yaml").write_text(yaml.safe_dump(config))
        times, jobs = [], {}
        for _ in range(repeats):
            start = time.perf_counter()
            done = subprocess.run(
                [str(snakemake), "-n", "--configfile", "config/bench.yaml"],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise LeukoflowError(f"snakemake -n failed:\n{done.stderr[-3000:]}")
            jobs = planned_jobs(done.stdout + done.stderr)
    return {
        "plan_cv_folds": folds,
        "plan_jobs": sum(jobs.values()),
        "plan_train_jobs": jobs.get("train", 0),
        "plan_s_best": min(times),
        "plan_s_median": float(np.median(times)),
        "plan_repeats": repeats,
    }


def dvc(images=1000, size=450, cache_types="copy,hardlink,symlink", dataset=None):
    """`leukoflow.bench_dvc.measure_dvc` on a synthetic dataset (or `dataset`), flattened:
    `<cache type>_<step>_s` and `_files_per_s`, and DVC time over a plain copy."""
    from leukoflow.bench_dvc import measure_dvc

    types = tuple(t.strip() for t in cache_types.split(",") if t.strip())
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-dvc-") as tmp:
        if dataset is None:
            dataset = Path(tmp) / "data"
            synthetic_dataset(dataset, images, size, os.cpu_count() or 1)
        result = measure_dvc(dataset, Path(tmp) / "work", cache_types=types)
    figures = {"dvc_files": result["files"], "dvc_mb": result["bytes"] / 1e6}
    for run in result["runs"]:
        kind = run["cache_type"]
        for step in ("copy", "add", "status", "push"):
            figures[f"{kind}_{step}_s"] = run[step]["s"]
            if "files_per_s" in run[step]:
                figures[f"{kind}_{step}_files_per_s"] = run[step]["files_per_s"]
        figures[f"{kind}_add_over_copy"] = run["add_over_copy"]
        figures[f"{kind}_push_over_copy"] = run["push_over_copy"]
    return figures


def summary_rows(kind, figures, patterns):
    """`(kind, key, value)` for every figure whose key matches one of `patterns` (fnmatch),
    in the figures' order; every figure when `patterns` is None."""
    return [
        (kind, key, value)
        for key, value in figures.items()
        if patterns is None or any(fnmatch.fnmatchcase(key, p) for p in patterns)
    ]


def format_value(value):
    """A figure as text: floats with 3 significant decimals at most, others as they are."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def format_summary(rows, header=""):
    """The summary rows as one Markdown table (readable as text)."""
    kind_w = max([4, *(len(r[0]) for r in rows)])
    key_w = max([6, *(len(r[1]) for r in rows)])
    value_w = max([5, *(len(format_value(r[2])) for r in rows)])
    lines = [header] if header else []
    lines.append(f"| {'kind':<{kind_w}} | {'figure':<{key_w}} | {'value':>{value_w}} |")
    lines.append(f"|{'-' * (kind_w + 2)}|{'-' * (key_w + 2)}|{'-' * (value_w + 1)}:|")
    for kind, key, value in rows:
        lines.append(f"| {kind:<{kind_w}} | {key:<{key_w}} | {format_value(value):>{value_w}} |")
    return "\n".join(lines)
