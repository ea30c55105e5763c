"""Test-set evaluation: threshold chosen on validation, metrics, subject bootstrap.

The positive class is `all` (label 1). Every reported metric is computed by one vectorised
function, `weighted_metrics`, on integer sample weights: weights of ones give the plain
metrics, and the multiplicities of a bootstrap resample give the metrics of the resampled
pool without copying images. Resampling is over **subjects** (all images of a drawn subject
come along), stratified by the subject's label, because images of one subject are not
independent. `run_evaluate` is the `evaluate` job: it predicts the validation and test
stores and writes the metrics and both prediction tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.atomic import atomic_path, write_text
from leukoflow.errors import LeukoflowError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ECE_BINS = 10
CI_METRICS = (
    "precision",
    "recall",
    "f1",
    "weighted_f1",
    "macro_f1",
    "balanced_accuracy",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
    "accuracy",
)
PREDICTION_COLUMNS = ["row", "path", "subject", "y", "probability_all", "predicted"]


def _safe_div(num, den):
    """num / den elementwise, 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _ranking_metrics(y, p, w):
    """ROC-AUC and average precision of scores `p` under sample weights `w` (B, N).

    Ties in `p` are grouped as scikit-learn does (one threshold per distinct score).
    Returns two arrays (B,); NaN where a resample has only one class.
    """
    order = np.argsort(-p, kind="mergesort")
    p_sorted = p[order]
    starts = np.r_[0, np.flatnonzero(np.diff(p_sorted)) + 1]  # distinct scores, descending
    pos_w = np.add.reduceat(w[:, order] * y[order], starts, axis=1)
    neg_w = np.add.reduceat(w[:, order] * (1 - y[order]), starts, axis=1)
    tps, fps = np.cumsum(pos_w, axis=1), np.cumsum(neg_w, axis=1)
    n_pos, n_neg = tps[:, -1], fps[:, -1]
    # AUC: each positive beats the negatives ranked below it; ties count one half.
    neg_below = n_neg[:, None] - fps
    auc = _safe_div((pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1), n_pos * n_neg)
    precision = _safe_div(tps, tps + fps)
    recall = _safe_div(tps, n_pos[:, None])
    ap = (np.diff(recall, axis=1, prepend=0.0) * precision).sum(axis=1)
    one_class = (n_pos == 0) | (n_neg == 0)
    auc[one_class] = np.nan
    ap[n_pos == 0] = np.nan
    return auc, ap


def _ece(y, p, w, bins=ECE_BINS):
    """Expected calibration error of P(all) with `bins` equal-width bins, weights (B, N).

    ECE = sum over bins of (bin weight / total) * |mean label - mean probability| in the bin;
    the bins are [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0] (1.0 falls in the last one).
    """
    idx = np.minimum((p * bins).astype(int), bins - 1)
    onehot = np.eye(bins)[idx]  # (N, bins)
    count = w @ onehot
    gap = np.abs(w @ (onehot * y[:, None]) - w @ (onehot * p[:, None]))
    return _safe_div(gap.sum(axis=1), count.sum(axis=1))


def weighted_metrics(
    y: ArrayLike, p: ArrayLike, predicted: ArrayLike, w: ArrayLike
) -> dict[str, np.ndarray]:
    """Every metric of predictions under integer sample weights.

    Conventions follow scikit-learn: zero_division=0, macro/weighted F1 over the labels
    present in truth or prediction, balanced accuracy over the labels present in truth.

    Args:
        y: (N,) 0/1 labels.
        p: (N,) probabilities of `all`.
        predicted: (N,) 0/1 decisions.
        w: (B, N) non-negative weights, one row per resample ((N,) is one row).

    Returns:
        {name: (B,) array} for `CI_METRICS` (`roc_auc` is NaN where a resample lacks a
        class, `pr_auc` where it lacks `all`), and `confusion` (B, 2, 2) as
        [[tn, fp], [fn, tp]] (rows = truth, scikit-learn order).
    """
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    predicted = np.asarray(predicted, float)
    w = np.atleast_2d(np.asarray(w, float))
    tp = w @ (y * predicted)
    fp = w @ ((1 - y) * predicted)
    fn = w @ (y * (1 - predicted))
    tn = w @ ((1 - y) * (1 - predicted))
    n = tp + fp + fn + tn
    n_pos, n_neg = tp + fn, tn + fp
    f1_pos = _safe_div(2 * tp, 2 * tp + fp + fn)
    f1_neg = _safe_div(2 * tn, 2 * tn + fn + fp)
    has_pos = (n_pos + tp + fp) > 0  # label 1 in truth or prediction
    has_neg = (n_neg + tn + fn) > 0
    recall_pos, recall_neg = _safe_div(tp, n_pos), _safe_div(tn, n_neg)
    auc, ap = _ranking_metrics(y, p, w)
    return {
        "precision": _safe_div(tp, tp + fp),
        "recall": recall_pos,
        "f1": f1_pos,
        "weighted_f1": _safe_div(f1_pos * n_pos + f1_neg * n_neg, n),
        "macro_f1": _safe_div(f1_pos * has_pos + f1_neg * has_neg, has_pos * 1.0 + has_neg),
        "balanced_accuracy": _safe_div(
            recall_pos * (n_pos > 0) + recall_neg * (n_neg > 0), (n_pos > 0) * 1.0 + (n_neg > 0)
        ),
        "accuracy": _safe_div(tp + tn, n),
        "roc_auc": auc,
        "pr_auc": ap,
        "brier": _safe_div(w @ (p - y) ** 2, n),
        "ece": _ece(y, p, w),
        "confusion": np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2),
    }


