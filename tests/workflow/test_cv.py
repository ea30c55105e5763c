"""Cross-validation: K subject-disjoint folds as separate jobs, mean ± sd in the table."""

import json

import pandas as pd
import pytest
import yaml

from leukoflow.core.workflow_runs import planned_jobs, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_two_folds_run_as_separate_jobs_and_reach_the_table(workdir):
    config = yaml.safe_load((workdir / "config" / "tiny.yaml").read_text())
    config["architectures"] = {"SimpleNet": {}}  # the ensembles of both are left out
    config["cv"] = {"folds": 2}
    config["ablation"] = {}
    (workdir / "config" / "cv.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(run_snakemake(workdir, "-n", "--configfile", "config/cv.yaml"))
    assert jobs["train"] == jobs["evaluate"] == 3 and jobs["stain_reference"] == 3
    run_snakemake(workdir, "--cores", "2", "--configfile", "config/cv.yaml")

    split = pd.read_csv(workdir / "results/split/split.csv", dtype={"subject": str})
    test_subjects = set(split.loc[split["subset"] == "test", "subject"])
    f1 = []
    for fold in range(2):
        folder = workdir / f"results/fold{fold}"
        val = pd.read_csv(folder / "stores/32px/val.csv", dtype={"subject": str})
        train = pd.read_csv(folder / "stores/32px/train.csv", dtype={"subject": str})
        assert set(val["subject"]) == set(split.loc[split["cv_fold"] == fold, "subject"])
        assert not set(val["subject"]) & set(train["subject"])
        assert not (set(val["subject"]) | set(train["subject"])) & test_subjects
        f1.append(
            json.loads((folder / "evaluate/SimpleNet/metrics.json").read_text())["test"]["f1"]
        )
    table = pd.read_csv(workdir / "results/table1.csv").set_index("architecture")
    assert table.loc["SimpleNet", "f1_cv_mean"] == pytest.approx(sum(f1) / 2, abs=1e-6)
    assert "F1 CV mean ± sd" in (workdir / "results/table1.md").read_text()
