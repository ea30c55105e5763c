"""The report page: summary and verdicts, Table I, further metrics, one section per group
of figures.

Each section names its figures (rows shown side by side) and, where it has one, the
renderer of its own extra content (a table), so the page builder treats all alike.
"""

import base64
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leukoflow.evaluate.saliency import METHODS, SANITY_LIMIT
from leukoflow.report.beyond import html_ablation, html_calibration, html_referral
from leukoflow.report.collect import ReportData
from leukoflow.report.columns import Column, shown_columns
from leukoflow.report.markup import caption, table_html
from leukoflow.report.patients import CAPTION as PATIENTS_CAPTION
from leukoflow.report.patients import FIGURE as PATIENTS_FIGURE
from leukoflow.report.patients import html_patients
from leukoflow.report.robustness import CAPTION as ROBUSTNESS_CAPTION
from leukoflow.report.robustness import html_robustness
from leukoflow.report.table import ci_note, devices_line, fmt, fmt_paper
from leukoflow.report.template import PAGE

CAPTIONS = {
    "paper_comparison": "Our test F1 (with its 95% subject-bootstrap CI) and batch-1 inference "
    "time beside the numbers of the paper's Table I. Times are on a log scale; ours were "
    "measured on the device named above the table, the paper's on its own hardware.",
    "roc": "ROC curves on the test subset (positive class: all). The area (AUC) does not "
    "depend on the decision threshold.",
    "pr": "Precision-recall curves on the test subset; the dashed line is the share of all "
    "cells (a random classifier). AP = average precision.",
    "confusion": "Confusion matrices on the test subset at each model's threshold (chosen on "
    "the validation subset): counts and the share of each true class.",
    "calibration": "Reliability diagrams before (left) and after (right) temperature scaling: "
    "within 10 bins of predicted P(all), the observed share of all cells against the mean "
    "prediction; on the diagonal a model is calibrated. ECE = expected calibration error.",
    "risk_coverage": "Risk-coverage curves on the test subset: the cells are taken from the "
    "most confident (calibrated probability farthest from the threshold) down; at each "
    "coverage, the error rate of the cells taken. A dot marks each model's referral band "
    "(chosen on validation): the share it decides and its error rate there. Dashed, dotted and "
    "dash-dotted: the cells taken from the lowest spread over the test-time views (tta_spread), "
    "the lowest MC-dropout std (mc_std) or, for an ensemble, the lowest spread of its members' "
    "probabilities (member_spread) up; the smaller AURC ranks the errors better.",
    "ablation": "Ablation: each factor level's effect against its reference on F1, weighted "
    "F1 and ROC-AUC (mean difference over the other factors' settings, on shared test "
    "cells), with 95% paired subject-bootstrap CIs; right of the dashed line the level "
    "scores higher.",
    "robustness": ROBUSTNESS_CAPTION,
    PATIENTS_FIGURE: PATIENTS_CAPTION,
    "per_subject": "Accuracy per test subject. Images of one subject are correlated, which is "
    "why confidence intervals resample subjects rather than images.",
    "training_curves": "Training curves from history.csv: training and validation loss (blue, "
    "solid and dashed) and validation weighted F1 (red), which selects the kept epoch. Dotted "
    "lines mark the change from the frozen warm-up to fine-tuning.",
    "cv_f1": "Cross-validation: test F1 of each fold's model (blue) and of the main model (red).",
    "saliency": "Saliency maps (like the paper's Fig. 1) of one normal (hem) and one ALL test "
    "cell per architecture: the image, then each method's map (top row) and its overlay (bottom "
    "row). Vanilla gradient, SmoothGrad, Integrated Gradients (black baseline) and Grad-CAM on "
    "the last feature map.",
    "augmentation": "Offline augmentation of the training store: one source cell and eight "
    "augmented copies (rotation through any angle, flips, small noise, brightness and contrast; "
    "with augment.stain_jitter, HED stain jitter, its haematoxylin, eosin and DAB factors in "
    "each title).",
    "stain": "Stain normalisation: training cells of up to four subjects as stored (top row) and "
    "normalised to the reference fitted on the training subjects (bottom row, the method in the "
    "title). Normalisation should bring the subjects' hue and intensity closer together while "
    "each cell keeps its own structure: the darker, blue-purple nucleus and the paler cytoplasm "
    "(the synthetic cells are drawn in Romanowsky colours from three absorbers, which a "
    "two-stain method cannot fit exactly).",
}


