"""`leukoflow bench plan`: how long `snakemake -n` takes to plan the paper's config, with
cross-validation, and with the full ablation matrix."""

import tempfile
from pathlib import Path

import numpy as np
import yaml

from leukoflow.bench.common import timed
from leukoflow.evaluate.ablation import FACTORS


def full_ablation(config: dict) -> dict:
    """`config` with the ablation of every factor's every level for every architecture run
    (3 stain methods x 3 augmentations x 2 splits = 18 combinations) and no cross-validation."""
    block = {
        "architectures": list(config["architectures"]),
        **{f: list(v) for f, v in FACTORS.items()},
    }
    return {**config, "cv": {"folds": 0}, "ablation": block}


def _time_plans(work, name, config, repeats):
    """Best and median seconds of `snakemake -n` with `config`, and the jobs it plans."""
    from leukoflow.core.workflow_runs import planned_jobs, run_snakemake

    (work / "config" / name).write_text(yaml.safe_dump(config))
    times, jobs = [], {}
    for _ in range(repeats):
        seconds, result = timed(run_snakemake, work, "-n", "--configfile", f"config/{name}")
        times.append(seconds)
        jobs = planned_jobs(result)
    return min(times), float(np.median(times)), jobs


def run(workflow: str = ".", folds: int = 5, repeats: int = 3) -> dict:
    """Wall time of `snakemake -n` for the paper's config, with CV and with the ablation.

    The workflow is copied to a fresh folder (no results, so every job is planned) and
    pointed at a small synthetic dataset of the real layout: the plan does not grow with
    the number of images. Two configs are planned: config/config.yaml with `cv.folds`, and
    config/config.yaml with the full ablation matrix of its six architectures
    (`full_ablation`: 18 combinations, 108 models less the six main ones).

    Args:
        workflow: the repository folder (Snakefile, workflow/, config/).
        folds: `cv.folds` of the first planned config.
        repeats: dry runs timed of each.

    Returns:
        The figures: best and median seconds, the jobs planned (all, and `train`), for each.

    Raises:
        LeukoflowError: `workflow` has no Snakefile, or a dry run failed.
    """
    from leukoflow.core.workflow_runs import copy_workflow
    from leukoflow.data.synth import generate_dataset

    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-plan-") as tmp:
        work = copy_workflow(workflow, Path(tmp) / "wf")
        dataset = Path(tmp) / "C-NMC"
        generate_dataset(dataset, subjects=12, images_per_subject=2, size=32)
        config = yaml.safe_load((work / "config" / "config.yaml").read_text())
        config["dataset"]["path"] = str(dataset)
        config["cv"] = {"folds": folds}
        best, median, jobs = _time_plans(work, "bench.yaml", config, repeats)
        ablation = full_ablation(config)
        ab_best, ab_median, ab_jobs = _time_plans(work, "ablation.yaml", ablation, repeats)
    return {
        "plan_cv_folds": folds,
        "plan_jobs": sum(jobs.values()),
        "plan_train_jobs": jobs.get("train", 0),
        "plan_s_best": best,
        "plan_s_median": median,
        "plan_repeats": repeats,
        "ablation_architectures": len(ablation["ablation"]["architectures"]),
        "ablation_combinations": int(np.prod([len(v) for v in FACTORS.values()])),
        "ablation_jobs": sum(ab_jobs.values()),
        "ablation_train_jobs": ab_jobs.get("train", 0),
        "ablation_plan_s_best": ab_best,
        "ablation_plan_s_median": ab_median,
    }
