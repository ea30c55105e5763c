"""The report: Table I beside the paper's, plots, `metrics.json` for DVC and one HTML page.

Reads what the workflow wrote under `results/` (evaluate, timing, saliency, training
histories, stain and augmentation examples) and writes `table1.csv`, `table1.md`,
`metrics.json`, `plots/` (PNG figures and the CSV data behind the curves) and
`report.html` (self-contained: images inlined as data URIs). Optional inputs that are
missing leave a note in the report instead of failing it.
"""

import base64
import html
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.atomic import atomic_dir, atomic_path, write_text
from leukoflow.errors import LeukoflowError
from leukoflow.evaluate import paired_bootstrap

log = logging.getLogger(__name__)

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
DVC_METRICS = (
    "precision",
    "recall",
    "f1",
    "weighted_f1",
    "macro_f1",
    "balanced_accuracy",
    "accuracy",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
)
CV_METRICS = ("precision", "recall", "f1", "weighted_f1", "roc_auc")


def _read_json(path):
    return json.loads(Path(path).read_text())


def _optional_json(path, notes, what):
    """The JSON at `path`, or None with a note saying what is missing."""
    if Path(path).is_file():
        return _read_json(path)
    notes.append(f"{what} not found ({path}); left out of the report.")
    return None


def collect(results, archs, folds=0):
    """Everything the report needs, read from the results tree; notes list what is missing.

    Each architecture must have `main/evaluate/{arch}/metrics.json` and
    `test_predictions.csv` (LeukoflowError naming the file otherwise); timing, saliency,
    history, fold metrics, stain and augmentation files are optional.
    """
    results = Path(results)
    notes = []
    data = {"archs": list(archs), "notes": notes, "folds": folds, "results": results}
    for kind in ("metrics", "predictions", "timing", "history", "saliency", "cv"):
        data[kind] = {}
    for arch in archs:
        evaluate_dir = results / "main" / "evaluate" / arch
        for name in ("metrics.json", "test_predictions.csv"):
            if not (evaluate_dir / name).is_file():
                raise LeukoflowError(
                    f"{evaluate_dir / name} is missing: run `leukoflow evaluate` for {arch} first"
                )
        data["metrics"][arch] = _read_json(evaluate_dir / "metrics.json")
        data["predictions"][arch] = pd.read_csv(evaluate_dir / "test_predictions.csv")
        data["timing"][arch] = _optional_json(
            results / "main" / "timing" / f"{arch}.json", notes, f"timing of {arch}"
        )
        data["saliency"][arch] = _optional_json(
            results / "main" / "saliency" / arch / "saliency.json", notes, f"saliency of {arch}"
        )
        history = results / "main" / "train" / arch / "history.csv"
        if history.is_file():
            data["history"][arch] = pd.read_csv(history)
        else:
            notes.append(f"training history of {arch} not found ({history}).")
        if folds and folds >= 2:
            fold_metrics = []
            for k in range(folds):
                path = results / f"fold{k}" / "evaluate" / arch / "metrics.json"
                if path.is_file():
                    fold_metrics.append(_read_json(path)["test"])
                else:
                    notes.append(f"fold {k} of {arch} not found ({path}).")
            data["cv"][arch] = fold_metrics
    data["spread"] = _optional_json(
        results / "main" / "stain" / "spread.json", notes, "stain spread numbers"
    )
    data["stain_png"] = results / "main" / "stain" / "examples.png"
    augment = sorted((results / "main" / "stores").glob("*px/train_aug_examples.png"))
    data["augment_png"] = augment[0] if augment else None
    return data


def delta_f1_pct(f1):
    """Percent difference of each F1 from the mean F1 of all architectures (the paper's ΔF1)."""
    f1 = np.asarray(f1, float)
    return (f1 - f1.mean()) / f1.mean() * 100


