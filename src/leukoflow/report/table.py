"""Table I beside the paper's, the paired comparison with the best model, and `metrics.json`.

The table is a frame with one row per architecture, then one per ensemble: our test
metrics with their 95% subject-bootstrap CIs, ΔF1, the timing, the paired comparison with
the single architecture of the highest F1, cross-validation mean and sd, and the paper's
numbers. An ensemble's row is computed exactly like an architecture's; its time is the sum
of its members' (they run one after the other on one image). Its columns are those of
`leukoflow.report.columns.COLUMNS`. When evaluate withheld the intervals (too few test
subjects of a class: `ci_note` in its metrics), the row has no interval and no paired
comparison, and its `ci_note` column says why.
"""

import numpy as np
import pandas as pd

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.metrics import CI_METRICS, paired_bootstrap
from leukoflow.report.collect import ReportData
from leukoflow.report.columns import COLUMNS, Column, markdown_header, shown_columns
from leukoflow.train.livelog import comparable_summary

# Table I of the paper: inference time (ms), precision, recall, F1, ΔF1 (%).
PAPER_TABLE = {
    "Xception": (410, 0.81, 0.88, 0.79, 1.2),
    "VGG16": (564, 0.84, 0.86, 0.80, 2.5),
    "ResNet152V2": (549, 0.84, 0.88, 0.81, 3.8),
    "EfficientNetB5": (790, 0.84, 0.92, 0.83, 5.1),
    "EfficientNetV2M": (654, 0.86, 0.91, 0.85, 9.0),
    "SimpleNet": (438, 0.69, 0.98, 0.62, -19.2),
}
PAPER_COLUMNS = ("time_ms", "precision", "recall", "f1", "delta_f1_pct")
FURTHER_METRICS = ("balanced_accuracy", "pr_auc", "brier", "ece")  # the HTML's further table
CV_METRICS = ("precision", "recall", "f1", "weighted_f1", "roc_auc")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals; '–' for a missing value (None or NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_paper(value: float | None, digits: int = 2) -> str:
    """A number of the paper as printed there: trailing decimal zeros dropped (410, 0.8)."""
    if value is None or pd.isna(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def delta_f1_pct(f1, reference=None) -> np.ndarray:
    """Percent difference of each F1 from a mean F1 (the paper's ΔF1).

    Args:
        f1: F1 of each model.
        reference: the F1 values whose mean is the reference (default: `f1` itself, the
            mean of all architectures, as in the paper).

    Returns:
        ΔF1 in percent, one per value of `f1`.
    """
    f1 = np.asarray(f1, float)
    mean = np.mean(np.asarray(f1 if reference is None else reference, float))
    return (f1 - mean) / mean * 100


def aligned_predictions(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One frame of the test predictions of every architecture, rows matched by image path.

    Args:
        predictions: {arch: test_predictions.csv as a frame}.

    Returns:
        Columns path, subject, y, and `predicted_{arch}`, `probability_{arch}` per
        architecture.

    Raises:
        LeukoflowError: the architectures were not scored on the same test images.
    """
    merged = None
    for arch, frame in predictions.items():
        part = frame[["path", "subject", "y", "predicted", "probability_all"]].rename(
            columns={"predicted": f"predicted_{arch}", "probability_all": f"probability_{arch}"}
        )
        if merged is None:
            merged = part
            continue
        if set(part["path"]) != set(merged["path"]):
            raise LeukoflowError(
                f"{arch} was scored on other test images than {next(iter(predictions))}: "
                "the paired comparison needs the same test subset"
            )
        merged = merged.merge(part.drop(columns=["subject", "y"]), on="path", validate="1:1")
    return merged


def paired_comparison(
    predictions: dict[str, pd.DataFrame], best: str, n_resamples: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Every other architecture against `best` by a paired subject bootstrap.

    Args:
        predictions: {arch: test predictions}, all on the same test images.
        best: the architecture the others are compared with.
        n_resamples: bootstrap resamples of the test subjects.
        seed: seed of the resampling.

    Returns:
        {arch: (P(best has the higher F1), mean F1 gap)} for every arch but `best`.

    Raises:
        LeukoflowError: the architectures were not scored on the same test images.
    """
    merged = aligned_predictions(predictions)
    y, subjects = merged["y"].to_numpy(int), merged["subject"].astype(str).to_numpy()
    out = {}
    for arch in predictions:
        if arch == best:
            continue
        out[arch] = paired_bootstrap(
            y,
            subjects,
            merged[f"predicted_{best}"].to_numpy(int),
            merged[f"predicted_{arch}"].to_numpy(int),
            n_resamples,
            seed,
        )
    return out


def _timing(data, name):
    """{median, p95, throughput, device} of a model; an ensemble's median is its members'
    sum (None when a member has no timing)."""
    if name in data.archs:
        timing = data.timing.get(name) or {}
        latency = timing.get("latency_ms", {})
        return {
            "time_ms": latency.get("median"),
            "time_p95_ms": latency.get("p95"),
            "throughput_images_per_s": timing.get("throughput_images_per_s"),
            "device": timing.get("device"),
        }
    members = [_timing(data, m) for m in data.metrics[name]["ensemble"]["members"]]
    known = all(m["time_ms"] is not None for m in members)
    return {
        "time_ms": sum(m["time_ms"] for m in members) if known else None,
        "time_p95_ms": None,
        "throughput_images_per_s": None,
        "device": members[0]["device"],
    }


def table1(data: ReportData) -> pd.DataFrame:
    """Table I as a frame: one row per architecture, then per ensemble, beside the paper.

    Args:
        data: the collected report data.

    Returns:
        One row per model in table order (`kind`: architecture or ensemble); `is_best`
        marks the single architecture of the highest F1, which every other row is compared
        with; ΔF1 is relative to the mean F1 of the architectures; CV columns only with
        cross-validation.

    Raises:
        LeukoflowError: the models were not scored on the same test images.
    """
    archs, models = data.archs, data.models
    tests = {name: data.metrics[name]["test"] for name in models}
    arch_f1 = np.array([tests[a]["f1"] for a in archs], float)
    best = archs[int(np.argmax(arch_f1))]
    boot = data.metrics[best].get("bootstrap", {})
    compared = not data.metrics[best].get("ci_note")  # none on too few test subjects
    paired = {}
    if compared:
        paired = paired_comparison(
            {m: data.predictions[m] for m in models},
            best,
            int(boot.get("resamples", 2000)),
            int(boot.get("seed", 0)),
        )
    deltas = delta_f1_pct([tests[m]["f1"] for m in models], reference=arch_f1)
    rows = []
    for i, name in enumerate(models):
        metrics, test = data.metrics[name], tests[name]
        row = {
            "architecture": name,
            "kind": "ensemble" if name in data.ensembles else "architecture",
            **_timing(data, name),
        }
        for column in COLUMNS:
            if column.kind == "metric":
                row[column.name] = test[column.name]
            if column.kind == "delta":
                row[column.name] = float(deltas[i])
            if column.ci == "bootstrap":
                lo, hi = metrics["ci"].get(column.name, [None, None])
                row[f"{column.name}_lo"], row[f"{column.name}_hi"] = lo, hi
        for metric in FURTHER_METRICS:
            row[metric] = test[metric]
        row["threshold"] = metrics["threshold"]
        row["is_best"] = name == best
        row["p_best_better"] = paired[name][0] if name in paired else None
        row["f1_gap_to_best"] = paired[name][1] if name in paired else (0.0 if compared else None)
        paper = PAPER_TABLE.get(name) if name in archs else None
        for column, value in zip(PAPER_COLUMNS, paper or (None,) * 5, strict=True):
            row[f"paper_{column}"] = value
        if data.cv:
            for metric in CV_METRICS:
                values = [m[metric] for m in data.cv.get(name, []) if m.get(metric) is not None]
                row[f"{metric}_cv_mean"] = float(np.mean(values)) if values else None
                row[f"{metric}_cv_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if metrics.get("ci_note"):
            row["ci_note"] = metrics["ci_note"]
        rows.append(row)
    return pd.DataFrame(rows)


def devices_line(data: ReportData) -> str:
    """Where the times were measured.

    Args:
        data: the collected report data.

    Returns:
        'device (backend, precision, batch 1, median of N calls)' for each distinct
        measurement, joined by '; ', or 'no timing measured'. The precision is the model's
        dtype policy, the one it was trained and is deployed in (its compute dtypes for
        records without one).
    """
    parts = []
    for arch in data.archs:
        timing = data.timing.get(arch)
        if timing:
            precision = timing.get("dtype_policy", timing["precision"])
            parts.append(
                f"{timing['device']} ({timing['backend']}, {precision}, batch 1, "
                f"median of {timing['calls']} calls)"
            )
    if not parts:
        return "no timing measured"
    return "; ".join(dict.fromkeys(parts))


def table_notes(table: pd.DataFrame, data: ReportData) -> list[str]:
    """The sentences that say how Table I was measured.

    Args:
        table: Table I from `table1`.
        data: the collected report data.

    Returns:
        One sentence each on time, test subset, CIs, ΔF1, the paired comparison and, with
        ensembles, what each one combines.
    """
    first = data.metrics[data.archs[0]]
    boot = first.get("bootstrap", {})
    best = table.loc[table["is_best"], "architecture"].iloc[0]
    notes = [
        f"Time: batch-1 inference latency, median; measured on {devices_line(data)}. "
        "The paper's times were measured on its own hardware.",
        f"Test subset: {first['n_test']} images of {first.get('n_test_subjects', '?')} subjects; "
        "decision threshold chosen on the validation subset "
        f"({first['threshold_rule']}, on the probabilities calibrated by a temperature fitted "
        "there too); precision, recall and F1 of the class `all`; weighted F1 is the C-NMC "
        "challenge metric.",
        f"95% CIs: percentile bootstrap over test subjects ({boot.get('resamples', '?')} "
        "resamples, stratified by label)."
        if not first.get("ci_note")
        else f"{first['ci_note']}: fewer than {first.get('min_subjects_per_class', '?')} "
        "of each class (evaluate.min_subjects_per_class), so no 95% CI and no paired "
        "comparison: a bootstrap over so few subjects is no interval.",
        "ΔF1: percent difference of F1 from the mean F1 of all architectures. P(best better): "
        f"share of paired subject resamples in which {best} (the single architecture of the "
        "highest F1) has the higher F1, a tie counting half: near 1 it is really better, near "
        "0.5 the difference is noise, near 0 the other model is better.",
    ]
    for name in data.ensembles:
        combiner = data.metrics[name]["ensemble"]
        how = {
            "mean": "the mean probability",
            "stacked": "a logistic regression on the validation logits",
        }.get(combiner["method"], combiner["method"])
        notes.append(
            f"{name}: an ensemble, {how} of {', '.join(combiner['members'])}; scored like "
            "an architecture, its time the sum of its members'."
        )
    return notes


def ci_note(row: dict) -> str | None:
    """The row's "CI: too few test subjects (...)" when its intervals were withheld, else None."""
    note = row.get("ci_note")
    return None if note is None or pd.isna(note) else str(note)


def markdown_cell(column: Column, row: dict) -> str:
    """One cell of Table I in Markdown: the value, its interval in brackets (or why there is
    none), the paper's value in parentheses.

    Args:
        column: the column (`leukoflow.report.columns.COLUMNS`).
        row: the model's row of Table I.

    Returns:
        The cell's text.
    """
    name, note = column.name, ci_note(row)
    if column.kind == "model":
        return f"**{row[name]}**" if row["is_best"] else row[name]
    if column.kind == "vs_best":
        if row["is_best"]:
            return "best"
        return "too few test subjects" if note else fmt(row[name], column.digits)
    if column.kind == "cv":
        stem = name.removesuffix("_cv")
        return f"{fmt(row[f'{stem}_cv_mean'], 2)} ± {fmt(row[f'{stem}_cv_sd'], 2)}"
    text = fmt(row[name], column.digits)
    if column.ci and column.markdown_ci:
        lo, hi = (fmt(row[f"{name}_{end}"], column.digits) for end in ("lo", "hi"))
        text += f" [{note}]" if note else f" [{lo}, {hi}]"
    if column.paper_digits is not None:
        text += f" ({fmt_paper(row[f'paper_{name}'], column.paper_digits)})"
    return text


def table_markdown(
    table: pd.DataFrame, data: ReportData, notes: list[str], verdicts: list[str]
) -> str:
    """Table I in Markdown, CIs in brackets, the paper's numbers in parentheses.

    Args:
        table: Table I from `table1`.
        data: the collected report data (not read: the table holds all it shows).
        notes: the sentences under the table (the data line and `table_notes`).
        verdicts: what the reader must not miss (`leukoflow.report.verdicts.verdicts`).

    Returns:
        The table (the columns of `COLUMNS`), its notes as a bullet list, then the verdicts.
    """
    columns = shown_columns(table.columns)
    header = [markdown_header(c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        lines.append("| " + " | ".join(markdown_cell(c, row) for c in columns) + " |")
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text + "\nVerdicts:\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"


def metrics_for_dvc(table: pd.DataFrame, data: ReportData) -> dict[str, dict[str, float]]:
    """Every model's test metrics, flat for `dvc metrics diff`.

    Args:
        table: Table I from `table1`.
        data: the collected report data.

    Returns:
        {model: {metric: value}}: every test metric evaluate computes with a CI, ΔF1, the
        threshold, the batch-1 time, the temperature, the ECE before calibration and the
        share the referral band refers; an architecture's `training`: the last epoch's
        figures as DVCLive logged them, but its wall-clock time (when its summary was given);
        `ci_note` where evaluate withheld the intervals (too few test subjects).
    """
    out = {}
    for row in table.to_dict("records"):
        arch = row["architecture"]
        test = data.metrics[arch]["test"]
        entry = {name: test[name] for name in CI_METRICS if name in test}
        metrics = data.metrics[arch]
        entry.update(
            delta_f1_pct=row["delta_f1_pct"],
            threshold=row["threshold"],
            time_ms=row["time_ms"],
            temperature=metrics["calibration"]["temperature"],
            ece_uncalibrated=metrics["calibration"]["before"]["ece"],
            share_referred=metrics["referral"]["test"]["share_referred"],
        )
        if arch in data.live:
            entry["training"] = comparable_summary(data.live[arch])
        if metrics.get("ci_note"):
            entry["ci_note"] = metrics["ci_note"]
        out[arch] = entry
    return out
