"""Workflow-level test helpers: the workflow copied with the tiny config, a small dataset."""

from pathlib import Path

from cells import write_cell

from leukoflow.workflow_runs import copy_workflow

REPO = Path(__file__).resolve().parents[2]
GPU_RULES = {"train", "evaluate", "timing", "saliency"}  # the rules that use the accelerator
TINY = REPO / "tests" / "workflow" / "tiny.yaml"


def tiny_workflow(dest):
    """The workflow (not results) copied into `dest`, with the tiny config as config/tiny.yaml."""
    return copy_workflow(REPO, dest, {"tiny.yaml": TINY})


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
