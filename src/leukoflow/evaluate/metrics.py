"""Every metric of Table I under sample weights, and the subject bootstrap.

The positive class is `all` (label 1). Every reported metric is computed by one vectorised
function, `weighted_metrics`, on integer sample weights: weights of ones give the plain
metrics, and the multiplicities of a bootstrap resample give the metrics of the resampled
pool without copying images. Resampling is over **subjects** (all images of a drawn subject
come along), stratified by the subject's label, because images of one subject are not
independent. Below `min_subjects_per_class` subjects of a class (`too_few_subjects`) a
bootstrap has too few distinct resamples to be an interval: the point estimate is reported
with "CI: too few test subjects (n all, m hem)" instead, and no verdict rests on it.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

ECE_BINS = 10
MIN_SUBJECTS_PER_CLASS = 3  # the schema's default of evaluate.min_subjects_per_class
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


def safe_div(num, den):
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
    auc = safe_div((pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1), n_pos * n_neg)
    precision = safe_div(tps, tps + fps)
    recall = safe_div(tps, n_pos[:, None])
    ap = (np.diff(recall, axis=1, prepend=0.0) * precision).sum(axis=1)
    one_class = (n_pos == 0) | (n_neg == 0)
    auc[one_class] = np.nan
    ap[n_pos == 0] = np.nan
    return auc, ap


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = ECE_BINS
) -> np.ndarray:
    """Expected calibration error of P(all) with `bins` equal-width bins, weights (B, N).

    ECE = sum over bins of (bin weight / total) * |mean label - mean probability| in the bin;
    the bins are [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0] (1.0 falls in the last one).

    Args:
        y: (N,) 0/1 labels (float).
        p: (N,) probabilities of `all`.
        w: (B, N) sample weights.
        bins: the number of bins.

    Returns:
        (B,) ECE, 0 where a row's weights are all zero.
    """
    idx = np.minimum((p * bins).astype(int), bins - 1)
    onehot = np.eye(bins)[idx]  # (N, bins)
    count = w @ onehot
    gap = np.abs(w @ (onehot * y[:, None]) - w @ (onehot * p[:, None]))
    return safe_div(gap.sum(axis=1), count.sum(axis=1))


def brier_score(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Brier score (mean squared error of P(all)) under weights (B, N); returns (B,)."""
    return safe_div(w @ (p - y) ** 2, w.sum(axis=1))


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
    f1_pos = safe_div(2 * tp, 2 * tp + fp + fn)
    f1_neg = safe_div(2 * tn, 2 * tn + fn + fp)
    has_pos = (n_pos + tp + fp) > 0  # label 1 in truth or prediction
    has_neg = (n_neg + tn + fn) > 0
    recall_pos, recall_neg = safe_div(tp, n_pos), safe_div(tn, n_neg)
    auc, ap = _ranking_metrics(y, p, w)
    return {
        "precision": safe_div(tp, tp + fp),
        "recall": recall_pos,
        "f1": f1_pos,
        "weighted_f1": safe_div(f1_pos * n_pos + f1_neg * n_neg, n),
        "macro_f1": safe_div(f1_pos * has_pos + f1_neg * has_neg, has_pos * 1.0 + has_neg),
        "balanced_accuracy": safe_div(
            recall_pos * (n_pos > 0) + recall_neg * (n_neg > 0), (n_pos > 0) * 1.0 + (n_neg > 0)
        ),
        "accuracy": safe_div(tp + tn, n),
        "roc_auc": auc,
        "pr_auc": ap,
        "brier": brier_score(y, p, w),
        "ece": expected_calibration_error(y, p, w),
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


def subject_classes(subjects: ArrayLike, labels: ArrayLike) -> dict[str, int]:
    """How many subjects of each class, a subject's class being its images' majority label
    (as `subject_resamples` strata them).

    Args:
        subjects: (N,) subject id of each image.
        labels: (N,) 0/1.

    Returns:
        {"all": subjects of label 1, "hem": subjects of label 0}.
    """
    subjects = np.asarray(subjects).astype(str)
    if not len(subjects):
        return {"all": 0, "hem": 0}
    _, inverse = np.unique(subjects, return_inverse=True)
    share = np.bincount(inverse, weights=np.asarray(labels, float)) / np.bincount(inverse)
    n_all = int((share >= 0.5).sum())
    return {"all": n_all, "hem": len(share) - n_all}


def too_few_subjects(
    counts: Mapping[str, int], minimum: int = MIN_SUBJECTS_PER_CLASS
) -> str | None:
    """What to print instead of an interval when a subset has too few subjects for one.

    A stratified subject bootstrap over one or two subjects of a class has one or a few
    distinct resamples: its percentile interval is no confidence interval.

    Args:
        counts: {"all": subjects, "hem": subjects} (`subject_classes`).
        minimum: the fewest subjects of each class an interval needs
            (`evaluate.min_subjects_per_class`).

    Returns:
        "CI: too few test subjects (n all, m hem)" when a class has fewer than `minimum`,
        else None.
    """
    if min(counts["all"], counts["hem"]) >= minimum:
        return None
    return f"CI: too few test subjects ({counts['all']} all, {counts['hem']} hem)"


def withhold_intervals(value):
    """A copy of `value` with every interval in it set to [None, None].

    An interval is the value of a key `ci` or ending in `_ci` (a [lo, hi] pair, or a dict of
    them), at any depth of nested dicts: evaluate's `ci`, the calibration's `brier_ci`, the
    referral's `share_referred_ci` and `rest_ci`.

    Args:
        value: a metrics dict (or any value inside one).

    Returns:
        The copy; values that are not dicts are returned as they are.
    """
    if not isinstance(value, dict):
        return value
    out = {}
    for key, inner in value.items():
        if key == "ci" or str(key).endswith("_ci"):
            out[key] = {k: [None, None] for k in inner} if isinstance(inner, dict) else [None, None]
        else:
            out[key] = withhold_intervals(inner)
    return out


def image_resamples(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap weights (B, N) of plain image resampling (the naive CI, for comparison)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_resamples)


def chunks(total: int, size: int = 250):
    """Slices of `range(total)`, `size` at a time (bootstrap weights are read in chunks)."""
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
    values = metrics_over_weights(y, p, predicted, weights, CI_METRICS)
    return {metric: percentile_ci(values[metric], level) for metric in CI_METRICS}


def metrics_over_weights(
    y: ArrayLike, p: ArrayLike, predicted: ArrayLike, weights: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Some of `weighted_metrics` under every row of bootstrap weights, 250 rows at a time.

    Args:
        y: (N,) 0/1 labels.
        p: (N,) probabilities of `all`.
        predicted: (N,) 0/1 decisions.
        weights: (B, N) weights (a row of ones gives the plain value).
        metrics: names of `weighted_metrics`' results.

    Returns:
        {metric: (B,)}, NaN where a metric is undefined.
    """
    parts = {m: [] for m in metrics}
    for rows in chunks(len(weights)):
        values = weighted_metrics(y, p, predicted, weights[rows])
        for metric in metrics:
            parts[metric].append(values[metric])
    return {metric: np.concatenate(parts[metric]) for metric in metrics}


def percentile_ci(values: ArrayLike, level: float = 0.95) -> list[float | None]:
    """The percentile interval of bootstrap values, the undefined (NaN) ones left out.

    Args:
        values: one value per resample (NaN where the metric is undefined, e.g. the ROC-AUC
            of a resample with one class).
        level: the coverage of the interval.

    Returns:
        [lo, hi], or [None, None] when no value is defined.
    """
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return [None, None]
    tail = 100 * (1 - level) / 2
    return np.percentile(values, [tail, 100 - tail]).tolist()


def _f1(y, predicted, w):
    """F1 of `all` (B,) under weights (B, N)."""
    y, predicted = np.asarray(y, float), np.asarray(predicted, float)
    tp = w @ (y * predicted)
    return safe_div(2 * tp, w @ predicted + w @ y)


def paired_bootstrap(
    y: ArrayLike,
    subjects: ArrayLike,
    predicted_a: ArrayLike,
    predicted_b: ArrayLike,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Share of subject resamples in which F1 of `a` exceeds F1 of `b` on the same test set,
    a tie counting half.

    Both models are scored on each same resample of subjects (paired), so the share is the
    bootstrap probability that `a` is really better than `b`: near 1 it is, near 0.5 the
    difference is noise (two models with the same decisions give exactly 0.5), near 0 `b`
    is better.

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
    for rows in chunks(n_resamples):
        f1_a = _f1(y, predicted_a, weights[rows])
        f1_b = _f1(y, predicted_b, weights[rows])
        wins.append((f1_a > f1_b) + 0.5 * (f1_a == f1_b))
        gaps.append(f1_a - f1_b)
    return float(np.concatenate(wins).mean()), float(np.concatenate(gaps).mean())
