"""The report's "Patients" section: every model's subject-level call and the cells it needs.

Reads each model's output of the `patients` step (`leukoflow.evaluate.patients`:
patients.json, subjects.csv, curve.csv), draws the cells-needed curves of every model on one
figure (`plot_cells_needed`), and renders the section's tables and one verdict line per model
(`html_patients`, `verdict_line`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.patients import AGGREGATOR_WORDS, scores_line
from leukoflow.report.markup import caption, table_html

if TYPE_CHECKING:  # collect reads the files with `read_patient_results`
    from leukoflow.report.collect import ReportData

FIGURE = "cells_needed"
CAPTION = (
    "How many cells a patient-level call needs: for N cells per test subject (drawn without "
    "replacement within each subject, many seeded draws; `all`: every cell), the error rate "
    "of the subject-level calls (left, the band: 2.5 to 97.5 percentiles over the draws, the "
    "variation from which cells were drawn) and the subject-level ROC-AUC (right), both means "
    "over the draws. A star marks the N each model needs for the target sensitivity and "
    "specificity, chosen on the validation subjects."
)


@dataclass(frozen=True)
class PatientResults:
    """One model's output of the patients step.

    Attributes:
        summary: patients.json.
        subjects: subjects.csv (`leukoflow.evaluate.patients.SUBJECT_COLUMNS`).
        curve: curve.csv (`leukoflow.evaluate.cells_needed.CURVE_COLUMNS`).
    """

    summary: dict
    subjects: pd.DataFrame
    curve: pd.DataFrame


def read_patient_results(summary: str | Path, subjects: str | Path, curve: str | Path):
    """One model's patients files, read.

    Raises:
        LeukoflowError: naming the file that is missing or not JSON.
    """
    for path in (summary, subjects, curve):
        if not Path(path).is_file():
            raise LeukoflowError(f"patients file {path} does not exist")
    try:
        data = json.loads(Path(summary).read_text())
    except json.JSONDecodeError as error:
        raise LeukoflowError(f"patients file {summary} is not valid JSON ({error})") from None
    return PatientResults(
        summary=data,
        subjects=pd.read_csv(subjects, dtype={"subject": str}),
        curve=pd.read_csv(curve, dtype={"cells": str}),
    )


def _percent(value: float) -> str:
    return f"{100 * value:g} %"


def verdict_line(name: str, result: PatientResults) -> str:
    """One sentence per model: how many test subjects it calls correctly with the cells it
    needs (or all of them), and that N.

    Returns:
        e.g. "SimpleNet: with 20 cells per subject, 27.4 of 28 test subjects called correctly
        (mean over 1000 draws); N for 95 %/95 % (validation subjects): 20."
    """
    needed = result.summary["cells_needed"]
    at = needed["test_at"]
    target = _percent(needed["target"])
    if at["cells"] == "all":
        test = result.summary["test"]
        head = (
            f"with all their cells, {test['correct']} of {test['subjects']} test subjects "
            "called correctly"
        )
    else:
        head = (
            f"with {at['cells']} cells per subject, {at['correct']:.1f} of {at['subjects']} "
            f"test subjects called correctly (mean over {needed['draws']} draws)"
        )
    n = needed["n"] if needed["n"] is not None else "not reached"
    note = f" ({needed['val_note']})" if needed.get("val_note") else ""
    return f"{name}: {head}; N for {target}/{target} (validation subjects): {n}{note}."


def plot_cells_needed(data: ReportData, plots: Path) -> list[Path]:
    """Every model's test curve of error rate and ROC-AUC against N cells, on one figure.

    Args:
        data: the collected report data (`patients`: {model: its patients files}).
        plots: the plots folder.

    Returns:
        [cells_needed.png], or [] without patients files.
    """
    from leukoflow.report.plots import pyplot, save_figure

    results = data.patients
    if not results:
        return []
    curves = {name: r.curve[r.curve["subset"] == "test"] for name, r in results.items()}
    numbers = sorted({int(c) for curve in curves.values() for c in curve["cells"] if c != "all"})
    order = [str(n) for n in numbers] + ["all"]
    position = {cells: i for i, cells in enumerate(order)}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.4))
    for i, (name, curve) in enumerate(curves.items()):
        x = [position[c] for c in curve["cells"]]
        color = f"C{i % 10}"
        axes[0].plot(x, curve["error_rate"], marker="o", ms=3, color=color, label=name)
        axes[0].fill_between(
            x, curve["error_rate_lo"], curve["error_rate_hi"], color=color, alpha=0.12
        )
        axes[1].plot(x, curve["roc_auc"], marker="o", ms=3, color=color, label=name)
        needed = str(results[name].summary["cells_needed"]["n"])
        if needed in set(curve["cells"]):
            at = curve[curve["cells"] == needed].iloc[0]
            axes[0].plot([position[needed]], [at["error_rate"]], "*", ms=11, color=color)
    for ax, label in zip(axes, ("error rate of the subjects' calls", "subject-level ROC-AUC")):
        ax.set_xticks(range(len(order)), order)
        ax.set(xlabel="cells per subject (N)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(top=1.02)
    axes[0].set_title("Test subjects: error rate against N")
    axes[1].set_title("Test subjects: ROC-AUC against N")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, plots / f"{FIGURE}.png")]


def _summary_table(results):
    """One row per model: the fitted call, the test subjects' scores, the cells needed."""
    header = [
        "Model",
        "Aggregator",
        "Patient threshold",
        "Validation subjects",
        "Test subjects correct",
        "Scores (test subjects, all cells)",
        "Referred test cells",
        "N needed (validation)",
    ]
    rows = []
    for name, result in results.items():
        summary = result.summary
        val, test, needed = summary["val"], summary["test"], summary["cells_needed"]
        cells = summary["test_cells"]
        n = needed["n"] if needed["n"] is not None else "not reached"
        rows.append(
            [
                html.escape(name),
                html.escape(summary["aggregator"]),
                f"{summary['threshold']:.3f}",
                f"{val['subjects']} ({val['n_all']} all, {val['n_hem']} hem)",
                f"{test['correct']} of {test['subjects']}",
                f'<span style="white-space: normal">{html.escape(scores_line(test))}</span>',
                f"{cells['referred']} of {cells['cells']}",
                html.escape(str(n) + (f" ({needed['val_note']})" if needed["val_note"] else "")),
            ]
        )
    return table_html(header, rows)


