"""Planning the paper's full config: cross-validation jobs, no job per image, timing printed."""

import time

import pytest
import yaml
from wf import REPO, write_cell_tree

from leukoflow.workflow_runs import planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

SIZES = 5  # 299, 224 (VGG16 and ResNet152V2 share it), 456, 480, 128


def full_config(workdir, dataset, folds):
    """The paper config against `dataset`, with `folds` CV folds."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"]["path"] = str(dataset)
    config["cv"] = {"folds": folds}
    (workdir / "config" / "full.yaml").write_text(yaml.safe_dump(config))
    return "config/full.yaml"


@pytest.mark.parametrize("images", [6, 60])
def test_full_config_plan_does_not_grow_with_images(workdir, tmp_path, images):
    dataset = write_cell_tree(tmp_path / "C-NMC", images)
    config = full_config(workdir, dataset, folds=5)
    start = time.perf_counter()
    jobs = planned_jobs(run_snakemake(workdir, "-n", "--configfile", config))
    print(f"planned {sum(jobs.values())} jobs in {time.perf_counter() - start:.1f} s")
    splits = 1 + 5
    assert jobs == {
        "ingest": 1,
        "split": 1,
        "stain_reference": splits,
        "stores": SIZES * 3 * splits,
        "augment": SIZES * splits,
        "fetch_weights": 5,
        "train": 6 * splits,
        "evaluate": 6 * splits,
        "timing": 6,
        "saliency": 6,
        "bundle": 6,
        "report": 1,
    }