def aligned_predictions(predictions):
    """One frame of the test predictions of every architecture, rows matched by image path.

    Columns: path, subject, y, and `predicted_{arch}`, `probability_{arch}` per architecture.
    LeukoflowError when the architectures were not scored on the same test images.
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


def paired_comparison(predictions, best, n_resamples=2000, seed=0):
    """{arch: (P(best has the higher F1), mean F1 gap)} by a paired subject bootstrap."""
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


def table1(data):
    """Table I as a frame: one row per architecture, ours beside the paper's numbers."""
    archs = data["archs"]
    tests = {arch: data["metrics"][arch]["test"] for arch in archs}
    f1 = np.array([tests[a]["f1"] for a in archs], float)
    best = archs[int(np.argmax(f1))]
    boot = data["metrics"][best].get("bootstrap", {})
    paired = paired_comparison(
        data["predictions"], best, int(boot.get("resamples", 2000)), int(boot.get("seed", 0))
    )
    deltas = delta_f1_pct(f1)
    rows = []
    for i, arch in enumerate(archs):
        metrics, test = data["metrics"][arch], tests[arch]
        timing = data["timing"].get(arch) or {}
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
        for name in CV_METRICS:
            values = [m[name] for m in data["cv"].get(arch, []) if m.get(name) is not None]
            row[f"{name}_cv_mean"] = float(np.mean(values)) if values else None
            row[f"{name}_cv_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if not data["cv"]:
            for name in CV_METRICS:
                row.pop(f"{name}_cv_mean"), row.pop(f"{name}_cv_sd")
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _paper(value, digits=2):
    """A number of the paper as printed there: trailing decimal zeros dropped (410, 0.8)."""
    if value is None or pd.isna(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def devices_line(table, data):
    """Where the times were measured: 'device (backend, precision, batch 1, median of N calls)'."""
    parts = []
    for arch in data["archs"]:
        timing = data["timing"].get(arch)
        if timing:
            parts.append(
                f"{timing['device']} ({timing['backend']}, {timing['precision']}, batch 1, "
                f"median of {timing['calls']} calls)"
            )
    if not parts:
        return "no timing measured"
    unique = list(dict.fromkeys(parts))
    return "; ".join(unique)


def table_markdown(table, data):
    """Table I in Markdown, CIs in brackets, the paper's numbers in parentheses."""
    cv = bool(data["cv"])
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
            f"{_fmt(row['time_ms'], 1)} ({_paper(row['paper_time_ms'], 0)})",
            f"{_fmt(row['precision'], 2)} ({_paper(row['paper_precision'])})",
            f"{_fmt(row['recall'], 2)} ({_paper(row['paper_recall'])})",
            f"{_fmt(row['f1'], 2)} [{_fmt(row['f1_lo'], 2)}, {_fmt(row['f1_hi'], 2)}] "
            f"({_paper(row['paper_f1'])})",
            f"{_fmt(row['delta_f1_pct'], 1)} ({_paper(row['paper_delta_f1_pct'], 1)})",
            f"{_fmt(row['weighted_f1'], 2)} [{_fmt(row['weighted_f1_lo'], 2)}, "
            f"{_fmt(row['weighted_f1_hi'], 2)}]",
            _fmt(row["macro_f1"], 2),
            f"{_fmt(row['roc_auc'], 2)} [{_fmt(row['roc_auc_lo'], 2)}, "
            f"{_fmt(row['roc_auc_hi'], 2)}]",
            "best" if row["is_best"] else _fmt(row["p_best_better"], 2),
        ]
        if cv:
            cells.append(f"{_fmt(row['f1_cv_mean'], 2)} ± {_fmt(row['f1_cv_sd'], 2)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in table_notes(table, data)) + "\n"


def table_notes(table, data):
    """The sentences that say how Table I was measured."""
    first = data["metrics"][data["archs"][0]]
    boot = first.get("bootstrap", {})
    best = table.loc[table["is_best"], "architecture"].iloc[0]
    return [
        f"Time: batch-1 inference latency, median; measured on {devices_line(table, data)}. "
        "The paper's times were measured on its own hardware.",
        f"Test subset: {first['n_test']} images of {first.get('n_test_subjects', '?')} subjects; "
        f"decision threshold chosen on the validation subset ({first['threshold_rule']}); "
        "precision, recall and F1 of the class `all`; weighted F1 is the C-NMC challenge metric.",
        f"95% CIs: percentile bootstrap over test subjects ({boot.get('resamples', '?')} "
        "resamples, stratified by label).",
        f"ΔF1: percent difference of F1 from the mean F1 of all architectures. P(best better): "
        f"share of paired subject resamples in which {best} (highest F1) has the higher F1.",
    ]


def metrics_for_dvc(table, data):
    """{arch: {metric: value}}: every architecture's test metrics, flat for `dvc metrics diff`."""
    out = {}
    for row in table.to_dict("records"):
        arch = row["architecture"]
        test = data["metrics"][arch]["test"]
        entry = {name: test[name] for name in DVC_METRICS if name in test}
        entry.update(
            delta_f1_pct=row["delta_f1_pct"], threshold=row["threshold"], time_ms=row["time_ms"]
        )
        out[arch] = entry
    return out


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _write_csv(frame, path):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def plot_curves(data, plots):
    """ROC and precision-recall curves of all architectures (PNG + per-arch CSV points)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    fig_roc, ax_roc = plt.subplots(figsize=(5.2, 4.6))
    fig_pr, ax_pr = plt.subplots(figsize=(5.2, 4.6))
    for arch in data["archs"]:
        frame = data["predictions"][arch]
        y, p = frame["y"].to_numpy(int), frame["probability_all"].to_numpy(float)
        test = data["metrics"][arch]["test"]
        fpr, tpr, thresholds = roc_curve(y, p)
        precision, recall, _ = precision_recall_curve(y, p)
        ax_roc.plot(fpr, tpr, label=f"{arch} (AUC {_fmt(test['roc_auc'], 3)})")
        ax_pr.plot(recall, precision, label=f"{arch} (AP {_fmt(test['pr_auc'], 3)})")
        thresholds = np.minimum(thresholds, 1.0)  # scikit-learn starts with +inf
        _write_csv(
            pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds}),
            plots / "roc" / f"{arch}.csv",
        )
        _write_csv(
            pd.DataFrame({"recall": recall, "precision": precision}), plots / "pr" / f"{arch}.csv"
        )
        _write_csv(
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
    prevalence = data["predictions"][data["archs"][0]]["y"].mean()
    ax_pr.axhline(prevalence, color="grey", lw=0.8, ls="--")
    ax_pr.set(xlabel="recall of all", ylabel="precision of all", ylim=(0, 1.02))
    ax_pr.set_title("Precision-recall, test subset")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    return [_save(fig_roc, plots / "roc.png"), _save(fig_pr, plots / "pr.png")]


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


def plot_confusion(data, plots):
    """Confusion matrices (counts and row shares) of every architecture at its threshold."""
    plt = _pyplot()
    archs = data["archs"]
    fig, axes = _panel_grid(plt, len(archs), 3.3, 3.1)
    for ax, arch in zip(axes.flat, archs, strict=False):
        matrix = np.asarray(data["metrics"][arch]["test"]["confusion"], float)
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
        ax.set_title(f"{arch} (t = {data['metrics'][arch]['threshold']:.2f})", fontsize=10)
    fig.tight_layout()
    return [_save(fig, plots / "confusion.png")]


def plot_calibration(data, plots):
    """Reliability diagram: mean observed `all` rate against mean P(all) in 10 bins."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    edges = np.linspace(0, 1, 11)
    for arch in data["archs"]:
        frame = data["predictions"][arch]
        p, y = frame["probability_all"].to_numpy(float), frame["y"].to_numpy(float)
        idx = np.minimum((p * 10).astype(int), 9)
        count = np.bincount(idx, minlength=10)
        used = count > 0
        mean_p = np.bincount(idx, weights=p, minlength=10)[used] / count[used]
        rate = np.bincount(idx, weights=y, minlength=10)[used] / count[used]
        ece = data["metrics"][arch]["test"]["ece"]
        ax.plot(mean_p, rate, marker="o", ms=3, label=f"{arch} (ECE {_fmt(ece, 3)})")
    ax.plot(edges, edges, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="mean predicted P(all)", ylabel="observed share of all", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Calibration, test subset")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return [_save(fig, plots / "calibration.png")]


def plot_training(data, plots):
    """Training curves from history.csv: loss and validation loss, validation weighted F1."""
    archs = [a for a in data["archs"] if a in data["history"]]
    if not archs:
        return []
    plt = _pyplot()
    fig, axes = _panel_grid(plt, len(archs), 3.8, 2.9)
    for ax, arch in zip(axes.flat, archs, strict=False):
        history = data["history"][arch]
        _write_csv(history, plots / "history" / f"{arch}.csv")  # for `dvc plots diff`
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
    return [_save(fig, plots / "training_curves.png")]


def plot_subjects(data, plots):
    """Per-subject accuracy of every architecture (rows: test subjects, hem first)."""
    plt = _pyplot()
    frames = []
    for arch in data["archs"]:
        part = pd.DataFrame(data["metrics"][arch]["per_subject"]).assign(architecture=arch)
        frames.append(part)
    table = pd.concat(frames)
    wide = table.pivot_table(index=["label", "subject"], columns="architecture", values="accuracy")
    wide = wide[data["archs"]].sort_index(level=[0, 1], ascending=[False, True])
    fig, ax = plt.subplots(figsize=(1.1 * len(data["archs"]) + 2.2, 0.28 * len(wide) + 1.4))
    image = ax.imshow(wide.to_numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(data["archs"])), data["archs"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(wide)), [f"{s} ({lab})" for lab, s in wide.index], fontsize=7)
    fig.colorbar(image, ax=ax, label="accuracy", shrink=0.8)
    ax.set_title("Accuracy per test subject", fontsize=10)
    _write_csv(table[["architecture", "subject", "label", "n", "accuracy"]], plots / "subjects.csv")
    return [_save(fig, plots / "per_subject.png")]


def plot_paper(table, plots):
    """Ours beside the paper: F1 and batch-1 time per architecture."""
    plt = _pyplot()
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
    return [_save(fig, plots / "paper_comparison.png")]


def plot_cv(data, table, plots):
    """Test F1 of every fold's model, per architecture, with the main model's F1."""
    if not any(data["cv"].values()):
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, arch in enumerate(data["archs"]):
        values = [m["f1"] for m in data["cv"].get(arch, [])]
        ax.scatter(
            np.full(len(values), i), values, color="C0", s=18, label="folds" if i == 0 else ""
        )
        ax.scatter(
            [i], [table.loc[i, "f1"]], color="C3", marker="D", label="main" if i == 0 else ""
        )
    ax.set_xticks(range(len(data["archs"])), data["archs"], rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="test F1 of all", ylim=(0, 1), title="Cross-validation: test F1 per fold model")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return [_save(fig, plots / "cv_f1.png")]


def compose_saliency(data, plots, width=640, columns=2):
    """All architectures' saliency figures in a grid, plots/saliency.png (each `width` px)."""
    from PIL import Image

    parts = []
    for arch in data["archs"]:
        path = data["results"] / "main" / "saliency" / arch / "saliency.png"
        if path.is_file():
            with Image.open(path) as image:
                image = image.convert("RGB")
                height = round(image.height * width / image.width)
                parts.append(image.resize((width, height), Image.Resampling.LANCZOS))
        else:
            data["notes"].append(f"saliency figure of {arch} not found ({path}).")
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


def copy_figure(source, target, notes, what):
    """Copy an existing PNG into plots/, or note that it is missing."""
    if source is None or not Path(source).is_file():
        notes.append(f"{what} not found ({source}); left out of the report.")
        return []
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return [target]


def make_plots(data, table, plots):
    """Every figure of the report in `plots`; returns {name: path}."""
    plots.mkdir(parents=True, exist_ok=True)
    paths = []
    paths += plot_paper(table, plots)
    paths += plot_curves(data, plots)
    paths += plot_confusion(data, plots)
    paths += plot_calibration(data, plots)
    paths += plot_subjects(data, plots)
    paths += plot_training(data, plots)
    paths += plot_cv(data, table, plots)
    paths += compose_saliency(data, plots)
    paths += copy_figure(
        data["augment_png"], plots / "augmentation.png", data["notes"], "augmentation examples"
    )
    paths += copy_figure(data["stain_png"], plots / "stain.png", data["notes"], "stain examples")
    return {Path(p).stem: Path(p) for p in paths}


# ---------------------------------------------------------------- HTML

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
    "calibration": "Reliability diagram: within 10 bins of predicted P(all), the observed "
    "share of all cells against the mean prediction. ECE = expected calibration error.",
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
    "augmented copies (rotation through any angle, flips, small noise, brightness and contrast).",
    "stain": "Stain normalisation: cells before and after normalisation to the reference fitted "
    "on the training subjects.",
}
SECTIONS = (  # title, rows of figures (figures of one row side by side)
    ("Ours and the paper", [["paper_comparison"]]),
    ("Discrimination", [["roc", "pr"]]),
    ("Decisions and calibration", [["confusion"], ["calibration", "per_subject"]]),
    ("Training", [["training_curves"], ["cv_f1"]]),
    ("Saliency", [["saliency"]]),
    ("Data preparation", [["stain", "augmentation"]]),
)


def data_uri(path):
    """A PNG file as a base64 data URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_table(header, rows, row_classes=None):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value, lo=None, hi=None, paper=None, digits=3, paper_digits=2):
    text = html.escape(_fmt(value, digits))
    if lo is not None and hi is not None and not pd.isna(lo):
        text += f'<span class="ci">[{_fmt(lo, digits)}, {_fmt(hi, digits)}]</span>'
    if paper is not None and not pd.isna(paper):
        text += f'<span class="paper">paper {_paper(paper, paper_digits)}</span>'
    return text


def html_table1(table, data):
    """Table I as HTML: ours with CIs, the paper's value under each of ours."""
    header = [
        "Architecture",
        "Time, ms",
        "Precision",
        "Recall",
        "F1",
        "ΔF1, %",
        "Weighted F1",
        "Macro F1",
        "ROC-AUC",
        "P(best better)",
    ]
    rows = []
    for r in table.to_dict("records"):
        cells = [
            html.escape(r["architecture"]),
            _cell(r["time_ms"], paper=r["paper_time_ms"], digits=1, paper_digits=0)
            + f'<span class="ci">p95 {_fmt(r["time_p95_ms"], 1)}</span>',
            _cell(r["precision"], r["precision_lo"], r["precision_hi"], r["paper_precision"]),
            _cell(r["recall"], r["recall_lo"], r["recall_hi"], r["paper_recall"]),
            _cell(r["f1"], r["f1_lo"], r["f1_hi"], r["paper_f1"]),
            _cell(r["delta_f1_pct"], paper=r["paper_delta_f1_pct"], digits=1, paper_digits=1),
            _cell(r["weighted_f1"], r["weighted_f1_lo"], r["weighted_f1_hi"]),
            _cell(r["macro_f1"], r["macro_f1_lo"], r["macro_f1_hi"]),
            _cell(r["roc_auc"], r["roc_auc_lo"], r["roc_auc_hi"]),
            "best" if r["is_best"] else _cell(r["p_best_better"], digits=2),
        ]
        rows.append(cells)
    classes = ["best" if r else "" for r in table["is_best"]]
    notes = "".join(f'<p class="caption">{html.escape(n)}</p>' for n in table_notes(table, data))
    return f'<div class="table-wrap">{_html_table(header, rows, classes)}</div>{notes}'


def html_more_metrics(table, data):
    """Further test metrics, the validation F1 and the throughput, one row per architecture."""
    header = [
        "Architecture",
        "Balanced acc.",
        "PR-AUC",
        "Brier",
        "ECE",
        "Threshold",
        "Val F1",
        "Val weighted F1",
        "Batch throughput, images/s",
    ] + ([f"{m}, CV mean ± sd" for m in ("F1", "Weighted F1")] if data["cv"] else [])
    rows = []
    for r in table.to_dict("records"):
        val = data["metrics"][r["architecture"]]["val"]
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
                f"{_fmt(r[f'{m}_cv_mean'])} ± {_fmt(r[f'{m}_cv_sd'])}"
                for m in (("f1", "weighted_f1") if data["cv"] else ())
            ]
        )
    caption = (
        "Balanced accuracy: mean recall of the two classes. PR-AUC: average precision. Brier: "
        "mean squared error of P(all). ECE: expected calibration error (10 bins). Threshold: "
        "chosen on the validation subset, whose F1 is shown beside. Throughput: batch of the "
        "timing job through the compiled model."
    )
    if data["cv"]:
        caption += (
            f" CV: test metrics of the models of the {data['folds']} cross-validation folds "
            "(mean ± sd)."
        )
    return (
        f'<div class="table-wrap">{_html_table(header, rows)}</div>'
        f'<p class="caption">{html.escape(caption)}</p>'
    )


