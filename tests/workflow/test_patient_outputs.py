"""The subject-level call on the finished tiny run (the session's `finished` fixture): the
patients step of every model, its bundle record, its report section, and `predict
--patients` giving the step's numbers on the same cells."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leukoflow.cli import main
from leukoflow.evaluate.patients import aggregate

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

MODELS = {
    "SimpleNet": "evaluate",
    "VGG16": "evaluate",
    "Ensemble": "ensemble",
    "Stacked": "ensemble",
}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_its_subject_level_call(finished, name):
    folder = finished / "results/main/patients" / name
    summary = json.loads((folder / "patients.json").read_text())
    subjects = pd.read_csv(folder / "subjects.csv", dtype={"subject": str})
    cells = pd.read_csv(
        finished / f"results/main/{MODELS[name]}/{name}/test_predictions.csv",
        dtype={"subject": str},
    )
    test = subjects[subjects["subset"] == "test"].set_index("subject")
    assert sorted(test.index) == sorted(cells["subject"].unique())
    for subject, own in cells.groupby("subject"):
        expected = aggregate(
            own["calibrated_probability_all"], own["predicted"], "mean_probability"
        )
        assert test.loc[subject, "aggregate"] == pytest.approx(expected, abs=1e-6)
        assert test.loc[subject, "cells"] == len(own)
        assert test.loc[subject, "referred"] == own["referred"].sum()
    assert summary["test"]["subjects"] == len(test) == 3
    assert summary["test"]["ci_note"].startswith("too few subjects")  # 3 test subjects
    curve = pd.read_csv(folder / "curve.csv", dtype={"cells": str})
    assert list(curve.loc[curve["subset"] == "test", "cells"]) == ["1", "2", "all"]  # 4 cells
    meta = json.loads((finished / "results/models" / name / "bundle.json").read_text())
    assert meta["patients"]["threshold"] == summary["threshold"]
    assert meta["patients"]["cells_needed"] == summary["cells_needed"]
    card = (finished / "results/models" / name / "README.md").read_text()
    assert "## Patients" in card and "fitted on the validation subjects only" in card


def test_predict_calls_the_subjects_the_patients_step_called(finished, tmp_path):
    subjects = pd.read_csv(
        finished / "results/main/patients/SimpleNet/subjects.csv", dtype={"subject": str}
    )
    cells = pd.read_csv(finished / "results/main/evaluate/SimpleNet/test_predictions.csv")
    dataset = Path(yaml.safe_load((finished / "config/tiny.yaml").read_text())["dataset"]["path"])
    out = tmp_path / "cells.csv"
    files = [str(dataset / path) for path in cells["path"]]
    bundle = str(finished / "results/models/SimpleNet")
    args = ["predict", "--model", bundle, "--out", str(out), "--engine", "keras"]
    args += ["--patients", "subject", *files]
    assert main(args) == 0
    called = pd.read_csv(tmp_path / "patients.csv", dtype={"group": str}).set_index("group")
    test = subjects[subjects["subset"] == "test"].set_index("subject")
    assert sorted(called.index) == sorted(test.index)
    assert list(called["cells_used"]) == list(test.loc[called.index, "cells"])
    assert (called["cells_with_errors"] == 0).all()
    # the patients step's code on predict's own cells: the same aggregate, exactly
    predicted = pd.read_csv(out).assign(subject=cells["subject"].astype(str).to_numpy())
    for subject, own in predicted.groupby("subject"):
        expected = aggregate(
            own["calibrated_probability_all"], own["label"] == "all", "mean_probability"
        )
        assert called.loc[subject, "aggregate"] == expected
    # and the workflow's numbers, as far as predict's cells agree with evaluate's (1e-4)
    pd.testing.assert_series_equal(
        called["aggregate"], test.loc[called.index, "aggregate"], atol=1e-4, check_names=False
    )
    threshold = json.loads(
        (finished / "results/main/patients/SimpleNet/patients.json").read_text()
    )["threshold"]
    clear = (test.loc[called.index, "aggregate"] - threshold).abs() > 1e-4
    assert list(called.loc[clear, "call"]) == list(test.loc[called.index][clear]["call"])


def test_the_report_has_the_patients_section(finished):
    page = (finished / "results/report.html").read_text()
    assert "<h2>Patients</h2>" in page and 'alt="cells_needed"' in page
    for name in MODELS:
        assert f"<li>{name}: with " in page  # its verdict line
