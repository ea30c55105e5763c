"""Workflow-level test helpers: a copy of the workflow in a temporary folder, snakemake runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cells import write_cell

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "envs"]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"


def copy_workflow(dest):
    """Copy the workflow (not results) into `dest`, with the tiny config as config/tiny.yaml."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest / name)
    shutil.copy2(TINY, dest / "config" / "tiny.yaml")
    return dest


def snakemake(workdir, *args, check=True, timeout=1200):
    """Run snakemake in `workdir` (PATH has this Python's scripts); return the CompletedProcess."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def planned_jobs(result):
    """{rule: count} planned by a dry run (from its job-stats table; the target `all` left out)."""
    text = result.stdout + result.stderr
    jobs = {}
    if "Job stats:" not in text:
        return jobs
    table = text.split("Job stats:", 1)[1].splitlines()[3:]
    for line in table:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        if parts[0] != "all":
            jobs[parts[0]] = int(parts[1])
    return jobs


def write_cell_tree(root, images):
    """A dataset folder of the C-NMC training layout with `images` small cell images."""
    for i in range(images):
        label = "all" if i % 3 else "hem"
        subject = f"H{i % 5}" if label == "hem" else str(i % 7)
        fold = i % 3
        write_cell(
            Path(root)
            / "training_data"
            / f"fold_{fold}"
            / label
            / f"UID_{subject}_{i}_1_{label}.bmp",
            i,
        )
    return Path(root)
