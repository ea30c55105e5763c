"""Table I from one list of columns (CSV, Markdown, HTML), and a test subset too small for
an interval: the point estimates stay, the intervals and the verdicts resting on them go."""

import re

import numpy as np
import pandas as pd
import pytest

from leukoflow.deploy.modelcard import key_lines
from leukoflow.deploy.modelcard_sections import evaluation_section
from leukoflow.evaluate import job as evaluate
from leukoflow.evaluate.metrics import CI_METRICS
from leukoflow.report import columns as registry
from leukoflow.report import table as table_module
from leukoflow.report.collect import ReportData
from leukoflow.report.columns import COLUMNS, Column, markdown_header
from leukoflow.report.html import html_table1
from leukoflow.report.table import metrics_for_dvc, table1, table_markdown, table_notes
from leukoflow.report.verdicts import verdicts

NOTE = "CI: too few test subjects (1 all, 1 hem)"
SKILL = {"SimpleNet": 0.8, "VGG16": 2.0}


def predictions(n_subjects, skill, seed, per_subject=10):
    """Predictions of one model on subjects alternating hem, all (the same paths per call)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = s % 2
        logits = skill * (2 * label - 1) + rng.normal(0, 1, per_subject)
        rows += [
            (f"s{s}/{i}.bmp", f"S{s}", label, 1 / (1 + np.exp(-x))) for i, x in enumerate(logits)
        ]
    frame = pd.DataFrame(rows, columns=["path", "subject", "y", "probability_all"])
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


def report_data(test_subjects):
    """Two architectures and their mean ensemble, evaluated on `test_subjects` subjects."""
    metrics, scored, probabilities = {}, {}, {"val": [], "test": []}
    for k, (arch, skill) in enumerate(SKILL.items()):
        val, test = predictions(8, skill, seed=k), predictions(test_subjects, skill, seed=10 + k)
        metrics[arch], _, scored[arch] = evaluate.evaluate_predictions(val, test, n_bootstrap=200)
        metrics[arch]["settings"] = {"weights": "none", "epochs": 2, "input_size": 32}
        probabilities["val"].append(val["probability_all"])
        probabilities["test"].append(test["probability_all"])
    val, test = (
        predictions(n, 0, seed=0).assign(probability_all=np.mean(probabilities[subset], axis=0))
        for subset, n in (("val", 8), ("test", test_subjects))
    )
    metrics["Ensemble"], _, scored["Ensemble"] = evaluate.evaluate_predictions(
        val, test, n_bootstrap=200
    )
    metrics["Ensemble"]["ensemble"] = {"method": "mean", "members": list(SKILL)}
    return ReportData(
        archs=list(SKILL),
        folds=0,
        ensembles=["Ensemble"],
        metrics=metrics,
        predictions=scored,
        dataset={"source": "folder", "path": "cells"},
    )


def markdown_rows(text):
    """The cells of each row of the Markdown table (header first, the rule left out)."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in rows]


def html_rows(text):
    header = re.findall(r"<th>(.*?)</th>", text)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", text)]
    return header, [row for row in rows if row]


@pytest.fixture(scope="module")
def enough():
    return report_data(test_subjects=8)


@pytest.fixture(scope="module")
def too_few():
    return report_data(test_subjects=2)


def test_the_three_forms_come_from_one_list_of_columns(enough):
    frame = table1(enough)
    markdown = table_markdown(frame, enough, ["note"], ["verdict"])
    header, rows = html_rows(html_table1(frame, ["note"]))
    shown = [c for c in COLUMNS if c.kind != "cv"]  # no cross-validation here
    assert markdown_rows(markdown)[0] == [markdown_header(c) for c in shown]
    assert markdown_rows(markdown)[0] == [
        "Model", "Time, ms (paper)", "Precision (paper)", "Recall (paper)",
        "F1 [95% CI] (paper)", "ΔF1 % (paper)", "Weighted F1 [95% CI]", "Macro F1",
        "ROC-AUC [95% CI]", "P(best better)",
    ]  # fmt: skip
    assert header == [c.header for c in shown]
    for c in shown:
        if c.kind != "model":
            assert c.name in frame.columns, c.name
        assert (f"{c.name}_lo" in frame.columns) == (c.ci == "bootstrap"), c.name
        assert (c.paper_digits is not None) == (c.name in table_module.PAPER_COLUMNS), c.name
        if c.kind == "metric":  # a metric column is one that evaluate computes with a CI
            assert c.name in CI_METRICS, c.name
    vgg = markdown_rows(markdown)[2]
    row = frame.set_index("architecture").loc["VGG16"]
    assert vgg[0] == "**VGG16**" and vgg[-1] == "best"
    assert vgg[4] == f"{row['f1']:.2f} [{row['f1_lo']:.2f}, {row['f1_hi']:.2f}] (0.8)"
    assert rows[1][4].startswith(f'{row["f1"]:.3f}<span class="ci">[{row["f1_lo"]:.3f}, ')
    assert "paper 0.8" in rows[1][4]
    assert "ci_note" not in frame.columns


