"""`leukoflow bench prepare`: the data preparation of the workflow, timed, at several scales.

One preparation = the workflow's data jobs, run as the real CLI commands in subprocesses:
`leukoflow ingest`, `split` (holdout by subject), `stain-reference` (200 training images,
spread and example figure, as the rule does) and `stores` for train, val and test at one
store size. Each step's wall time, CPU time (`wait4` rusage, workers included), the peak
resident memory of its largest process and the peak of its whole process tree (both
sampled from /proc every 0.1 s, Linux) are recorded.

Scaling: the same preparation on nested subsets of the dataset's subjects (each class's
subjects in a seeded order, the first `fraction` of them, hard-linked into a folder of the
same layout); the points, a least-squares line (seconds = intercept + slope x images) and a
plot go to `scaling.json` and `scaling.png`. The dataset is by default the full-scale
synthetic C-NMC set (`leukoflow synth --full-scale`, 10,661 images at 450 px); its
generation is not timed.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

FULL_SCALE_IMAGES = 10661
SUBSETS = ("train", "val", "test")
CLI = [sys.executable, "-c", "import sys; from leukoflow.cli import main; sys.exit(main())"]


def _children(parent_of):
    tree = {}
    for pid, ppid in parent_of.items():
        tree.setdefault(ppid, []).append(pid)
    return tree


def _peak_rss_bytes(pid):
    """The peak resident memory (VmHWM) of process `pid` so far, bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(root):
    """(current resident memory of process `root` and all its descendants summed, the
    largest peak resident memory among them), in bytes, from /proc (Linux)."""
    parent_of, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/statm") as handle:
                rss[int(entry.name)] = int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        parent_of[int(entry.name)] = int(fields[1])
    tree, total, largest, todo = _children(parent_of), 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        largest = max(largest, _peak_rss_bytes(pid))
        todo.extend(tree.get(pid, []))
    return total, largest


def run_measured(args, log_path, interval=0.1):
    """Run `leukoflow ARGS` in a subprocess; a dict: wall seconds `s`, CPU seconds `cpu_s`
    (user + system, its worker processes included), `max_rss_mb` (the largest peak of one
    process) and `peak_tree_mb` (the whole process tree). Memory is sampled from /proc every
    `interval` s (rusage's maxrss would include the parent's memory at fork). Output goes
    to `log_path`; a failure raises with its tail."""
    with open(log_path, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT)
        peaks, done = [0, 0], threading.Event()

        def sample():
            while not done.wait(interval):
                total, largest = tree_memory(process.pid)
                peaks[:] = max(peaks[0], total), max(peaks[1], largest)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = Path(log_path).read_text()[-2000:]
        raise LeukoflowError(f"leukoflow {' '.join(args)} failed ({process.returncode}):\n{tail}")
    return {
        "s": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": peaks[1] / 2**20,
        "peak_tree_mb": max(peaks) / 2**20,
    }


def prepare_steps(dataset, work, size, threads):
    """The preparation as (step name, CLI arguments), in order; outputs under `work`."""
    work = Path(work)
    stores = work / "stores" / f"{size}px"
    steps = [
        (
            "ingest",
            ["ingest", str(dataset), "--out", str(work / "manifest.csv"), "--quarantine",
             str(work / "quarantine.csv"), "--on-bad", "quarantine", "--threads", str(threads)],
        ),
        ("split", ["split", str(work / "manifest.csv"), "--out", str(work / "split.csv")]),
        (
            "stain_reference",
            ["stain-reference", str(work / "split.csv"), "--dataset", str(dataset), "--out",
             str(work / "reference.json"), "--spread", str(work / "spread.json"),
             "--examples", str(work / "examples.png")],
        ),
    ]  # fmt: skip
    for subset in SUBSETS:
        steps.append(
            (
                f"stores_{subset}",
                ["stores", str(work / "split.csv"), "--dataset", str(dataset), "--reference",
                 str(work / "reference.json"), "--subset", subset, "--size", str(size),
                 "--out", str(stores / f"{subset}.npy"), "--threads", str(threads)],
            )
        )  # fmt: skip
    return steps