def data_uri(path: Path) -> str:
    """A PNG file as a base64 data URI.

    Args:
        path: the PNG file.

    Returns:
        'data:image/png;base64,...'.
    """
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _cell(value, lo=None, hi=None, paper=None, digits=3, paper_digits=2):
    text = html.escape(fmt(value, digits))
    if lo is not None and hi is not None and not pd.isna(lo):
        text += f'<span class="ci">[{fmt(lo, digits)}, {fmt(hi, digits)}]</span>'
    if paper is not None and not pd.isna(paper):
        text += f'<span class="paper">paper {fmt_paper(paper, paper_digits)}</span>'
    return text


def html_cell(column: Column, row: dict) -> str:
    """One cell of Table I in HTML: the value, its interval (or why there is none) and the
    paper's value under it.

    Args:
        column: the column (`leukoflow.report.columns.COLUMNS`).
        row: the model's row of Table I.

    Returns:
        The cell (HTML).
    """
    name, note = column.name, ci_note(row)
    if column.kind == "model":
        return html.escape(row[name])
    if column.kind == "vs_best":
        if row["is_best"]:
            return "best"
        return "too few test subjects" if note else _cell(row[name], digits=column.html_digits)
    if column.kind == "cv":
        stem = name.removesuffix("_cv")
        return f"{fmt(row[f'{stem}_cv_mean'])} ± {fmt(row[f'{stem}_cv_sd'])}"
    paper = row[f"paper_{name}"] if column.paper_digits is not None else None
    lo, hi = (row[f"{name}_lo"], row[f"{name}_hi"]) if column.ci and not note else (None, None)
    text = _cell(row[name], lo, hi, paper, column.html_digits, column.paper_digits)
    if column.ci and note:
        text += f'<span class="ci">{html.escape(note)}</span>'
    if column.kind == "time":
        text += f'<span class="ci">p95 {fmt(row["time_p95_ms"], 1)}</span>'
    return text


def html_table1(table: pd.DataFrame, notes: list[str]) -> str:
    """Table I as HTML: ours with CIs, the paper's value under each of ours.

    Args:
        table: Table I from `table.table1`.
        notes: the sentences under it (the data line and `table.table_notes`).

    Returns:
        The table (the columns of `leukoflow.report.columns.COLUMNS`) and its notes (HTML).
    """
    columns = shown_columns(table.columns)
    rows = [[html_cell(c, r) for c in columns] for r in table.to_dict("records")]
    classes = ["best" if r else "" for r in table["is_best"]]
    header = [c.header for c in columns]
    return table_html(header, rows, classes) + "".join(caption(n) for n in notes)


def html_more_metrics(table: pd.DataFrame, data: ReportData) -> str:
    """Further test metrics, the validation F1 and the throughput, one row per model.

    Args:
        table: Table I from `table.table1`.
        data: the collected report data.

    Returns:
        The table and its caption (HTML); CV columns only with cross-validation.
    """
    header = [
        "Architecture",
        "Balanced acc.",
        "PR-AUC",
        "Brier (calibrated)",
        "ECE (calibrated)",
        "Threshold",
        "Val F1",
        "Val weighted F1",
        "Batch throughput, images/s",
    ] + ([f"{m}, CV mean ± sd" for m in ("F1", "Weighted F1")] if data.cv else [])
    rows = []
    for r in table.to_dict("records"):
        val = data.metrics[r["architecture"]]["val"]
        rows.append(
            [
                html.escape(r["architecture"]),
                _cell(r["balanced_accuracy"]),
                _cell(r["pr_auc"]),
                _cell(r["brier"]),
                _cell(r["ece"]),
                _cell(r["threshold"]),
                _cell(val["f1"]),
                _cell(val["weighted_f1"]),
                _cell(r["throughput_images_per_s"], digits=1),
            ]
            + [
                f"{fmt(r[f'{m}_cv_mean'])} ± {fmt(r[f'{m}_cv_sd'])}"
                for m in (("f1", "weighted_f1") if data.cv else ())
            ]
        )
    text = (
        "Balanced accuracy: mean recall of the two classes. PR-AUC: average precision. Brier: "
        "mean squared error of the calibrated P(all). ECE: expected calibration error (10 "
        "bins), calibrated (before and after: Calibration section). Threshold: chosen on the "
        "validation subset, whose F1 is shown beside. Throughput: batch of the timing job "
        "through the compiled model."
    )
    if data.cv:
        text += (
            f" CV: test metrics of the models of the {data.folds} cross-validation folds "
            "(mean ± sd)."
        )
    return table_html(header, rows) + caption(text)


