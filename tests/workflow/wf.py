"""Workflow-level test helpers: the workflow copied with the tiny config, a small dataset, and
the tiny run every workflow test reads (`finished_run`)."""

import os
import shutil
from pathlib import Path

import yaml
from cells import write_cell

from leukoflow.core.workflow_runs import copy_workflow, run_snakemake, snakemake_env
from leukoflow.data.synth import generate_dataset

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
GPU_RULES = ("evaluate", "saliency", "stress", "timing", "train")
# Folder names a lab share can have: a space, an apostrophe, letters outside ASCII.
AWKWARD = "my data's été"


def tiny_workflow(dest):
    """The workflow (not results) copied into `dest`, with the tiny config as config/tiny.yaml."""
    return copy_workflow(REPO, dest, {"tiny.yaml": TINY})


def tiny_dataset(root):
    """The tiny config's synthetic dataset written to `root` as a C-NMC folder of its own."""
    synthetic = yaml.safe_load(TINY.read_text())["dataset"]["synthetic"]
    generate_dataset(
        root,
        subjects=synthetic["subjects"],
        images_per_subject=synthetic["images_per_subject"],
        size=synthetic["size"],
        seed=synthetic["seed"],
    )
    return Path(root)


def folder_workflow(dest, dataset):
    """`tiny_workflow(dest)` whose config/tiny.yaml reads the dataset folder `dataset`."""
    workdir = tiny_workflow(dest)
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {"source": "folder", "path": str(dataset)}
    (workdir / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return workdir


def run_arguments():
    """The snakemake arguments of the shared tiny run.

    4 cores and two fake GPUs ("0", "1"; no GPU is needed): each GPU job gets 4 / 2 = 2
    threads and leases one of the two GPUs in the run's own lock directory, so two GPU jobs
    run side by side.
    """
    return ["--cores", "4", "--resources", "gpu=2", "--configfile", "config/tiny.yaml",
            "--config", 'gpus=["0", "1"]', "gpu_lock_dir=.gpu-locks"]  # fmt: skip


def run_environment():
    """The calling shell's environment without its GPUs and leases (they come from
    `run_arguments` alone) and with this installation's scripts off PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "LEUKOFLOW_"))}
    return snakemake_env(env, activate=False)


def finished_run(root):
    """The tiny workflow run to the end as a user of a lab share would run it.

    The working directory and the dataset folder both have `AWKWARD` names, and snakemake is
    called as `.venv/bin/snakemake` with the environment not activated (its `leukoflow` is
    not on PATH). Returns the working directory.
    """
    assert shutil.which("leukoflow", path=run_environment()["PATH"]) is None
    root = Path(root) / AWKWARD
    dataset = tiny_dataset(root / "C-NMC data")
    workdir = folder_workflow(root / "work dir", dataset)
    run_snakemake(workdir, *run_arguments(), env=run_environment(), activate=False)
    return workdir


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