def _method_order(method):
    from leukoflow.saliency import METHODS

    return METHODS.index(method) if method in METHODS else len(METHODS)


def html_saliency_measures(data):
    """The saliency measures of every architecture and method, as an HTML table."""
    rows = []
    for arch in data["archs"]:
        measures = data["saliency"].get(arch)
        if not measures:
            continue
        methods = sorted(measures["methods"], key=_method_order)
        for method in methods:
            m = measures["methods"][method]
            verdict = "pass" if m["sanity_pass"] else "<b>fail</b>"
            rows.append(
                [
                    html.escape(arch),
                    html.escape(method.replace("_", " ")),
                    f"{_fmt(m['mass_in_cell'], 2)} (area {_fmt(measures['cell_area'], 2)})",
                    f"{_fmt(m['deletion_auc'], 3)} "
                    f"(random {_fmt(measures['random_deletion_auc'], 3)})",
                    f"{_fmt(m['sanity_spearman'], 2)} {verdict}",
                ]
            )
    if not rows:
        return ""
    header = [
        "Architecture",
        "Method",
        "Mass in cell",
        "Deletion AUC",
        f"Rank corr. with random model (< {data['saliency_limit']})",
    ]
    caption = (
        "Measured, not just drawn. Mass in cell: share of the map's mass on cell pixels (a "
        "uniform map gets the cell's area share). Deletion AUC: mean probability of the true "
        "class while the most salient pixels are blacked out (lower is better; compare the "
        "random order). Sanity check: Spearman rank correlation, on cell pixels, between the "
        "maps of the trained model and of a copy with re-initialised weights; a map that does "
        "not depend on what the model learned fails it."
    )
    return _html_table(header, rows) + f'<p class="caption">{html.escape(caption)}</p>'