def test_a_metric_column_is_one_entry(enough, monkeypatch):
    extended = (*COLUMNS, Column("balanced_accuracy", "Balanced accuracy", ci="bootstrap"))
    monkeypatch.setattr(registry, "COLUMNS", extended)
    monkeypatch.setattr(table_module, "COLUMNS", extended)
    frame = table1(enough)
    assert {"balanced_accuracy_lo", "balanced_accuracy_hi"} <= set(frame.columns)
    ci = enough.metrics["SimpleNet"]["ci"]["balanced_accuracy"]
    assert list(frame.loc[0, ["balanced_accuracy_lo", "balanced_accuracy_hi"]]) == ci
    markdown = markdown_rows(table_markdown(frame, enough, [], []))
    assert markdown[0][-1] == "Balanced accuracy [95% CI]"
    assert markdown[1][-1] == f"{frame.loc[0, 'balanced_accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    header, rows = html_rows(html_table1(frame, []))
    assert header[-1] == "Balanced accuracy" and len(rows[0]) == len(header)


def test_too_few_test_subjects_print_the_estimate_and_no_interval(too_few):
    frame = table1(too_few)
    assert list(frame["ci_note"]) == [NOTE] * 3
    assert frame[["f1_lo", "f1_hi", "roc_auc_lo"]].isna().all().all()
    assert frame["p_best_better"].isna().all() and frame["f1"].notna().all()
    notes = table_notes(frame, too_few)
    assert f"{NOTE}: fewer than 3 of each class (evaluate.min_subjects_per_class)" in notes[2]
    markdown = table_markdown(frame, too_few, notes, verdicts(frame, too_few))
    row = markdown_rows(markdown)[1]
    f1 = frame.loc[0, "f1"]
    assert row[4].startswith(f"{f1:.2f} [{NOTE}] (")
    assert markdown_rows(markdown)[3][-1] == "too few test subjects"  # the ensemble's P
    page = html_table1(frame, notes)
    assert f'<span class="ci">{NOTE}</span>' in page and "[–, –]" not in page
    for name, entry in metrics_for_dvc(frame, too_few).items():
        assert entry["ci_note"] == NOTE and entry["f1"] == too_few.metrics[name]["test"]["f1"]


def test_no_verdict_rests_on_too_few_test_subjects(too_few, enough):
    said = verdicts(table1(too_few), too_few)
    assert said[0].startswith(
        "The test subset is too small to judge: 2 subjects (1 all, 1 hem), fewer than 3"
    )
    text = " ".join(said)
    for verdict in ("Every model learned", "Did not learn", "Learned (", "P(VGG16 better)"):
        assert verdict not in text, verdict
    assert "Ensemble (an ensemble): F1" in text and "too few test subjects to say" in text
    said = verdicts(table1(enough), enough)  # enough subjects: the verdicts as before
    assert "too small" not in " ".join(said)
    assert any(s.startswith(("Every model learned", "Did not learn")) for s in said)
    assert any("P(VGG16 better) =" in s for s in said)


def test_the_model_card_says_why_there_is_no_interval(too_few):
    metrics = too_few.metrics["SimpleNet"]
    meta = {
        "architecture": "SimpleNet",
        "threshold": metrics["threshold"],
        "test_metrics": metrics["test"],
        "evaluation": {k: metrics[k] for k in ("n_test", "n_test_subjects", "ci", "ci_note")},
    }
    section = evaluation_section(meta)
    assert f"| F1 of `all` | {metrics['test']['f1']:.3f} | {NOTE} |" in section
    assert f"{NOTE}: no 95% intervals" in section
    assert key_lines(meta)["test F1"] == f"{metrics['test']['f1']:.3f} [{NOTE}]"