def _subject_table(results):
    """One row per test subject: truth, cells, then each model's aggregate and call."""
    frames = {
        name: r.subjects[r.subjects["subset"] == "test"].set_index("subject")
        for name, r in results.items()
    }
    first = next(iter(frames.values()))
    header = ["Subject", "Truth", "Cells", *results]
    rows = []
    for subject, row in first.iterrows():
        cells = [html.escape(subject), row["truth"], str(row["cells"])]
        for frame in frames.values():
            own = frame.loc[subject]
            mark = "" if own["correct"] else " ✗"
            cells.append(f"{own['aggregate']:.3f} {own['call']}{mark}")
        rows.append(cells)
    return table_html(header, rows)


def html_patients(data: ReportData) -> str:
    """The section's verdict lines and tables (HTML); '' without patients files.

    Args:
        data: the collected report data (`patients`: {model: its patients files}).
    """
    results = data.patients
    if not results:
        return ""
    verdicts = "".join(
        f"<li>{html.escape(verdict_line(name, result))}</li>" for name, result in results.items()
    )
    aggregators = sorted({r.summary["aggregator"] for r in results.values()})
    how = "; ".join(f"{a}: {AGGREGATOR_WORDS[a]}" for a in aggregators)
    text = (
        "A subject (patient) is called all when the aggregate of its cells' calibrated "
        f"probabilities reaches the patient threshold ({how}). The aggregator's threshold is "
        "chosen on the validation subjects by the rule of the cell threshold; test labels only "
        "score. Referred cells (in the referral band) are aggregated like the others and "
        "counted. Intervals: ROC-AUC by a stratified bootstrap of subjects, sensitivity and "
        "specificity exact (Clopper-Pearson); with too few subjects of a class there is none. "
        "Per test subject below: each model's aggregate and call (✗: wrong)."
    )
    return (
        f"<ul class='summary'>{verdicts}</ul>"
        + _summary_table(results)
        + caption(text)
        + _subject_table(results)
    )
