"""The report's robustness section: the stress test's heat map and, per shift, which model
held up best and worst.

The stress tables (`leukoflow.evaluate.stress`, one per model) hold each shift's change of F1,
weighted F1 and ROC-AUC from the unshifted test with a paired subject-bootstrap CI. The heat
map shows ΔF1 for every model and (shift, strength); the table names, for each shift, the most
and the least robust model by their worst ΔF1 over the shift's strengths, and says so where
their CIs overlap (the data cannot tell them apart).
"""

import html
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.report.collect import ReportData
from leukoflow.report.markup import caption, table_html
from leukoflow.report.plots import pyplot, save_figure, write_csv

CAPTION = (
    "Stress test: the change of test F1 (shifted minus unshifted) of each model under each "
    "acquisition shift, applied to the prepared test images (stain_off: prepared without "
    "stain normalisation). Threshold and temperature are those fitted on the unshifted "
    "validation subset. Red: F1 drops."
)


def _column(row) -> str:
    return f"{row.shift}/{row.strength}"


def plot_robustness(data: ReportData, plots: Path) -> list[Path]:
    """The heat map of ΔF1, models (rows) x shifts (columns), values written in the cells.

    Args:
        data: the collected report data (`stress`).
        plots: the plots folder.

    Returns:
        [robustness.png] (its data in robustness.csv), or [] without stress tables.
    """
    if data.stress is None or data.stress.empty:
        return []
    stress = data.stress.assign(column=[_column(r) for r in data.stress.itertuples()])
    models = [m for m in data.models if m in set(stress["model"])]
    columns = list(dict.fromkeys(stress["column"]))
    grid = stress.pivot(index="model", columns="column", values="delta_f1").loc[models, columns]
    write_csv(stress.drop(columns="column"), plots / "robustness.csv")
    values = grid.to_numpy(float)
    limit = max(0.05, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.05)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.2 + 0.45 * len(models)))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        text = "–" if np.isnan(value) else f"{value:+.2f}"
        dark = not np.isnan(value) and abs(value) > 0.6 * limit
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    fig.colorbar(image, ax=ax, label="ΔF1", shrink=0.8)
    ax.set_title("ΔF1 under acquisition shifts (test subset)", fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, plots / "robustness.png")]


def _with_ci(row) -> str:
    lo, hi = row["delta_f1_lo"], row["delta_f1_hi"]
    interval = "no CI" if pd.isna(lo) or pd.isna(hi) else f"[{lo:+.3f}, {hi:+.3f}]"
    return f"{row['model']} {row['delta_f1']:+.3f} {interval} ({row['strength']})"


def shift_verdicts(stress: pd.DataFrame) -> list[dict]:
    """Per shift: the most and least robust model by their worst ΔF1 over its strengths.

    Args:
        stress: the stress tables of every model (model, shift, strength, delta_f1 and its
            CI, ci_note).

    Returns:
        [{shift, most, least, reading}]: `most` and `least` as 'model ΔF1 [CI] (strength)',
        each model at the strength where its F1 dropped most; `reading` says whether their
        CIs are apart, overlap, or cannot be compared.
    """
    out = []
    for shift, rows in stress.dropna(subset=["delta_f1"]).groupby("shift", sort=False):
        rows = rows.loc[rows.groupby("model", sort=False)["delta_f1"].idxmin()]
        most = rows.loc[rows["delta_f1"].idxmax()]
        least = rows.loc[rows["delta_f1"].idxmin()]
        notes = [n for n in rows.get("ci_note", pd.Series(dtype=str)).dropna() if n]
        if len(rows) < 2:
            reading = "one model only"
        elif notes:
            reading = f"{notes[0]}: no verdict"
        elif pd.isna([most["delta_f1_lo"], least["delta_f1_hi"]]).any():
            reading = "no CI of a change: the models cannot be told apart"
        elif most["delta_f1_lo"] > least["delta_f1_hi"]:
            reading = f"{most['model']} is more robust than {least['model']} (CIs apart)"
        else:
            reading = "CIs overlap: this test set does not tell the models apart"
        out.append(
            {
                "shift": shift,
                "most": _with_ci(most),
                "least": _with_ci(least),
                "reading": reading,
            }
        )
    return out


def html_robustness(data: ReportData) -> str:
    """The verdict table of the robustness section (HTML), '' without stress tables."""
    if data.stress is None or data.stress.empty:
        return ""
    rows = [
        [html.escape(str(v[k])) for k in ("shift", "most", "least", "reading")]
        for v in shift_verdicts(data.stress)
    ]
    header = ["Shift", "Most robust (ΔF1, 95% CI, strength)", "Least robust", "Reading"]
    text = (
        "For each shift, each model is judged at the strength where its F1 dropped most: the "
        "models with the smallest and the largest such drop, with paired subject-bootstrap CIs "
        "of the change. Every model's ΔF1, Δweighted F1 and ΔROC-AUC with CIs are in "
        "plots/robustness.csv."
    )
    return table_html(header, rows) + caption(text)