def binary_metrics(y: ArrayLike, p: ArrayLike, threshold: float) -> dict:
    """The metrics of probabilities against labels at one threshold.

    Args:
        y: (N,) 0/1 labels.
        p: (N,) probabilities of `all`; a cell is called `all` when p >= threshold.
        threshold: the decision threshold.

    Returns:
        The metrics of `weighted_metrics` as plain floats (None where undefined),
        `confusion` as a 2x2 int list, `n` and `n_all` (images, `all` images).
    """
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    predicted = (p >= threshold).astype(int)
    values = weighted_metrics(y, p, predicted, np.ones((1, len(y))))
    out = {k: float(v[0]) for k, v in values.items() if k != "confusion"}
    out["confusion"] = values["confusion"][0].astype(int).tolist()
    out["n"] = len(y)
    out["n_all"] = int(y.sum())
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}


def choose_threshold(y_val: ArrayLike, p_val: ArrayLike, rule: str = "max_f1") -> float:
    """The decision threshold from VALIDATION labels and probabilities only.

    Args:
        y_val: (N,) 0/1 validation labels.
        p_val: (N,) validation probabilities of `all`.
        rule: "0.5": 0.5. "max_f1": the threshold maximising the F1 of `all` on the
            validation set, placed halfway between the lowest probability called `all`
            and the next lower distinct probability (the highest such threshold when
            several tie).

    Returns:
        The threshold; a cell is `all` when its probability >= it.

    Raises:
        LeukoflowError: for an unknown rule, or with "max_f1" when the validation set has
            no `all` cell.
    """
    if rule == "0.5":
        return 0.5
    if rule != "max_f1":
        raise LeukoflowError(f"evaluate.threshold: unknown rule {rule!r}; allowed: max_f1, '0.5'")
    y_val = np.asarray(y_val, float)
    p_val = np.asarray(p_val, float)
    if y_val.sum() == 0:
        raise LeukoflowError("the validation subset has no `all` cells: cannot choose a threshold")
    order = np.argsort(-p_val, kind="mergesort")
    p_sorted = p_val[order]
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]  # end of each tie group
    tps = np.cumsum(y_val[order])[last]
    fps = (last + 1) - tps
    f1 = 2 * tps / (2 * tps + fps + (y_val.sum() - tps))
    best = int(np.argmax(f1))
    upper = p_sorted[last[best]]
    lower = p_sorted[last[best] + 1] if best + 1 < len(last) else 0.0
    return float((upper + lower) / 2)


def subject_resamples(
    subjects: ArrayLike, labels: ArrayLike, n_resamples: int, seed: int
) -> np.ndarray:
    """Bootstrap weights: subjects drawn with replacement within each label.

    A subject's label is the majority label of its images. Each resample draws, for each
    label, as many subjects as there are with that label; an image's weight is how often
    its subject was drawn.

    Args:
        subjects: (N,) subject id of each image.
        labels: (N,) 0/1.
        n_resamples: B, the number of resamples.
        seed: seed of the draws.

    Returns:
        float (B, N) weights.
    """
    subjects = np.asarray(subjects).astype(str)
    labels = np.asarray(labels, int)
    names, inverse = np.unique(subjects, return_inverse=True)
    subject_label = np.bincount(inverse, weights=labels) / np.bincount(inverse) >= 0.5
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(names)))
    for label in (False, True):
        members = np.flatnonzero(subject_label == label)
        if len(members):
            draws = rng.integers(0, len(members), size=(n_resamples, len(members)))
            rows = np.repeat(np.arange(n_resamples), len(members))
            np.add.at(counts, (rows, members[draws.ravel()]), 1)
    return counts[:, inverse]


def image_resamples(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap weights (B, N) of plain image resampling (the naive CI, for comparison)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_resamples)