def prepare(dataset, work, size=224, threads=1):
    """Run the preparation of `dataset` in `work`; a dict of per-step and total figures."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    figures = {"steps": {}}
    for name, args in prepare_steps(dataset, work, size, threads):
        step = figures["steps"][name] = run_measured(args, work / f"{name}.log")
        log.info(
            "%s: %.1f s (CPU %.1f s), max RSS %.0f MB, tree peak %.0f MB",
            name,
            *(step[k] for k in ("s", "cpu_s", "max_rss_mb", "peak_tree_mb")),
        )
    steps = figures["steps"].values()
    with open(work / "manifest.csv") as manifest:
        images = sum(1 for _ in manifest) - 1
    figures.update(
        images=images,
        total_s=sum(s["s"] for s in steps),
        cpu_s=sum(s["cpu_s"] for s in steps),
        max_rss_mb=max(s["max_rss_mb"] for s in steps),
        peak_tree_mb=max(s["peak_tree_mb"] for s in steps),
    )
    figures["images_per_s"] = images / figures["total_s"]
    return figures


def subject_subset(candidates, fraction, seed=0):
    """The subjects of the first `fraction` (rounded up, >= 1) of each class's subjects, in a
    seeded order, so subsets at growing fractions are nested. `candidates`: (label, subject)."""
    chosen = set()
    rng = np.random.default_rng(seed)
    for label in sorted({label for label, _ in candidates}):
        subjects = sorted({s for lab, s in candidates if lab == label})
        order = rng.permutation(len(subjects))
        count = max(1, int(np.ceil(fraction * len(subjects) - 1e-9)))
        chosen.update(subjects[i] for i in order[:count])
    return chosen


def link_subset(dataset, dest, fraction, seed=0):
    """Hard-link the training images of a `subject_subset` of `dataset` into `dest` (same
    layout; symbolic links across file systems); (images, subjects) linked. Only the
    training folders are used (the preliminary-test set has no subject in its file names)."""
    from leukoflow.ingest import find_candidates

    candidates = [
        c
        for c in find_candidates(dataset)[0]
        if c.subject and c.path.startswith("training_data/") and not c.problem
    ]
    if not candidates:
        raise LeukoflowError(f"{dataset}: no training images of the C-NMC layout")
    subjects = subject_subset([(c.label, c.subject) for c in candidates], fraction, seed)
    images = 0
    for c in candidates:
        if c.subject in subjects:
            target = Path(dest) / c.path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(Path(dataset) / c.path, target)
            except OSError:  # another file system
                os.symlink((Path(dataset) / c.path).resolve(), target)
            images += 1
    return images, len(subjects)


def linear_fit(images, seconds):
    """Least-squares line seconds = intercept + slope x images; slope, intercept, R², and the
    relative deviation of every point from the line."""
    x, y = np.asarray(images, float), np.asarray(seconds, float)
    slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (y[0] / x[0], 0.0)
    fitted = intercept + slope * x
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum((y - fitted) ** 2) / total if total > 0 else 1.0
    return {
        "slope_ms_per_image": 1000 * float(slope),
        "intercept_s": float(intercept),
        "r2": float(r2),
        "deviation": [float(d) for d in (y - fitted) / fitted],
    }


def plot_scaling(points, fits, path):
    """Wall time (left) and CPU time (right) against images: the totals with their fitted
    lines (`fits`: {"s": wall fit, "cpu_s": CPU fit}) and each step; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leukoflow.atomic import atomic_path

    images = np.array([p["images"] for p in points])
    line = np.linspace(0, images.max() * 1.05, 50)
    groups = {"ingest": ["ingest"], "split + stain reference": ["split", "stain_reference"]}
    groups["stores (3 subsets)"] = [f"stores_{s}" for s in SUBSETS]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (key, fit), title in zip(axes, fits.items(), ("wall time", "CPU time")):
        total = [sum(p["steps"][n][key] for n in p["steps"]) for p in points]
        ax.plot(images, total, "o", color="black", label="total")
        ax.plot(
            line,
            fit["intercept_s"] + fit["slope_ms_per_image"] / 1000 * line,
            "-",
            color="black",
            lw=1,
            label=f"fit: {fit['intercept_s']:.1f} s + {fit['slope_ms_per_image']:.2f} ms/image"
            f" (R² {fit['r2']:.3f})",
        )
        for label, names in groups.items():
            values = [sum(p["steps"][n][key] for n in names) for p in points]
            ax.plot(images, values, ".--", lw=1, label=label)
        ax.set_xlabel("images")
        ax.set_ylabel(f"{title}, s")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_title(f"Data preparation, {title}")
        ax.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)


