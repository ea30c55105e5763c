"""The figures of Table I's models, and the CSV data behind the curves for `dvc plots`.

Figures are PNG files in the plots folder: paper_comparison, roc, pr, confusion,
per_subject, training_curves, cv_f1 (with cross-validation), saliency (the architectures'
saliency figures in a grid), augmentation and stain (copies of the workflow's example
figures). Beside them: roc/, pr/, confusion/, history/ (one CSV per model) and
subjects.csv. The figures beyond Table I (calibration, risk-coverage, ablation) are in
`beyond_plots`.
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.core.atomic import atomic_path
from leukoflow.report.collect import ReportData
from leukoflow.report.table import fmt


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save `fig` as a PNG at `path` (atomically), close it, return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    pyplot().close(fig)
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` to `path` as CSV (atomically)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def plot_curves(data: ReportData, plots: Path) -> list[Path]:
    """ROC and precision-recall curves of all architectures (PNG + per-arch CSV points).

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [roc.png, pr.png]; the points go to roc/ and pr/, the decisions to confusion/.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = pyplot()
    fig_roc, ax_roc = plt.subplots(figsize=(5.2, 4.6))
    fig_pr, ax_pr = plt.subplots(figsize=(5.2, 4.6))
    for arch in data.models:
        frame = data.predictions[arch]
        y, p = frame["y"].to_numpy(int), frame["probability_all"].to_numpy(float)
        test = data.metrics[arch]["test"]
        fpr, tpr, thresholds = roc_curve(y, p)
        precision, recall, _ = precision_recall_curve(y, p)
        ax_roc.plot(fpr, tpr, label=f"{arch} (AUC {fmt(test['roc_auc'], 3)})")
        ax_pr.plot(recall, precision, label=f"{arch} (AP {fmt(test['pr_auc'], 3)})")
        thresholds = np.minimum(thresholds, 1.0)  # scikit-learn starts with +inf
        write_csv(
            pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds}),
            plots / "roc" / f"{arch}.csv",
        )
        write_csv(
            pd.DataFrame({"recall": recall, "precision": precision}), plots / "pr" / f"{arch}.csv"
        )
        write_csv(
            pd.DataFrame(
                {
                    "actual": np.where(y == 1, "all", "hem"),
                    "predicted": np.where(frame["predicted"] == 1, "all", "hem"),
                }
            ),
            plots / "confusion" / f"{arch}.csv",
        )
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(xlabel="false positive rate (hem called all)", ylabel="true positive rate (recall)")
    ax_roc.set_title("ROC, test subset")
    prevalence = data.predictions[data.archs[0]]["y"].mean()
    ax_pr.axhline(prevalence, color="grey", lw=0.8, ls="--")
    ax_pr.set(xlabel="recall of all", ylabel="precision of all", ylim=(0, 1.02))
    ax_pr.set_title("Precision-recall, test subset")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    return [save_figure(fig_roc, plots / "roc.png"), save_figure(fig_pr, plots / "pr.png")]


def _panel_grid(plt, panels, width, height):
    """A figure of `panels` axes, up to three per row (`width` x `height` inches each).

    Returns (figure, 2-D axes array); axes beyond `panels` are switched off.
    """
    cols = min(3, panels)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_axis_off()
    return fig, axes


def plot_confusion(data: ReportData, plots: Path) -> list[Path]:
    """Confusion matrices (counts and row shares) of every model at its threshold.

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [confusion.png]
    """
    plt = pyplot()
    archs = data.models
    fig, axes = _panel_grid(plt, len(archs), 3.3, 3.1)
    for ax, arch in zip(axes.flat, archs, strict=False):
        matrix = np.asarray(data.metrics[arch]["test"]["confusion"], float)
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{int(count)}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=9,
            )
        ax.set_xticks([0, 1], ["hem", "all"])
        ax.set_yticks([0, 1], ["hem", "all"])
        ax.set(xlabel="predicted", ylabel="true")
        ax.set_title(f"{arch} (t = {data.metrics[arch]['threshold']:.2f})", fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, plots / "confusion.png")]