def _flatten(prefix, value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def html_spread(data):
    """The stain spread numbers (spread.json), flattened into a two-column table."""
    if not data["spread"]:
        return ""
    rows = []
    for key, value in _flatten("", data["spread"]):
        text = _fmt(value, 4) if isinstance(value, float) else html.escape(json.dumps(value))
        rows.append([html.escape(key), text])
    caption = (
        "Between-subject spread of the mean foreground colour (optical density) before and "
        "after stain normalisation, from results/main/stain/spread.json."
    )
    return _html_table(["quantity", "value"], rows) + f'<p class="caption">{caption}</p>'


def _figure(name, path):
    return (
        f'<figure><img src="{data_uri(path)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
    )


def render_html(data, table, figures):
    """The report page (a string), every image inlined."""
    from leukoflow.templates import PAGE

    sections = []
    for title, rows in SECTIONS:
        parts = []
        for names in rows:
            shown = "".join(_figure(n, figures[n]) for n in names if n in figures)
            if shown:
                parts.append(f'<div class="row">{shown}</div>')
        if title == "Saliency":
            parts.append(html_saliency_measures(data))
        if title == "Data preparation":
            parts.append(html_spread(data))
        parts = [p for p in parts if p]
        if parts:
            sections.append(f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>")
    best = table.loc[table["is_best"]].iloc[0]
    summary_items = [
        f"{len(table)} architectures; test subset of "
        f"{data['metrics'][best['architecture']]['n_test']} images.",
        f"Highest F1 of all: {best['architecture']} with {_fmt(best['f1'], 3)} "
        f"[{_fmt(best['f1_lo'], 3)}, {_fmt(best['f1_hi'], 3)}], weighted F1 "
        f"{_fmt(best['weighted_f1'], 3)}.",
        f"Inference times measured on {devices_line(table, data)}.",
    ]
    summary = "<ul class='summary'>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary_items)
    summary += "</ul>"
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data["notes"])
    return PAGE.substitute(
        title="leukoflow: ALL vs normal cells, Table I reproduced",
        generated=html.escape(
            f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
            f"{data['results']} · architectures: {', '.join(data['archs'])}"
        ),
        summary=summary,
        notes=notes,
        table=html_table1(table, data),
        more=html_more_metrics(table, data),
        sections="\n".join(sections),
    )


def build_report(results, archs, folds=0, out_dir=None):
    """Write table1.csv, table1.md, metrics.json, plots/ and report.html; returns the table."""
    from leukoflow.saliency import SANITY_LIMIT

    if not archs:
        raise LeukoflowError("report: no architectures given (--archs)")
    out_dir = Path(out_dir if out_dir is not None else results)
    data = collect(results, archs, folds)
    data["saliency_limit"] = SANITY_LIMIT
    table = table1(data)
    with atomic_path(out_dir / "table1.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_text(out_dir / "table1.md", table_markdown(table, data))
    metrics = metrics_for_dvc(table, data)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with atomic_dir(out_dir / "plots") as plots:
        figures = make_plots(data, table, plots)
        page = render_html(data, table, figures)
    write_text(out_dir / "report.html", page)
    for note in data["notes"]:
        log.warning("%s", note)
    log.info("report: %s, %d figures", out_dir / "report.html", len(figures))
    return table