def _parse_fractions(text):
    fractions = sorted({float(f) for f in str(text).split(",") if f.strip()})
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise LeukoflowError(f"--fractions {text!r}: give fractions in (0, 1], e.g. 0.25,0.5,1")
    return fractions


def _dataset(dataset, images, work, threads):
    """The dataset to prepare: `dataset`, or a synthetic one of `images` cells made in `work`."""
    if dataset is not None:
        return Path(dataset)
    from leukoflow.bench import synthetic_dataset
    from leukoflow.synth import generate_dataset

    root = Path(work) / "dataset"
    start = time.perf_counter()
    if images == FULL_SCALE_IMAGES:
        generate_dataset(root, full_scale=True, threads=threads, prelim_subjects=0)
    else:
        synthetic_dataset(root, images, 450, threads)
    log.info("synthetic dataset: %.0f s (not timed)", time.perf_counter() - start)
    return root


def run(
    images=FULL_SCALE_IMAGES,
    fractions="0.125,0.25,0.5,1",
    size=224,
    threads=None,
    dataset=None,
    work=None,
    out="results/bench",
):
    """`leukoflow bench prepare`: the preparation at each fraction of the dataset's subjects.

    `dataset`: a C-NMC-layout folder; None = a synthetic one of `images` cells at 450 px
    (10,661 = `synth --full-scale`), made in `work` (default: a temporary folder) and
    deleted afterwards. Writes `out/scaling.json` and `out/scaling.png`; returns the figures
    of the largest fraction and of the linear fit as a flat dict.
    """
    from leukoflow.atomic import write_text
    from leukoflow.bench import machine

    threads = threads or os.cpu_count() or 1
    points = []
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-prepare-", dir=work) as tmp:
        source = _dataset(dataset, images, tmp, threads)
        for fraction in _parse_fractions(fractions):
            folder = Path(tmp) / f"fraction-{fraction:g}"
            linked, subjects = link_subset(source, folder / "data", fraction)
            figures = prepare(folder / "data", folder / "work", size, threads)
            figures.update(fraction=fraction, subjects=subjects, linked_images=linked)
            points.append(figures)
            log.info(
                "fraction %g: %d images, %.1f s, tree peak %.0f MB",
                fraction,
                figures["images"],
                figures["total_s"],
                figures["peak_tree_mb"],
            )
            shutil.rmtree(folder / "work" / "stores", ignore_errors=True)  # up to 1.6 GB
    images = [p["images"] for p in points]
    fit = linear_fit(images, [p["total_s"] for p in points])
    cpu_fit = linear_fit(images, [p["cpu_s"] for p in points])
    record = {"store_size": size, "threads": threads, "points": points, "fit": fit}
    record["cpu_fit"] = cpu_fit
    record["machine"] = machine()
    write_text(Path(out) / "scaling.json", json.dumps(record, indent=2) + "\n")
    plot_scaling(points, {"s": fit, "cpu_s": cpu_fit}, Path(out) / "scaling.png")
    full = points[-1]
    flat = {
        "prepare_images": full["images"],
        "prepare_subjects": full["subjects"],
        "prepare_store_size": size,
        "prepare_processes": threads,
        "prepare_wall_s": full["total_s"],
        "prepare_cpu_s": full["cpu_s"],
        "prepare_images_per_s": full["images_per_s"],
        "prepare_peak_tree_mb": full["peak_tree_mb"],
        "prepare_max_rss_mb": full["max_rss_mb"],
    }
    flat.update({f"prepare_{name}_s": step["s"] for name, step in full["steps"].items()})
    flat.update(
        scaling_points=len(points),
        scaling_slope_ms_per_image=fit["slope_ms_per_image"],
        scaling_intercept_s=fit["intercept_s"],
        scaling_r2=fit["r2"],
        scaling_max_abs_deviation=max(abs(d) for d in fit["deviation"]),
        scaling_cpu_slope_ms_per_image=cpu_fit["slope_ms_per_image"],
        scaling_cpu_intercept_s=cpu_fit["intercept_s"],
        scaling_cpu_r2=cpu_fit["r2"],
    )
    return flat