def _method_order(method):
    return METHODS.index(method) if method in METHODS else len(METHODS)


def html_saliency_measures(data: ReportData) -> str:
    """The saliency measures of every architecture and method.

    Args:
        data: the collected report data.

    Returns:
        The table and its caption (HTML), or '' when no architecture has measures.
    """
    rows = []
    for arch in data.archs:
        measures = data.saliency.get(arch)
        if not measures:
            continue
        for method in sorted(measures["methods"], key=_method_order):
            m = measures["methods"][method]
            verdict = "pass" if m["sanity_pass"] else "<b>fail</b>"
            rows.append(
                [
                    html.escape(arch),
                    html.escape(method.replace("_", " ")),
                    f"{fmt(m['mass_in_cell'], 2)} (area {fmt(measures['cell_area'], 2)})",
                    f"{fmt(m['deletion_auc'], 3)} "
                    f"(random {fmt(measures['random_deletion_auc'], 3)})",
                    f"{fmt(m['sanity_spearman'], 2)} {verdict}",
                ]
            )
    if not rows:
        return ""
    header = [
        "Architecture",
        "Method",
        "Mass in cell",
        "Deletion AUC",
        f"Rank corr. with random model (< {SANITY_LIMIT})",
    ]
    text = (
        "Measured, not just drawn. Mass in cell: share of the map's mass on cell pixels (a "
        "uniform map gets the cell's area share). Deletion AUC: mean probability of the true "
        "class while the most salient pixels are blacked out (lower is better; compare the "
        "random order). Sanity check: Spearman rank correlation, on cell pixels, between the "
        "maps of the trained model and of a copy with re-initialised weights; a map that does "
        "not depend on what the model learned fails it."
    )
    return table_html(header, rows) + caption(text)


