"""`leukoflow bench prepare`: the workflow's data preparation, timed, at several scales.

One preparation = the workflow's own data jobs, run by Snakemake on a copy of the workflow
(`leukoflow.core.workflow_runs.copy_workflow`) with a config written for the dataset
(`bench_config`: the dataset folder, a holdout split by subject, a Macenko reference fitted
on 200 training images, one store size). Snakemake runs once per step, for that step's
targets (`step_targets`): the manifest (`ingest`), the split, the stain reference (with its
spread and example figure) and the stores of train, val and test. Each step's wall time,
CPU time (`wait4` rusage: Snakemake, the job and its workers), the peak resident memory of
its largest process and of its whole process tree (sampled from /proc every 0.1 s, Linux)
are recorded. `stain_reference` and `stores` are cacheable rules, which Snakemake allows no
`benchmark:` file, so every step is timed from outside.

Snakemake's own cost: each step's figures include one Snakemake start-up (imports, parsing
the workflow, validating the config, building the DAG, checking the files). After the
steps, one more run asks for every target again and has nothing to do; its figures are
reported as `snakemake_noop`, and `snakemake_overhead_s` (its wall time times the number of
steps) estimates what running through Snakemake adds to the bare commands.

Scaling: the same preparation on nested subsets of the dataset's subjects
(`leukoflow.bench.scaling`); the points, least-squares lines (seconds = intercept + slope x
images, wall and CPU) and a plot go to `scaling.json` and `scaling.png`. The dataset is by
default the full-scale synthetic C-NMC set (`leukoflow synth --full-scale`, 10,661 images at
450 px); its generation is not timed.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from leukoflow.bench.common import machine, run_measured, synthetic_dataset
from leukoflow.bench.scaling import linear_fit, link_subset, plot_scaling
from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)

FULL_SCALE_IMAGES = 10661
SUBSETS = ("train", "val", "test")
CONFIG = "bench_prepare.yaml"  # written into the copy's config/ folder
MANIFEST = "results/ingest/manifest.csv"
GROUPS = {  # the steps summed into one line of the plot
    "ingest": ["ingest"],
    "split + stain reference": ["split", "stain_reference"],
    "stores (3 subsets)": [f"stores_{subset}" for subset in SUBSETS],
}


def bench_config(dataset: str | Path, size: int) -> dict:
    """The workflow config of one preparation; the schema fills in the rest.

    Args:
        dataset: the dataset folder (C-NMC layout).
        size: the store size, px (SimpleNet's input size, the one architecture).

    Returns:
        The config: dataset folder, bad files quarantined, a holdout split by subject, a
        Macenko reference on 200 training images, SimpleNet at `size` px from scratch.
    """
    return {
        "dataset": {"source": "folder", "path": str(Path(dataset).resolve())},
        "ingest": {"on_bad": "quarantine"},
        "split": {"mode": "holdout", "seed": 0},
        "stain": {"method": "macenko", "reference_images": 200},
        "architectures": {"SimpleNet": {"weights": "none", "input_size": size}},
    }


def step_targets(size: int) -> list[tuple[str, list[str]]]:
    """The preparation's steps, in order: (step name, the workflow targets it asks for)."""
    steps = [
        ("ingest", [MANIFEST]),
        ("split", ["results/split/split.csv"]),
        ("stain_reference", ["results/main/stain/reference.json"]),
    ]
    steps += [(f"stores_{s}", [f"results/main/stores/{size}px/{s}.npy"]) for s in SUBSETS]
    return steps


def prepare(
    workflow: str | Path, dataset: str | Path, work: str | Path, size: int = 224, threads: int = 1
) -> dict:
    """Run the preparation of `dataset` through Snakemake on a copy of `workflow` in `work`.

    Args:
        workflow: the repository folder (Snakefile, workflow/, config/).
        dataset: the dataset folder.
        work: where the workflow is copied and run (its results and logs stay there).
        size: the store size, px.
        threads: Snakemake's `--cores` (each step's job takes them all).

    Returns:
        {"steps": {step: `run_measured` figures}, "snakemake_noop": the same for the run
        that has nothing to do, "snakemake_overhead_s", "images", "total_s", "cpu_s",
        "max_rss_mb", "peak_tree_mb", "images_per_s"}.

    Raises:
        LeukoflowError: `workflow` has no Snakefile, a step failed, or the last run still
            had jobs to do.
    """
    from leukoflow.core.workflow_runs import copy_workflow, snakemake_command, snakemake_env

    work = copy_workflow(workflow, work, {CONFIG: bench_config(dataset, size)})
    env = snakemake_env()
    options = ["--cores", str(threads), "--configfile", f"config/{CONFIG}"]
    steps = step_targets(size)
    figures = {"steps": {}}
    for name, targets in steps:
        command = snakemake_command(*targets, *options)  # --configfile takes lists
        step = run_measured(command, work / f"bench-{name}.log", env=env, cwd=work)
        figures["steps"][name] = step
        log.info(
            "%s: %.1f s (CPU %.1f s), max RSS %.0f MB, tree peak %.0f MB",
            name,
            *(step[k] for k in ("s", "cpu_s", "max_rss_mb", "peak_tree_mb")),
        )
    every_target = [target for _, targets in steps for target in targets]
    noop_log = work / "bench-noop.log"
    noop = run_measured(snakemake_command(*every_target, *options), noop_log, env=env, cwd=work)
    if "Job stats:" in noop_log.read_text():
        raise LeukoflowError(f"{noop_log}: the last run was to do nothing but ran jobs")
    with open(work / MANIFEST) as manifest:
        images = sum(1 for _ in manifest) - 1
    measured = figures["steps"].values()
    figures.update(
        snakemake_noop=noop,
        snakemake_overhead_s=len(steps) * noop["s"],
        images=images,
        total_s=sum(s["s"] for s in measured),
        cpu_s=sum(s["cpu_s"] for s in measured),
        max_rss_mb=max(s["max_rss_mb"] for s in measured),
        peak_tree_mb=max(s["peak_tree_mb"] for s in measured),
    )
    figures["images_per_s"] = images / figures["total_s"]
    return figures


def _parse_fractions(text):
    fractions = sorted({float(f) for f in str(text).split(",") if f.strip()})
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise LeukoflowError(f"--fractions {text!r}: give fractions in (0, 1], e.g. 0.25,0.5,1")
    return fractions


def _dataset(dataset, images, work, threads):
    """The dataset to prepare: `dataset`, or a synthetic one of `images` cells made in `work`."""
    if dataset is not None:
        return Path(dataset)
    from leukoflow.data.synth import generate_dataset

    root = Path(work) / "dataset"
    start = time.perf_counter()
    if images == FULL_SCALE_IMAGES:
        generate_dataset(root, full_scale=True, threads=threads, prelim_subjects=0)
    else:
        synthetic_dataset(root, images, 450, threads)
    log.info("synthetic dataset: %.0f s (not timed)", time.perf_counter() - start)
    return root


def run(
    images: int = FULL_SCALE_IMAGES,
    fractions: str = "0.125,0.25,0.5,1",
    size: int = 224,
    threads: int | None = None,
    dataset: str | None = None,
    work: str | None = None,
    workflow: str = ".",
    out: str | Path = "results/bench",
) -> dict:
    """`leukoflow bench prepare`: the preparation at each fraction of the dataset's subjects.

    Writes `out/scaling.json` (every point, both fits, the machine) and `out/scaling.png`.

    Args:
        images: size of the synthetic dataset made when no `dataset` is given, 450 px cells
            (10,661 = `synth --full-scale`); it is made in `work` and deleted afterwards.
        fractions: comma-separated fractions of the subjects, in (0, 1].
        size: the store size, px.
        threads: Snakemake's `--cores` (default: all cores).
        dataset: a C-NMC-layout folder to prepare instead of a synthetic one.
        work: folder for the temporary files (default: the system's temporary folder).
        workflow: the repository folder (Snakefile, workflow/, config/).
        out: folder of `scaling.json` and `scaling.png`.

    Returns:
        The figures of the largest fraction (`prepare_*`, with each step's wall time and
        Snakemake's no-op run) and of the linear fits (`scaling_*`), flat.

    Raises:
        LeukoflowError: bad `fractions`, or a preparation failed.
    """
    from leukoflow.core.atomic import write_text

    threads = threads or os.cpu_count() or 1
    points = []
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-prepare-", dir=work) as tmp:
        tmp = Path(tmp).resolve()
        source = _dataset(dataset, images, tmp, threads)
        for fraction in _parse_fractions(fractions):
            folder = tmp / f"fraction-{fraction:g}"
            linked, subjects = link_subset(source, folder / "data", fraction)
            figures = prepare(workflow, folder / "data", folder / "wf", size, threads)
            figures.update(fraction=fraction, subjects=subjects, linked_images=linked)
            points.append(figures)
            log.info(
                "fraction %g: %d images, %.1f s (Snakemake no-op %.1f s), tree peak %.0f MB",
                fraction,
                figures["images"],
                figures["total_s"],
                figures["snakemake_noop"]["s"],
                figures["peak_tree_mb"],
            )
            shutil.rmtree(folder / "wf" / "results" / "main" / "stores")  # up to 1.6 GB
    counts = [p["images"] for p in points]
    fit = linear_fit(counts, [p["total_s"] for p in points])
    cpu_fit = linear_fit(counts, [p["cpu_s"] for p in points])
    record = {"store_size": size, "threads": threads, "points": points, "fit": fit}
    record["cpu_fit"] = cpu_fit
    record["machine"] = machine()
    write_text(Path(out) / "scaling.json", json.dumps(record, indent=2) + "\n")
    plot_scaling(points, {"s": fit, "cpu_s": cpu_fit}, GROUPS, Path(out) / "scaling.png")
    return flat_figures(points[-1], size, threads, fit, cpu_fit, len(points))


def flat_figures(
    full: dict, size: int, threads: int, fit: dict, cpu_fit: dict, points: int
) -> dict:
    """The flat figures of `run`: the largest preparation `full` and the fits."""
    noop = full["snakemake_noop"]
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
        "prepare_snakemake_noop_s": noop["s"],
        "prepare_snakemake_noop_cpu_s": noop["cpu_s"],
        "prepare_snakemake_noop_max_rss_mb": noop["max_rss_mb"],
        "prepare_snakemake_overhead_s": full["snakemake_overhead_s"],
        "prepare_wall_s_less_overhead": full["total_s"] - full["snakemake_overhead_s"],
    }
    flat.update({f"prepare_{name}_s": step["s"] for name, step in full["steps"].items()})
    flat.update(
        scaling_points=points,
        scaling_slope_ms_per_image=fit["slope_ms_per_image"],
        scaling_intercept_s=fit["intercept_s"],
        scaling_r2=fit["r2"],
        scaling_max_abs_deviation=max(abs(d) for d in fit["deviation"]),
        scaling_cpu_slope_ms_per_image=cpu_fit["slope_ms_per_image"],
        scaling_cpu_intercept_s=cpu_fit["intercept_s"],
        scaling_cpu_r2=cpu_fit["r2"],
    )
    return flat