def plot_training(data: ReportData, plots: Path) -> list[Path]:
    """Training curves from history.csv: loss and validation loss, validation weighted F1.

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [training_curves.png], or [] without any history; the histories go to history/.
    """
    archs = [a for a in data.archs if a in data.history]
    if not archs:
        return []
    plt = pyplot()
    fig, axes = _panel_grid(plt, len(archs), 3.8, 2.9)
    for ax, arch in zip(axes.flat, archs, strict=False):
        history = data.history[arch]
        write_csv(history, plots / "history" / f"{arch}.csv")  # for `dvc plots diff`
        epoch = history["epoch"] + (1 if history["epoch"].min() == 0 else 0)
        for column, style in (("loss", "-"), ("val_loss", "--")):
            if column in history:
                ax.plot(epoch, history[column], style, color="C0", label=column)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss", color="C0")
        if "val_weighted_f1" in history:
            twin = ax.twinx()
            twin.plot(epoch, history["val_weighted_f1"], color="C3", marker=".", label="val wF1")
            twin.set_ylabel("val weighted F1", color="C3")
            twin.set_ylim(0, 1)
        if "phase" in history and history["phase"].nunique() > 1:
            changes = epoch[history["phase"].ne(history["phase"].shift()).to_numpy()][1:]
            for x in changes:
                ax.axvline(x - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(arch, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return [save_figure(fig, plots / "training_curves.png")]


def plot_subjects(data: ReportData, plots: Path) -> list[Path]:
    """Per-subject accuracy of every model (rows: test subjects, hem first).

    Args:
        data: the collected report data.
        plots: the plots folder.

    Returns:
        [per_subject.png]; the accuracies go to subjects.csv.
    """
    plt = pyplot()
    models = data.models
    frames = []
    for arch in models:
        part = pd.DataFrame(data.metrics[arch]["per_subject"]).assign(architecture=arch)
        frames.append(part)
    table = pd.concat(frames)
    wide = table.pivot_table(index=["label", "subject"], columns="architecture", values="accuracy")
    wide = wide[models].sort_index(level=[0, 1], ascending=[False, True])
    fig, ax = plt.subplots(figsize=(1.1 * len(models) + 2.2, 0.28 * len(wide) + 1.4))
    image = ax.imshow(wide.to_numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(wide)), [f"{s} ({lab})" for lab, s in wide.index], fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy", shrink=0.8)
    ax.set_title("Accuracy per test subject", fontsize=10)
    write_csv(table[["architecture", "subject", "label", "n", "accuracy"]], plots / "subjects.csv")
    return [save_figure(fig, plots / "per_subject.png")]


def plot_paper(table: pd.DataFrame, plots: Path) -> list[Path]:
    """Ours beside the paper: F1 and batch-1 time per model.

    Args:
        table: Table I from `table.table1`.
        plots: the plots folder.

    Returns:
        [paper_comparison.png]
    """
    plt = pyplot()
    x = np.arange(len(table))
    fig, (ax_f1, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6))
    err = np.vstack([table["f1"] - table["f1_lo"], table["f1_hi"] - table["f1"]]).astype(float)
    ax_f1.bar(x - 0.2, table["f1"], 0.4, yerr=np.nan_to_num(err), capsize=3, label="ours (95% CI)")
    ax_f1.bar(x + 0.2, table["paper_f1"].astype(float), 0.4, label="paper", color="C7")
    ax_f1.set(ylabel="F1 of all", ylim=(0, 1), title="F1, test subset")
    ax_t.bar(x - 0.2, table["time_ms"].astype(float), 0.4, label="ours")
    ax_t.bar(x + 0.2, table["paper_time_ms"].astype(float), 0.4, label="paper", color="C7")
    ax_t.set(ylabel="ms per image (batch 1)", title="Inference time")
    ax_t.set_yscale("log")
    for ax in (ax_f1, ax_t):
        ax.set_xticks(x, table["architecture"], rotation=25, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, plots / "paper_comparison.png")]


def plot_cv(data: ReportData, table: pd.DataFrame, plots: Path) -> list[Path]:
    """Test F1 of every fold's model, per architecture, with the main model's F1.

    Args:
        data: the collected report data.
        table: Table I from `table.table1`.
        plots: the plots folder.

    Returns:
        [cv_f1.png], or [] without cross-validation.
    """
    if not any(data.cv.values()):
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, arch in enumerate(data.archs):
        values = [m["f1"] for m in data.cv.get(arch, [])]
        ax.scatter(
            np.full(len(values), i), values, color="C0", s=18, label="folds" if i == 0 else ""
        )
        ax.scatter(
            [i], [table.loc[i, "f1"]], color="C3", marker="D", label="main" if i == 0 else ""
        )
    ax.set_xticks(range(len(data.archs)), data.archs, rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="test F1 of all", ylim=(0, 1), title="Cross-validation: test F1 per fold model")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, plots / "cv_f1.png")]


def compose_saliency(
    data: ReportData, plots: Path, width: int = 640, columns: int = 2
) -> list[Path]:
    """All architectures' saliency figures in a grid, `plots`/saliency.png.

    Args:
        data: the collected report data (`saliency_png` holds the figures found).
        plots: the plots folder.
        width: width of each architecture's figure in the grid, pixels.
        columns: figures per row of the grid.

    Returns:
        [the grid's path], or [] when no architecture has a saliency figure.
    """
    from PIL import Image

    parts = []
    for arch in data.archs:
        if arch in data.saliency_png:
            with Image.open(data.saliency_png[arch]) as image:
                image = image.convert("RGB")
                height = round(image.height * width / image.width)
                parts.append(image.resize((width, height), Image.Resampling.LANCZOS))
    if not parts:
        return []
    columns = min(columns, len(parts))
    grid = [parts[i : i + columns] for i in range(0, len(parts), columns)]
    heights = [max(p.height for p in row) for row in grid]
    canvas = Image.new("RGB", (width * columns, sum(heights)), "white")
    for r, row in enumerate(grid):
        for c, part in enumerate(row):
            canvas.paste(part, (c * width, sum(heights[:r])))
    with atomic_path(plots / "saliency.png") as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return [plots / "saliency.png"]


def copy_figure(source: Path | None, target: Path) -> list[Path]:
    """Copy a PNG of the workflow into the plots folder.

    Args:
        source: the PNG, or None when it is missing (collect noted that).
        target: where it goes.

    Returns:
        [target], or [] when there is no source.
    """
    if source is None:
        return []
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return [target]


def make_plots(data: ReportData, table: pd.DataFrame, plots: Path) -> dict[str, Path]:
    """Every figure of Table I's models in `plots`.

    Args:
        data: the collected report data.
        table: Table I from `table.table1`.
        plots: the folder to write into (created if needed).

    Returns:
        {name: path} of the figures written, the name being the file's stem.
    """
    plots.mkdir(parents=True, exist_ok=True)
    paths = []
    paths += plot_paper(table, plots)
    paths += plot_curves(data, plots)
    paths += plot_confusion(data, plots)
    paths += plot_subjects(data, plots)
    paths += plot_training(data, plots)
    paths += plot_cv(data, table, plots)
    paths += compose_saliency(data, plots)
    paths += copy_figure(data.augment_png, plots / "augmentation.png")
    paths += copy_figure(data.stain_png, plots / "stain.png")
    return {Path(p).stem: Path(p) for p in paths}
