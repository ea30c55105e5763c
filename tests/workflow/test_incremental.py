"""A finished tiny run (the session's shared `finished`): rerun only what a change touches.

The session's real run of the tiny config (`wf.finished_run`: SimpleNet and VGG16, two
ensembles of both, an ablation of SimpleNet over the split; a few dozen synthetic images, a
few epochs, from folders whose names hold a space, an apostrophe and a non-ASCII letter,
without an activated environment); then dry runs after each kind of change, asserting the
exact set of planned jobs.
"""

import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import leukoflow
from leukoflow.cli import main
from leukoflow.core.workflow_runs import planned_jobs, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# one architecture's jobs, and the two ensembles (both hold every architecture) with theirs
ONE_ARCH = {
    "train": 1,
    "evaluate": 1,
    "timing": 1,
    "saliency": 1,
    "bundle": 1,
    "ensemble": 2,
    "bundle_ensemble": 2,
    "stress": 1,
    "stress_ensemble": 2,
    "patients": 1,
    "patients_ensemble": 2,
    "report": 1,
}


def dry_run(workdir, config="config/tiny.yaml"):
    """The {rule: count} a dry run plans."""
    return planned_jobs(run_snakemake(workdir, "-n", "--configfile", config))


def changed_config(workdir, change):
    """config/changed.yaml: the tiny config with `change(config)` applied."""
    config = yaml.safe_load((workdir / "config" / "tiny.yaml").read_text())
    change(config)
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
    return "config/changed.yaml"


def test_a_finished_run_plans_nothing(finished):
    assert dry_run(finished) == {}
    for name in ("table1.csv", "table1.md", "report.html", "metrics.json"):
        assert (finished / "results" / name).stat().st_size > 0


def test_changing_one_member_reruns_it_and_its_ensembles_only(finished):
    """VGG16 changes: its jobs and the ensembles holding it; not SimpleNet, not the ablation
    (of SimpleNet only)."""
    config = changed_config(
        finished, lambda c: c["architectures"]["VGG16"].update({"learning_rate": 3.0e-4})
    )
    result = run_snakemake(finished, "-n", "--configfile", config)
    assert planned_jobs(result) == ONE_ARCH
    assert set(re.findall(r"arch=(\w+)", result.stdout)) == {"VGG16"}


def test_adding_an_architecture_plans_only_its_jobs(finished):
    config = changed_config(
        finished, lambda c: c["architectures"].update({"EfficientNetB5": {"input_size": 32}})
    )
    assert planned_jobs(run_snakemake(finished, "-n", "--configfile", config)) == ONE_ARCH


def test_changing_the_stain_method_reruns_stain_and_downstream_only(finished):
    config = changed_config(finished, lambda c: c["stain"].update({"method": "reinhard"}))
    jobs = planned_jobs(run_snakemake(finished, "-n", "--configfile", config))
    assert not {"synth", "ingest", "split"} & set(jobs)
    assert jobs == {  # the main run's data and the ablation's random-split data
        "stain_reference": 2,
        "stores": 6,
        "augment": 2,
        "train": 3,
        "evaluate": 3,
        "timing": 2,
        "saliency": 2,
        "bundle": 2,
        "ensemble": 2,
        "ablation": 1,
        "bundle_ensemble": 2,
        "stress": 2,
        "stress_ensemble": 2,
        "patients": 2,
        "patients_ensemble": 2,
        "report": 1,
    }


def test_changing_the_report_code_reruns_only_the_report(finished):
    """Snakemake compares checksums of small inputs, so the code must really change."""
    code = Path(leukoflow.__file__).parent / "report" / "table.py"
    before, text = code.stat(), code.read_text()
    try:
        code.write_text(text + "\n# a change to the report code\n")
        os.utime(code, (before.st_atime, datetime.now().timestamp() + 5))
        assert dry_run(finished) == {"report": 1}
    finally:
        code.write_text(text)
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_predict_with_a_bundle_reproduces_the_evaluation(finished):
    """The bundle alone (no workflow) gives the probabilities evaluate wrote for test images."""
    evaluated = pd.read_csv(finished / "results/main/evaluate/SimpleNet/test_predictions.csv")
    dataset = Path(yaml.safe_load((finished / "config/tiny.yaml").read_text())["dataset"]["path"])
    assert "'" in str(dataset) and " " in str(dataset) and not str(dataset).isascii()
    out = finished / "predictions.csv"
    status = main(
        [
            "predict",
            "--model",
            str(finished / "results/models/SimpleNet"),
            "--out",
            str(out),
            *(str(dataset / path) for path in evaluated["path"]),
        ]
    )
    assert status == 0
    predicted = pd.read_csv(out)
    assert list(predicted["path"]) == [str(dataset / path) for path in evaluated["path"]]
    assert predicted["error"].isna().all()
    np.testing.assert_allclose(
        predicted["calibrated_probability_all"], evaluated["calibrated_probability_all"], atol=1e-5
    )
    assert list(predicted["refer"]) == list(evaluated["referred"])