def _chunks(total, size=250):
    """Slices of `range(total)`, `size` at a time."""
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def bootstrap_ci(
    y: ArrayLike,
    p: ArrayLike,
    predicted: ArrayLike,
    weights: np.ndarray,
    level: float = 0.95,
) -> dict[str, list[float | None]]:
    """Percentile confidence intervals of `CI_METRICS` from bootstrap weights.

    Args:
        y: (N,) 0/1 labels.
        p: (N,) probabilities of `all`.
        predicted: (N,) 0/1 decisions.
        weights: (B, N), from `subject_resamples` or `image_resamples` (read 250 rows at
            a time).
        level: the coverage of the interval.

    Returns:
        {metric: [lo, hi]}; resamples where a metric is undefined are left out, and
        [None, None] when it is undefined in all.
    """
    parts = {m: [] for m in CI_METRICS}
    for rows in _chunks(len(weights)):
        values = weighted_metrics(y, p, predicted, weights[rows])
        for metric in CI_METRICS:
            parts[metric].append(values[metric])
    tail = 100 * (1 - level) / 2
    ci = {}
    for metric in CI_METRICS:
        values = np.concatenate(parts[metric])
        values = values[np.isfinite(values)]  # e.g. ROC-AUC of a resample with one class
        if len(values):
            ci[metric] = np.percentile(values, [tail, 100 - tail]).tolist()
        else:
            ci[metric] = [None, None]
    return ci


def _f1(y, predicted, w):
    """F1 of `all` (B,) under weights (B, N)."""
    y, predicted = np.asarray(y, float), np.asarray(predicted, float)
    tp = w @ (y * predicted)
    return _safe_div(2 * tp, w @ predicted + w @ y)