def _flatten(prefix, value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def html_spread(data: ReportData) -> str:
    """The stain spread numbers (spread.json), flattened into a two-column table.

    Args:
        data: the collected report data.

    Returns:
        The table and its caption (HTML), or '' when the spread numbers are missing.
    """
    if not data.spread:
        return ""
    rows = []
    for key, value in _flatten("", data.spread):
        text = fmt(value, 4) if isinstance(value, float) else html.escape(json.dumps(value))
        rows.append([html.escape(key), text])
    text = (
        "Between-subject spread of the mean foreground colour (optical density) before and "
        f"after stain normalisation, from {data.spread_path}."
    )
    return table_html(["quantity", "value"], rows) + caption(text)


def html_model_cards(data: ReportData) -> str:
    """The key lines of every bundle's model card (results/models/NAME/README.md), the
    architectures' and the ensembles'.

    Args:
        data: the collected report data.

    Returns:
        The table and its caption (HTML), or '' when no bundle was given.
    """
    from leukoflow.deploy.modelcard import key_lines

    lines = {name: key_lines(data.bundles[name]) for name in data.models if name in data.bundles}
    if not lines:
        return ""
    header = ["Bundle", *next(iter(lines.values()))]
    rows = [
        [html.escape(name), *(html.escape(text) for text in values.values())]
        for name, values in lines.items()
    ]
    text = (
        "Each model bundle (results/models/NAME, an architecture or an ensemble) carries a "
        "model card, README.md, made from its bundle.json alone: intended use (research, not "
        "diagnosis), training data, preprocessing, training settings (an ensemble's members, "
        "method and weights), test metrics with subject-bootstrap intervals, threshold, "
        "calibration (temperature; ECE before -> after), the referral band, the ONNX files, "
        "limitations and versions. Its key lines are above; the limitations listed are those "
        "of the model itself (every card also names the general ones)."
    )
    return table_html(header, rows) + caption(text)


@dataclass(frozen=True)
class Section:
    """One section of the page after the tables.

    Attributes:
        title: the heading.
        figure_rows: rows of figure names (stems in the plots folder, keys of CAPTIONS);
            the figures of one row are shown side by side, missing ones left out.
        extra: renders more content after the figures (HTML, '' for none).
    """

    title: str
    figure_rows: tuple[tuple[str, ...], ...]
    extra: Callable[[ReportData], str] | None = None


SECTIONS = (
    Section("Ours and the paper", (("paper_comparison",),)),
    Section("Discrimination", (("roc", "pr"),)),
    Section("Decisions", (("confusion",), ("per_subject",))),
    Section("Calibration", (("calibration",),), html_calibration),
    Section("Referral", (("risk_coverage",),), html_referral),
    Section("Patients", ((PATIENTS_FIGURE,),), html_patients),
    Section("Ablation", (("ablation",),), html_ablation),
    Section("Robustness", (("robustness",),), html_robustness),
    Section("Training", (("training_curves",), ("cv_f1",))),
    Section("Saliency", (("saliency",),), html_saliency_measures),
    Section("Data preparation", (("stain", "augmentation"),), html_spread),
    Section("Model cards", (), html_model_cards),
)


def _figure(name, path):
    return (
        f'<figure><img src="{data_uri(path)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
    )


def render_section(section: Section, data: ReportData, figures: dict[str, Path]) -> str:
    """One section of the page.

    Args:
        section: what the section shows.
        data: the collected report data.
        figures: {name: PNG path} of the figures that were drawn.

    Returns:
        The section (HTML), or '' when it has nothing to show.
    """
    parts = []
    for names in section.figure_rows:
        shown = "".join(_figure(n, figures[n]) for n in names if n in figures)
        if shown:
            parts.append(f'<div class="row">{shown}</div>')
    if section.extra is not None:
        parts.append(section.extra(data))
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return f"<section><h2>{html.escape(section.title)}</h2>{''.join(parts)}</section>"


def render_html(
    data: ReportData,
    table: pd.DataFrame,
    figures: dict[str, Path],
    notes: list[str],
    verdicts: list[str],
) -> str:
    """The report page, every image inlined.

    Args:
        data: the collected report data.
        table: Table I from `table.table1`.
        figures: {name: PNG path} of the figures that were drawn.
        notes: Table I's notes, the data line first.
        verdicts: what the reader must not miss (`verdicts.verdicts`), at the top.

    Returns:
        The page (HTML).
    """
    sections = [render_section(s, data, figures) for s in SECTIONS]
    best = table.loc[table["is_best"]].iloc[0]
    summary_items = [
        f"{len(data.archs)} architectures, {len(data.ensembles)} ensembles; test subset of "
        f"{data.metrics[best['architecture']]['n_test']} images.",
        f"Highest F1 of the architectures: {best['architecture']} with {fmt(best['f1'], 3)} "
        f"[{ci_note(best) or fmt(best['f1_lo'], 3) + ', ' + fmt(best['f1_hi'], 3)}], weighted F1 "
        f"{fmt(best['weighted_f1'], 3)}.",
        f"Inference times measured on {devices_line(data)}.",
    ]
    summary = "".join(f'<p class="note">{html.escape(s)}</p>' for s in (notes[0], *verdicts))
    summary += "<ul class='summary'>"
    summary += "".join(f"<li>{html.escape(s)}</li>" for s in summary_items) + "</ul>"
    missing = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    return PAGE.substitute(
        title="leukoflow: ALL vs normal cells, Table I reproduced",
        generated=html.escape(
            f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
            f"models: {', '.join(data.models)} · {notes[0]}"
        ),
        summary=summary,
        notes=missing,
        table=html_table1(table, notes),
        more=html_more_metrics(table, data),
        sections="\n".join(s for s in sections if s),
    )
