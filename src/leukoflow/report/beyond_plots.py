"""The figures beyond Table I: calibration before and after, risk-coverage, the ablation.

PNG files in the plots folder: calibration (reliability diagrams before and after
temperature scaling), risk_coverage (with each model's referral band marked) and, with an
ablation, ablation (each factor's effects with their CIs); with stress tables, robustness
(`leukoflow.report.robustness`); with patients files, cells_needed
(`leukoflow.report.patients`). Beside them: risk_coverage/ (one CSV of points per model).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.evaluate.referral import referred_by, risk_coverage
from leukoflow.evaluate.uncertainty import UNCERTAINTY_COLUMNS
from leukoflow.report.collect import ReportData
from leukoflow.report.patients import plot_cells_needed
from leukoflow.report.plots import pyplot, save_figure, write_csv
from leukoflow.report.robustness import plot_robustness
from leukoflow.report.table import fmt

BINS = 10


def _reliability(ax, y, p, label):
    """One reliability curve: observed share of `all` against mean P(all) in `BINS` bins."""
    idx = np.minimum((p * BINS).astype(int), BINS - 1)
    count = np.bincount(idx, minlength=BINS)
    used = count > 0
    mean_p = np.bincount(idx, weights=p, minlength=BINS)[used] / count[used]
    rate = np.bincount(idx, weights=y, minlength=BINS)[used] / count[used]
    ax.plot(mean_p, rate, marker="o", ms=3, label=label)


def plot_calibration(data: ReportData, plots: Path) -> list[Path]:
    """Reliability diagrams of every model before and after temperature scaling.

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [calibration.png]
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.6), sharey=True)
    arms = (("before", "probability_all"), ("after", "calibrated_probability_all"))
    for ax, (arm, column) in zip(axes, arms, strict=True):
        for name in data.models:
            frame = data.predictions[name]
            calibration = data.metrics[name]["calibration"]
            ece = f"ECE {fmt(calibration[arm]['ece'], 3)}"
            label = f"{name} ({ece})"
            if arm == "after":
                label = f"{name} (T {fmt(calibration['temperature'], 2)}, {ece})"
            _reliability(ax, frame["y"].to_numpy(float), frame[column].to_numpy(float), label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="mean predicted P(all)", xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{arm.capitalize()} temperature scaling, test subset")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("observed share of all")
    fig.tight_layout()
    return [save_figure(fig, plots / "calibration.png")]


def plot_risk_coverage(data: ReportData, plots: Path) -> list[Path]:
    """Risk-coverage curves of every model, each referral band's operating point marked.

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [risk_coverage.png]; the points go to risk_coverage/{model}.csv, and with the cells
        ranked by an uncertainty column (dashed: tta_spread, dotted: mc_std, dash-dotted:
        member_spread) to risk_coverage/{model}_by_{column}.csv.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    for i, name in enumerate(data.models):
        frame, metrics = data.predictions[name], data.metrics[name]
        y = frame["y"].to_numpy(int)
        p = frame["calibrated_probability_all"].to_numpy(float)
        coverage, risk, aurc = risk_coverage(y, p, metrics["threshold"])
        write_csv(
            pd.DataFrame({"coverage": coverage, "risk": risk}),
            plots / "risk_coverage" / f"{name}.csv",
        )
        color = f"C{i % 10}"
        ax.step(coverage, risk, where="post", color=color, label=f"{name} (AURC {fmt(aurc, 3)})")
        for column, dashes in zip(UNCERTAINTY_COLUMNS, ("--", ":", "-."), strict=True):
            if column in frame and frame[column].notna().all():
                confidence = -frame[column].to_numpy(float)
                c, r, area = risk_coverage(y, p, metrics["threshold"], confidence)
                write_csv(
                    pd.DataFrame({"coverage": c, "risk": r}),
                    plots / "risk_coverage" / f"{name}_by_{column}.csv",
                )
                label = f"{name} by {column} (AURC {fmt(area, 3)})"
                ax.step(c, r, where="post", color=color, ls=dashes, label=label)
        kept = ~referred_by(metrics["referral"], p, frame)
        if kept.any():
            errors = (p[kept] >= metrics["threshold"]).astype(int) != y[kept]
            ax.plot([kept.mean()], [errors.mean()], "o", color=color, ms=6)
    ax.set(xlabel="coverage (share of cells decided)", ylabel="risk (error rate)", xlim=(0, 1))
    ax.set_ylim(bottom=0)
    ax.set_title("Risk-coverage, test subset (dots: the referral rule)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return [save_figure(fig, plots / "risk_coverage.png")]


def plot_ablation(data: ReportData, plots: Path) -> list[Path]:
    """Each ablation effect on F1, weighted F1 and ROC-AUC with its CI, one panel per metric.

    Args:
        data: the collected report data (`ablation`).
        plots: the plots folder.

    Returns:
        [ablation.png], or [] without an ablation.
    """
    if data.ablation is None or data.ablation.empty:
        return []
    plt = pyplot()
    effects = data.ablation
    labels = [
        f"{r.architecture}: {r.factor} {r.level} vs {r.reference}" for r in effects.itertuples()
    ]
    metrics = (("f1", "F1"), ("weighted_f1", "weighted F1"), ("roc_auc", "ROC-AUC"))
    fig, axes = plt.subplots(
        1, 3, figsize=(12, 0.5 * len(effects) + 1.6), sharey=True, squeeze=False
    )
    y = np.arange(len(effects))[::-1]
    for ax, (metric, title) in zip(axes[0], metrics, strict=True):
        point = effects[metric].astype(float).to_numpy()
        lo = effects[f"{metric}_lo"].astype(float).to_numpy()
        hi = effects[f"{metric}_hi"].astype(float).to_numpy()
        err = np.nan_to_num(np.vstack([point - lo, hi - point]))
        ax.errorbar(point, y, xerr=err, fmt="o", capsize=3, color="C0")
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.locator_params(axis="x", nbins=5)
        ax.set_title(f"Δ{title}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, labels, fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, plots / "ablation.png")]


def make_beyond_plots(data: ReportData, plots: Path) -> dict[str, Path]:
    """The figures beyond Table I in `plots`.

    Args:
        data: the collected report data.
        plots: the folder to write into (it exists).

    Returns:
        {name: path} of the figures written, the name being the file's stem.
    """
    paths = plot_calibration(data, plots) + plot_risk_coverage(data, plots)
    paths += plot_ablation(data, plots) + plot_robustness(data, plots)
    paths += plot_cells_needed(data, plots)
    return {Path(p).stem: Path(p) for p in paths}
