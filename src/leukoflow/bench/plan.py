"""`leukoflow bench plan`: how long `snakemake -n` takes to plan the paper's config."""

import tempfile
from pathlib import Path

import numpy as np
import yaml

from leukoflow.bench.common import timed


def run(workflow: str = ".", folds: int = 5, repeats: int = 3) -> dict:
    """Wall time of `snakemake -n` for the paper's config (config/config.yaml, `cv.folds`).

    The workflow is copied to a fresh folder (no results, so every job is planned) and
    pointed at a small synthetic dataset of the real layout: the plan does not grow with
    the number of images.

    Args:
        workflow: the repository folder (Snakefile, workflow/, config/).
        folds: `cv.folds` of the planned config.
        repeats: dry runs timed.

    Returns:
        The figures: best and median seconds, the jobs planned (all, and `train`).

    Raises:
        LeukoflowError: `workflow` has no Snakefile, or the dry run failed.
    """
    from leukoflow.synth import generate_dataset
    from leukoflow.workflow_runs import copy_workflow, planned_jobs, run_snakemake

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
            seconds, result = timed(run_snakemake, work, "-n", "--configfile", "config/bench.yaml")
            times.append(seconds)
            jobs = planned_jobs(result)
    return {
        "plan_cv_folds": folds,
        "plan_jobs": sum(jobs.values()),
        "plan_train_jobs": jobs.get("train", 0),
        "plan_s_best": min(times),
        "plan_s_median": float(np.median(times)),
        "plan_repeats": repeats,
    }
