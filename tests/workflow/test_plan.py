"""Planning the paper's full config: cross-validation jobs, the full ablation matrix, no job
per image, timing printed (`leukoflow bench plan` measures it)."""

import time

import pytest
import yaml
from wf import REPO, write_cell_tree

from leukoflow.bench.plan import full_ablation
from leukoflow.core.workflow_runs import planned_jobs, run_snakemake
from leukoflow.evaluate.shifts import SHIFTS

pytestmark = pytest.mark.workflow

ARCHS = ("SimpleNet", "VGG16")  # the tiny config's
SIZES = 5  # 299, 224 (VGG16 and ResNet152V2 share it), 456, 480, 128


def full_config(workdir, dataset, folds, ablation=False):
    """The paper config against `dataset`, with `folds` CV folds (or the full ablation)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"]["path"] = str(dataset)
    config["cv"] = {"folds": folds}
    if ablation:
        config = full_ablation(config)
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
        "ensemble": 2,  # config.yaml's mean and stacked ensembles of the six
        "bundle_ensemble": 2,
        "stress": 6,
        "stress_ensemble": 2,
        "patients": 6,
        "patients_ensemble": 2,
        "report": 1,
    }


def test_full_ablation_matrix_plans_every_combination_once(workdir, tmp_path):
    """3 stain methods x 3 augmentations x 2 splits for the six architectures: 108 models,
    the six equal to the main run's reused; stores per split and stain only."""
    dataset = write_cell_tree(tmp_path / "C-NMC", 6)
    config = full_config(workdir, dataset, folds=0, ablation=True)
    start = time.perf_counter()
    jobs = planned_jobs(run_snakemake(workdir, "-n", "--configfile", config))
    print(f"planned {sum(jobs.values())} jobs of the 3x3x2 ablation in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    data = 2 * 3  # (split, stain) variants, the main one among them
    assert jobs == {
        "ingest": 1,
        "split": 1,
        "split_random": 1,
        "stain_reference": data,
        "stores": SIZES * 3 * data,
        "augment": SIZES * data,  # every architecture trains with offline augmentation somewhere
        "fetch_weights": 5,
        "train": 6 * 18,  # the main run's six among them
        "evaluate": 6 * 18,
        "timing": 6,
        "saliency": 6,
        "bundle": 6,
        "ensemble": 2,
        "bundle_ensemble": 2,
        "stress": 6,
        "stress_ensemble": 2,
        "patients": 6,
        "patients_ensemble": 2,
        "ablation": 1,
        "report": 1,
    }


def test_stress_plans_one_job_per_model_and_none_when_off(workdir):
    """The tiny run: a stress job per architecture and per ensemble, reading the members'
    shifted probabilities; every strength set to [] plans none."""
    result = run_snakemake(workdir, "-n", "-p", "--configfile", "config/tiny.yaml")
    jobs = planned_jobs(result)
    assert (jobs["stress"], jobs["stress_ensemble"]) == (2, 2)
    assert result.stdout.count("leukoflow stress --model") == 2
    for arch in ARCHS:  # each ensemble holds both
        assert result.stdout.count(f'"{arch}": "results/main/stress/{arch}/shifted_') == 2
    config = yaml.safe_load((workdir / "config" / "tiny.yaml").read_text())
    config["stress"] = {"strengths": dict.fromkeys(SHIFTS, [])}
    (workdir / "config" / "off.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(run_snakemake(workdir, "-n", "--configfile", "config/off.yaml"))
    assert "stress" not in jobs and "stress_ensemble" not in jobs and jobs["report"] == 1
