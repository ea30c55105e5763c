"""Table I beside the paper's, the paired comparison with the best model, and `metrics.json`.

The table is a frame with one row per architecture: our test metrics with their 95%
subject-bootstrap CIs, ΔF1, the timing, the paired comparison with the architecture of
the highest F1, cross-validation mean and sd, and the paper's numbers.
"""

import numpy as np
import pandas as pd

from leukoflow.errors import LeukoflowError
from leukoflow.evaluate import CI_METRICS, paired_bootstrap
from leukoflow.report.collect import ReportData

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
CI_COLUMNS = ("precision", "recall", "f1", "weighted_f1", "macro_f1", "roc_auc")
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


def delta_f1_pct(f1) -> np.ndarray:
    """Percent difference of each F1 from the mean F1 of all architectures (the paper's ΔF1).

    Args:
        f1: F1 of each architecture.

    Returns:
        ΔF1 in percent, one per architecture.
    """
    f1 = np.asarray(f1, float)
    return (f1 - f1.mean()) / f1.mean() * 100


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


def table1(data: ReportData) -> pd.DataFrame:
    """Table I as a frame: one row per architecture, ours beside the paper's numbers.

    Args:
        data: the collected report data.

    Returns:
        One row per architecture in table order; CV columns only with cross-validation.

    Raises:
        LeukoflowError: the architectures were not scored on the same test images.
    """
    archs = data.archs
    tests = {arch: data.metrics[arch]["test"] for arch in archs}
    f1 = np.array([tests[a]["f1"] for a in archs], float)
    best = archs[int(np.argmax(f1))]
    boot = data.metrics[best].get("bootstrap", {})
    paired = paired_comparison(
        data.predictions, best, int(boot.get("resamples", 2000)), int(boot.get("seed", 0))
    )
    deltas = delta_f1_pct(f1)
    rows = []
    for i, arch in enumerate(archs):
        metrics, test = data.metrics[arch], tests[arch]
        timing = data.timing.get(arch) or {}
        row = {
            "architecture": arch,
            "time_ms": timing.get("latency_ms", {}).get("median"),
            "time_p95_ms": timing.get("latency_ms", {}).get("p95"),
            "throughput_images_per_s": timing.get("throughput_images_per_s"),
            "device": timing.get("device"),
        }
        for name in CI_COLUMNS:
            row[name] = test[name]
            lo, hi = metrics["ci"].get(name, [None, None])
            row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
            if name == "f1":
                row["delta_f1_pct"] = float(deltas[i])
        for name in ("balanced_accuracy", "pr_auc", "brier", "ece"):
            row[name] = test[name]
        row["threshold"] = metrics["threshold"]
        row["is_best"] = arch == best
        row["p_best_better"] = paired[arch][0] if arch in paired else None
        row["f1_gap_to_best"] = paired[arch][1] if arch in paired else 0.0
        for name, value in zip(PAPER_COLUMNS, PAPER_TABLE.get(arch, (None,) * 5), strict=True):
            row[f"paper_{name}"] = value
        if data.cv:
            for name in CV_METRICS:
                values = [m[name] for m in data.cv.get(arch, []) if m.get(name) is not None]
                row[f"{name}_cv_mean"] = float(np.mean(values)) if values else None
                row[f"{name}_cv_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
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
        One sentence each on time, test subset, CIs, ΔF1 and the paired comparison.
    """
    first = data.metrics[data.archs[0]]
    boot = first.get("bootstrap", {})
    best = table.loc[table["is_best"], "architecture"].iloc[0]
    return [
        f"Time: batch-1 inference latency, median; measured on {devices_line(data)}. "
        "The paper's times were measured on its own hardware.",
        f"Test subset: {first['n_test']} images of {first.get('n_test_subjects', '?')} subjects; "
        f"decision threshold chosen on the validation subset ({first['threshold_rule']}); "
        "precision, recall and F1 of the class `all`; weighted F1 is the C-NMC challenge metric.",
        f"95% CIs: percentile bootstrap over test subjects ({boot.get('resamples', '?')} "
        "resamples, stratified by label).",
        f"ΔF1: percent difference of F1 from the mean F1 of all architectures. P(best better): "
        f"share of paired subject resamples in which {best} (highest F1) has the higher F1.",
    ]


def table_markdown(table: pd.DataFrame, data: ReportData) -> str:
    """Table I in Markdown, CIs in brackets, the paper's numbers in parentheses.

    Args:
        table: Table I from `table1`.
        data: the collected report data.

    Returns:
        The table followed by its notes as a bullet list.
    """
    cv = bool(data.cv)
    header = [
        "Architecture",
        "Time, ms (paper)",
        "Precision (paper)",
        "Recall (paper)",
        "F1 [95% CI] (paper)",
        "ΔF1 % (paper)",
        "Weighted F1 [95% CI]",
        "Macro F1",
        "ROC-AUC [95% CI]",
        "P(best better)",
    ] + (["F1 CV mean ± sd"] if cv else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [
            f"**{row['architecture']}**" if row["is_best"] else row["architecture"],
            f"{fmt(row['time_ms'], 1)} ({fmt_paper(row['paper_time_ms'], 0)})",
            f"{fmt(row['precision'], 2)} ({fmt_paper(row['paper_precision'])})",
            f"{fmt(row['recall'], 2)} ({fmt_paper(row['paper_recall'])})",
            f"{fmt(row['f1'], 2)} [{fmt(row['f1_lo'], 2)}, {fmt(row['f1_hi'], 2)}] "
            f"({fmt_paper(row['paper_f1'])})",
            f"{fmt(row['delta_f1_pct'], 1)} ({fmt_paper(row['paper_delta_f1_pct'], 1)})",
            f"{fmt(row['weighted_f1'], 2)} [{fmt(row['weighted_f1_lo'], 2)}, "
            f"{fmt(row['weighted_f1_hi'], 2)}]",
            fmt(row["macro_f1"], 2),
            f"{fmt(row['roc_auc'], 2)} [{fmt(row['roc_auc_lo'], 2)}, {fmt(row['roc_auc_hi'], 2)}]",
            "best" if row["is_best"] else fmt(row["p_best_better"], 2),
        ]
        if cv:
            cells.append(f"{fmt(row['f1_cv_mean'], 2)} ± {fmt(row['f1_cv_sd'], 2)}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = "\n".join(f"- {n}" for n in table_notes(table, data))
    return "\n".join(lines) + "\n\n" + notes + "\n"


def metrics_for_dvc(table: pd.DataFrame, data: ReportData) -> dict[str, dict[str, float]]:
    """Every architecture's test metrics, flat for `dvc metrics diff`.

    Args:
        table: Table I from `table1`.
        data: the collected report data.

    Returns:
        {arch: {metric: value}}: every test metric evaluate computes with a CI, and ΔF1,
        the threshold and the batch-1 time.
    """
    out = {}
    for row in table.to_dict("records"):
        arch = row["architecture"]
        test = data.metrics[arch]["test"]
        entry = {name: test[name] for name in CI_METRICS if name in test}
        entry.update(
            delta_f1_pct=row["delta_f1_pct"], threshold=row["threshold"], time_ms=row["time_ms"]
        )
        out[arch] = entry
    return out
