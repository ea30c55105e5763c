"""The report's Patients section: verdict lines, tables and the cells-needed figure, from the
files of the patients step."""

import numpy as np
import pandas as pd
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.patients import run_patients
from leukoflow.report import patients as rp
from leukoflow.report.collect import ReportData


def predictions(subjects, per_subject, seed):
    """A predictions CSV frame: alternately all and hem subjects, noisy probabilities."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(subjects):
        y = s % 2
        for p in 1 / (1 + np.exp(-rng.normal(1.2 if y else -1.2, 1.5, per_subject))):
            rows.append((0, "x.bmp", f"{'' if y else 'H'}{s}", y, p, p, int(p >= 0.5), 0))
    return pd.DataFrame(
        rows,
        columns=["row", "path", "subject", "y", "probability_all",
                 "calibrated_probability_all", "predicted", "referred"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The patients step of two models, read back."""
    folder = tmp_path_factory.mktemp("patients")
    found = {}
    for i, name in enumerate(("SimpleNet", "VGG16")):
        files = {key: folder / f"{name}_{key}" for key in ("val", "test", "s", "c", "j")}
        predictions(8, 12, i).to_csv(files["val"], index=False)
        predictions(6, 12, 10 + i).to_csv(files["test"], index=False)
        run_patients(
            name, files["val"], files["test"], {"draws": 50}, {"bootstrap": 100},
            files["s"], files["c"], files["j"],
        )  # fmt: skip
        found[name] = rp.read_patient_results(files["j"], files["s"], files["c"])
    return found


def summary(n, test_at, val_note=None):
    """A patients.json with the cells-needed fields a verdict reads."""
    return {
        "test": {"correct": 5, "subjects": 6},
        "cells_needed": {"n": n, "target": 0.95, "draws": 1000, "val_note": val_note,
                         "test_at": test_at},
    }  # fmt: skip


def test_the_verdict_line_says_what_n_cells_give():
    at_20 = {"cells": "20", "correct": 27.43, "subjects": 28}
    result = rp.PatientResults(summary(20, at_20), pd.DataFrame(), pd.DataFrame())
    assert rp.verdict_line("SimpleNet", result) == (
        "SimpleNet: with 20 cells per subject, 27.4 of 28 test subjects called correctly "
        "(mean over 1000 draws); N for 95 %/95 % (validation subjects): 20."
    )
    at_all = {"cells": "all", "correct": 5.0, "subjects": 6}
    result = rp.PatientResults(
        summary(None, at_all, "too few subjects (2 all, 1 hem)"), *[None] * 2
    )
    assert rp.verdict_line("VGG16", result) == (
        "VGG16: with all their cells, 5 of 6 test subjects called correctly; N for 95 %/95 % "
        "(validation subjects): not reached (too few subjects (2 all, 1 hem))."
    )


def test_the_section_has_every_model_its_subjects_and_the_figure(results, tmp_path):
    data = ReportData(archs=list(results), folds=0, patients=results)
    page = rp.html_patients(data)
    for name in results:
        assert rp.verdict_line(name, results[name]).split(";")[0] in page
    test = results["SimpleNet"].subjects.query("subset == 'test'")
    assert page.count("<tr>") == 1 + 2 + 1 + len(test)  # two headers, two models, subjects
    wrong = sum(int(not r["correct"]) for r in results.values() for _, r in
                r.subjects.query("subset == 'test'").iterrows())  # fmt: skip
    assert page.count("✗") == wrong + 1  # and once in the caption
    assert "too few subjects (3 all, 3 hem" not in page  # three of each is enough
    (figure,) = rp.plot_cells_needed(data, tmp_path)
    assert figure.name == "cells_needed.png" and figure.read_bytes()[:4] == b"\x89PNG"
    empty = ReportData(archs=list(results), folds=0)
    assert rp.html_patients(empty) == "" and rp.plot_cells_needed(empty, tmp_path) == []


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(LeukoflowError, match="patients file .*patients.json does not exist"):
        rp.read_patient_results(tmp_path / "patients.json", tmp_path / "s", tmp_path / "c")