def paired_bootstrap(
    y: ArrayLike,
    subjects: ArrayLike,
    predicted_a: ArrayLike,
    predicted_b: ArrayLike,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Share of subject resamples in which F1 of `a` exceeds F1 of `b` on the same test set.

    Both models are scored on each same resample of subjects (paired), so the share is the
    bootstrap probability that `a` is really better than `b`.

    Args:
        y: (N,) 0/1 labels of the test images.
        subjects: (N,) subject of each image.
        predicted_a: (N,) 0/1 decisions of model a.
        predicted_b: (N,) 0/1 decisions of model b.
        n_resamples: resamples of subjects (`subject_resamples`).
        seed: seed of the resamples.

    Returns:
        (share, mean F1 gap a - b).
    """
    weights = subject_resamples(subjects, y, n_resamples, seed)
    wins, gaps = [], []
    for rows in _chunks(n_resamples):
        f1_a = _f1(y, predicted_a, weights[rows])
        f1_b = _f1(y, predicted_b, weights[rows])
        wins.append(f1_a > f1_b)
        gaps.append(f1_a - f1_b)
    return float(np.concatenate(wins).mean()), float(np.concatenate(gaps).mean())


def per_subject_accuracy(frame: pd.DataFrame) -> list[dict]:
    """[{subject, label, n, accuracy}] from a predictions frame (y, predicted, subject)."""
    grouped = frame.assign(correct=frame["y"] == frame["predicted"]).groupby("subject")
    table = grouped.agg(y=("y", "mean"), n=("y", "size"), accuracy=("correct", "mean"))
    return [
        {
            "subject": str(subject),
            "label": "all" if row.y >= 0.5 else "hem",
            "n": int(row.n),
            "accuracy": float(row.accuracy),
        }
        for subject, row in table.iterrows()
    ]


def evaluate_predictions(
    val: pd.DataFrame,
    test: pd.DataFrame,
    threshold_rule: str = "max_f1",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Metrics of validation and test predictions; the threshold comes from `val` only.

    Args:
        val: validation predictions (`predictions_frame`: row, path, subject, y,
            probability_all).
        test: test predictions, likewise.
        threshold_rule: the rule of `choose_threshold`.
        n_bootstrap: subject resamples of the test CIs.
        seed: seed of the resamples.

    Returns:
        (metrics, val, test): the metrics dict (threshold, test and val metrics, CIs,
        per-subject accuracy, counts) and the two frames with a `predicted` column added.

    Raises:
        LeukoflowError: when a frame lacks a column or is empty, or as `choose_threshold`.
    """
    for name, frame in (("val", val), ("test", test)):
        missing = {"subject", "y", "probability_all"} - set(frame.columns)
        if missing:
            raise LeukoflowError(f"{name} predictions lack column(s) {sorted(missing)}")
        if frame.empty:
            raise LeukoflowError(f"the {name} subset is empty: nothing to evaluate")
    threshold = choose_threshold(
        val["y"].to_numpy(), val["probability_all"].to_numpy(), threshold_rule
    )
    val = val.assign(predicted=(val["probability_all"] >= threshold).astype(int))
    test = test.assign(predicted=(test["probability_all"] >= threshold).astype(int))
    y, p = test["y"].to_numpy(int), test["probability_all"].to_numpy(float)
    weights = subject_resamples(test["subject"], y, n_bootstrap, seed)
    metrics = {
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "n_test": len(test),
        "n_val": len(val),
        "n_test_subjects": int(test["subject"].nunique()),
        "bootstrap": {
            "resamples": n_bootstrap,
            "unit": "subject",
            "stratified": True,
            "seed": seed,
        },
        "test": binary_metrics(y, p, threshold),
        "ci": bootstrap_ci(y, p, test["predicted"].to_numpy(int), weights),
        "val": binary_metrics(val["y"].to_numpy(int), val["probability_all"].to_numpy(), threshold),
        "per_subject": per_subject_accuracy(test),
    }
    return metrics, val, test


def predictions_frame(index: pd.DataFrame, probabilities: ArrayLike) -> pd.DataFrame:
    """The predictions table: row, path, subject, y (and `predicted` later) from a store index.

    Args:
        index: the store's index.
        probabilities: (N,) probabilities of `all`, in store order.

    Returns:
        Columns row, path, subject (text), y, probability_all.
    """
    frame = index[["row", "path", "subject", "y"]].copy()
    frame["subject"] = frame["subject"].astype(str)
    frame["probability_all"] = np.asarray(probabilities, float)
    return frame


def write_evaluation(
    metrics: Mapping,
    val: pd.DataFrame,
    test: pd.DataFrame,
    metrics_out: str | Path,
    val_out: str | Path,
    test_out: str | Path,
) -> None:
    """Write the metrics JSON and the validation and test prediction CSVs, atomically."""
    for path, frame in ((val_out, val), (test_out, test)):
        with atomic_path(path) as tmp:
            frame[PREDICTION_COLUMNS].to_csv(tmp, index=False)
    write_text(metrics_out, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def run_evaluate(
    model_path: str | Path,
    val_store: str | Path,
    test_store: str | Path,
    settings: dict,
    evaluate_config: dict,
    metrics_out: str | Path,
    val_out: str | Path,
    test_out: str | Path,
    split_id: str = "main",
) -> dict:
    """The `evaluate` job: predict val and test, choose the threshold on val, score test.

    Args:
        model_path: the trained `model.keras`.
        val_store: the validation store (`.npy`, index beside); sets the threshold.
        test_store: the test store.
        settings: the architecture's merged settings (`architecture`, `batch_size`,
            `jit_compile`, `mixed_precision`).
        evaluate_config: the config's `evaluate` block (threshold, bootstrap, tta, seed).
        metrics_out: metrics JSON to write.
        val_out: validation predictions CSV to write (`PREDICTION_COLUMNS`).
        test_out: test predictions CSV to write.
        split_id: the split the model belongs to (recorded in the metrics).

    Returns:
        The metrics dict.

    Raises:
        ConfigError: for a `jit_compile` or `mixed_precision` outside the allowed values.
        LeukoflowError: for a missing or broken model or store, an unknown threshold
            rule, or a validation subset without `all` cells.
    """
    from leukoflow.inference import compiled_inference, predict_store
    from leukoflow.models import load_model
    from leukoflow.runtime import decide
    from leukoflow.stores import open_store

    model = load_model(model_path)
    predict_fn = compiled_inference(model, jit_compile=decide(settings).jit_compile)
    batch_size = int(settings.get("batch_size", 32))
    tta = int(evaluate_config.get("tta", 0))
    frames = []
    for store in (val_store, test_store):
        images, index = open_store(store)
        log.info("predicting %d images of %s (TTA %d)", len(images), store, tta)
        frames.append(predictions_frame(index, predict_store(predict_fn, images, batch_size, tta)))
    metrics, val, test = evaluate_predictions(
        frames[0],
        frames[1],
        threshold_rule=str(evaluate_config.get("threshold", "max_f1")),
        n_bootstrap=int(evaluate_config.get("bootstrap", 2000)),
        seed=int(evaluate_config.get("seed", 0)),
    )
    metrics.update(
        architecture=settings.get("architecture", Path(model_path).parent.name),
        split=split_id,
        tta=tta,
        model=str(model_path),
    )
    write_evaluation(metrics, val, test, metrics_out, val_out, test_out)
    log.info(
        "test F1 %.3f, weighted F1 %.3f at threshold %.3f",
        metrics["test"]["f1"],
        metrics["test"]["weighted_f1"],
        metrics["threshold"],
    )
    return metrics
