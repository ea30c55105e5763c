"""Referral: the cells a model is least sure of go to a person, the rest are decided.

Two rules (`evaluate.referral.by`), each chosen on the VALIDATION subset as the one that
refers the fewest cells while the configured metric of the cells not referred reaches its
target (e.g. sensitivity for `all` of at least 0.95):

- `probability` (`choose_band`): a band [lo, hi) containing the decision threshold t; a cell
  whose calibrated probability p lies in it (lo <= p < hi) is referred, every other cell is
  decided as usual (`all` when p >= t, which is p >= hi outside the band);
- `uncertainty` (`choose_cut`): a cell whose uncertainty (a column of
  `leukoflow.evaluate.uncertainty`) reaches a cut (u >= cut) is referred. The column is the
  one that ranks the validation errors best (smallest validation AURC, `choose_column`).

A rule is a dict (`by`, then `lo`/`hi` or `column`/`cut`, `metric`, `target`, ...);
`referred_by` applies either, in evaluate, the report and `leukoflow predict`. On the test
subset, `referral_summary` gives the share referred and the metrics of the rest with
subject-bootstrap CIs.

The risk-coverage curve (`risk_coverage`) orders the test cells by their distance from the
threshold, |p - t|, most confident first: at coverage c the model decides the most confident
share c of the cells and the risk is its error rate on them. The area under it (AURC) is
small when the model's errors are the cells it is least sure of.
"""

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.metrics import chunks, percentile_ci, safe_div, weighted_metrics

TARGET_METRICS = ("sensitivity", "specificity", "precision", "npv", "accuracy")
REST_METRICS = ("sensitivity", "specificity", "precision", "npv", "accuracy", "f1", "weighted_f1")
MAX_CANDIDATES = 400  # band edges tried on each side of the threshold
RULES = {"probability": ("lo", "hi"), "uncertainty": ("column", "cut")}  # by: its own keys


def metric_of_counts(metric: str, tp, fp, fn, tn) -> np.ndarray:
    """One of `TARGET_METRICS` from confusion counts (arrays broadcast); NaN where undefined.

    Raises:
        LeukoflowError: for a metric outside `TARGET_METRICS`.
    """
    tp, fp, fn, tn = (np.asarray(c, float) for c in (tp, fp, fn, tn))
    num, den = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "precision": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "accuracy": (tp + tn, tp + fp + fn + tn),
    }.get(metric, (None, None))
    if num is None:
        raise LeukoflowError(
            f"evaluate.referral.metric: unknown metric {metric!r}; allowed: "
            + ", ".join(TARGET_METRICS)
        )
    return np.where(den > 0, safe_div(num, den), np.nan)


def _thin(values, limit=MAX_CANDIDATES):
    """At most `limit` of `values`, evenly spaced, the first and last kept."""
    if len(values) <= limit:
        return values
    return values[np.unique(np.linspace(0, len(values) - 1, limit).round().astype(int))]


def _edges(p, threshold):
    """Candidate lower edges (descending from t) and upper edges (ascending from t).

    Each candidate is the threshold, a midpoint between two neighbouring distinct
    probabilities on its side, or the end of the range (0 or 1): every distinct set of
    referred cells on that side is reached once.
    """
    below = np.unique(p[p < threshold])
    above = np.unique(p[p >= threshold])
    lows = np.r_[threshold, ((below[:-1] + below[1:]) / 2)[::-1], 0.0 if len(below) else []]
    highs = np.r_[threshold, (above[:-1] + above[1:]) / 2, 1.0 if len(above) else []]
    return _thin(lows), _thin(highs)


def choose_band(
    y_val: ArrayLike, p_val: ArrayLike, threshold: float, metric: str, target: float
) -> dict:
    """The referral band chosen on validation: fewest referred cells meeting the target.

    Args:
        y_val: (N,) 0/1 validation labels.
        p_val: (N,) calibrated validation probabilities of `all`.
        threshold: the decision threshold (chosen on validation too).
        metric: one of `TARGET_METRICS`, computed on the cells not referred.
        target: the value it must reach.

    Returns:
        {lo, hi, metric, target, met, val_share_referred, val_value}: when no band reaches
        the target, the band with the highest value (fewest referred among equals) and
        `met` False.

    Raises:
        LeukoflowError: for an unknown metric.
    """
    y, p = np.asarray(y_val, float), np.asarray(p_val, float)
    lows, highs = _edges(p, threshold)
    ordered = np.sort(p)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    fn = np.searchsorted(pos, lows, side="left")[:, None]  # positives below lo: called hem
    tn = np.searchsorted(neg, lows, side="left")[:, None]
    tp = (len(pos) - np.searchsorted(pos, highs, side="left"))[None, :]  # p >= hi: called all
    fp = (len(neg) - np.searchsorted(neg, highs, side="left"))[None, :]
    value, share = np.broadcast_arrays(  # precision, e.g., depends on hi only
        metric_of_counts(metric, tp, fp, fn, tn), 1 - (tp + fp + fn + tn) / max(len(ordered), 1)
    )
    flat, met = _pick(value, share, target, nothing=0)  # lows[0] = highs[0] = t
    i, j = np.unravel_index(flat, value.shape)
    return {
        "by": "probability",
        "lo": float(lows[i]),
        "hi": float(highs[j]),
        "metric": metric,
        "target": float(target),
        "met": met,
        "val_share_referred": float(share[i, j]),
        "val_value": None if np.isnan(value[i, j]) else float(value[i, j]),
    }


def _pick(value, share, target, nothing):
    """(flat index, met) of the chosen candidate: fewest referred among those whose `value`
    reaches `target`, then the highest value; when none does, the highest value (fewest
    referred among equals); when no value is defined, `nothing` (the flat index of the
    candidate that refers nothing)."""
    value, share = np.ravel(value), np.ravel(share)
    met = np.nan_to_num(value, nan=-1.0) >= target
    if met.any():
        key = np.where(met, share - 1e-9 * np.nan_to_num(value), np.inf)
    elif np.isfinite(value).any():
        key = np.where(np.isfinite(value), -value + 1e-9 * share, np.inf)
    else:
        return nothing, False
    i = int(np.argmin(key))
    return i, bool(met[i])


def choose_column(
    y_val: ArrayLike, p_val: ArrayLike, threshold: float, uncertainty: Mapping[str, ArrayLike]
) -> str:
    """The uncertainty column that ranks the validation errors best: the smallest area under
    the validation risk-coverage curve (`risk_coverage`), the first of equals.

    Args:
        y_val: (N,) 0/1 validation labels.
        p_val: (N,) calibrated validation probabilities of `all`.
        threshold: the decision threshold.
        uncertainty: {column: (N,) validation values}, in preference order.

    Raises:
        LeukoflowError: when there is no column (no uncertainty was computed).
    """
    if not uncertainty:
        raise LeukoflowError(
            "evaluate.referral.by: uncertainty needs a per-cell uncertainty: set "
            "evaluate.mc_dropout to a pass count (e.g. 8) or evaluate.tta to dihedral"
        )
    areas = {
        column: risk_coverage(y_val, p_val, threshold, -np.asarray(values, float))[2]
        for column, values in uncertainty.items()
    }
    return min(areas, key=lambda column: np.nan_to_num(areas[column], nan=np.inf))


def choose_cut(
    y_val: ArrayLike,
    p_val: ArrayLike,
    u_val: ArrayLike,
    threshold: float,
    metric: str,
    target: float,
    column: str,
) -> dict:
    """The uncertainty cut chosen on validation: fewest referred cells (u >= cut) meeting
    the target.

    Args:
        y_val: (N,) 0/1 validation labels.
        p_val: (N,) calibrated validation probabilities of `all`.
        u_val: (N,) the validation cells' uncertainty (`column`).
        threshold: the decision threshold (chosen on validation too).
        metric: one of `TARGET_METRICS`, computed on the cells not referred.
        target: the value it must reach.
        column: the uncertainty column's name (recorded).

    Returns:
        {by: "uncertainty", column, cut (None: nothing referred), metric, target, met,
        val_share_referred, val_value}; when no cut reaches the target, the one with the
        highest value (fewest referred among equals) and `met` False.

    Raises:
        LeukoflowError: for an unknown metric.
    """
    y, p, u = (np.asarray(a, float) for a in (y_val, p_val, u_val))
    order = np.argsort(u, kind="mergesort")
    u_sorted, y_sorted, called = u[order], y[order], (p[order] >= threshold)
    # a cut at each distinct value refers it and all above; one past the end refers none
    firsts = np.flatnonzero(np.r_[True, np.diff(u_sorted) > 0]) if len(u) else np.zeros(0, int)
    kept = np.r_[firsts, len(u)]
    counts = [np.r_[0, np.cumsum(part)][kept] for part in (
        y_sorted * called, (1 - y_sorted) * called, y_sorted * ~called, (1 - y_sorted) * ~called
    )]  # fmt: skip
    value = metric_of_counts(metric, *counts)
    share = 1 - kept / max(len(u), 1)
    i, met = _pick(value, share, target, nothing=len(kept) - 1)
    return {
        "by": "uncertainty",
        "column": column,
        "cut": float(u_sorted[kept[i]]) if kept[i] < len(u) else None,
        "metric": metric,
        "target": float(target),
        "met": met,
        "val_share_referred": float(share[i]),
        "val_value": None if np.isnan(value[i]) else float(value[i]),
    }


def referred_by(
    rule: Mapping | None, p: ArrayLike, uncertainty: Mapping[str, ArrayLike] | None = None
) -> np.ndarray:
    """The cells a referral rule refers.

    Args:
        rule: from `choose_band` or `choose_cut` (a rule without `by`, from an older
            evaluate or bundle, is a band); None: no referral.
        p: (N,) calibrated probabilities of `all`.
        uncertainty: {column: (N,)} (a predictions frame will do), needed for `uncertainty`.

    Returns:
        (N,) bool.

    Raises:
        LeukoflowError: when the rule's uncertainty column is not given.
    """
    p = np.asarray(p, float)
    if rule is None:
        return np.zeros(p.shape, bool)
    if rule.get("by", "probability") == "probability":
        return referred_mask(p, rule["lo"], rule["hi"])
    column = rule["column"]
    if uncertainty is None or column not in uncertainty:
        raise LeukoflowError(
            f"the referral rule refers cells by their {column}, which was not computed"
        )
    if rule["cut"] is None:
        return np.zeros(p.shape, bool)
    return np.asarray(uncertainty[column], float) >= rule["cut"]


def rule_record(rule: Mapping) -> dict:
    """What a bundle keeps of a referral rule to apply it: `by`, its own keys, `metric`,
    `target` (a rule without `by` is a band)."""
    by = rule.get("by", "probability")
    return {"by": by, **{key: rule[key] for key in (*RULES[by], "metric", "target")}}


def describe_rule(rule: Mapping | None, digits: int = 3) -> str:
    """The rule in a few words: `p in [0.310, 0.620)`, `mc_std >= 0.041`, `nothing referred`
    (an empty band or no cut), or `none` (no rule)."""
    if not rule:
        return "none"
    if rule.get("by", "probability") == "probability":
        if rule["lo"] >= rule["hi"]:
            return "nothing referred"
        return f"p in [{rule['lo']:.{digits}f}, {rule['hi']:.{digits}f})"
    if rule["cut"] is None:
        return f"{rule['column']}: nothing referred"
    return f"{rule['column']} >= {rule['cut']:.{digits}f}"


def referred_mask(p: ArrayLike, lo: float, hi: float) -> np.ndarray:
    """The cells a referral band refers.

    Args:
        p: (N,) calibrated probabilities of `all`.
        lo: the band's lower edge (inclusive).
        hi: its upper edge (exclusive).

    Returns:
        (N,) bool, True where lo <= p < hi.
    """
    p = np.asarray(p, float)
    return (p >= lo) & (p < hi)


def _rest_metrics(y, p, predicted, w):
    """`REST_METRICS` (B,) of the weighted cells (referred cells have weight 0)."""
    values = weighted_metrics(y, p, predicted, w)
    (tn, fp), (fn, tp) = np.moveaxis(values["confusion"], (1, 2), (0, 1))
    out = {m: metric_of_counts(m, tp, fp, fn, tn) for m in TARGET_METRICS}
    out["f1"], out["weighted_f1"] = values["f1"], values["weighted_f1"]
    return out


def referral_summary(
    y: ArrayLike,
    p: ArrayLike,
    predicted: ArrayLike,
    referred: ArrayLike,
    weights: np.ndarray,
    level: float = 0.95,
) -> dict:
    """A referral rule applied to the test subset: share referred, metrics of the rest, CIs.

    Args:
        y: (N,) 0/1 test labels.
        p: (N,) calibrated test probabilities of `all`.
        predicted: (N,) 0/1 decisions at the threshold.
        referred: (N,) bool, the cells the rule refers (`referred_by`).
        weights: (B, N) bootstrap weights (`leukoflow.evaluate.metrics.subject_resamples`).
        level: the coverage of the intervals.

    Returns:
        {n_referred, share_referred, share_referred_ci, rest: {metric: value},
        rest_ci: {metric: [lo, hi]}} for the metrics in `REST_METRICS` (None where undefined).
    """
    y, p = np.asarray(y, float), np.asarray(p, float)
    predicted, referred = np.asarray(predicted, float), np.asarray(referred, bool)
    keep = (~referred).astype(float)
    point = _rest_metrics(y, p, predicted, keep[None, :])
    shares, parts = [], {m: [] for m in REST_METRICS}
    for rows in chunks(len(weights)):
        w = weights[rows]
        shares.append(safe_div(w @ referred, w.sum(axis=1)))
        for metric, values in _rest_metrics(y, p, predicted, w * keep).items():
            parts[metric].append(values)
    return {
        "n_referred": int(referred.sum()),
        "share_referred": float(referred.mean()) if len(p) else 0.0,
        "share_referred_ci": percentile_ci(np.concatenate(shares), level),
        "rest": {m: (None if np.isnan(v[0]) else float(v[0])) for m, v in point.items()},
        "rest_ci": {m: percentile_ci(np.concatenate(parts[m]), level) for m in REST_METRICS},
    }


def risk_coverage(
    y: ArrayLike, p: ArrayLike, threshold: float, confidence: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The risk-coverage curve: error rate of the most confident cells against their share.

    Cells are taken in decreasing confidence, by default |p - threshold|; cells of equal
    confidence are taken together (one point per distinct confidence).

    Args:
        y: (N,) 0/1 labels.
        p: (N,) calibrated probabilities of `all`.
        threshold: the decision threshold (`all` when p >= threshold).
        confidence: (N,) another ranking, higher = taken first (e.g. minus an uncertainty of
            `leukoflow.evaluate.uncertainty`); None: |p - threshold|.

    Returns:
        (coverage, risk, aurc): coverage and risk at each point, and the area under the
        step curve, sum over points of (share of cells added) x (risk after adding them).
    """
    y, p = np.asarray(y, int), np.asarray(p, float)
    if not len(y):
        return np.zeros(0), np.zeros(0), float("nan")
    errors = ((p >= threshold).astype(int) != y).astype(float)
    confidence = np.abs(p - threshold) if confidence is None else np.asarray(confidence, float)
    order = np.argsort(-confidence, kind="mergesort")
    ends = np.r_[np.flatnonzero(np.diff(confidence[order])), len(y) - 1]
    kept = ends + 1
    risk = np.cumsum(errors[order])[ends] / kept
    coverage = kept / len(y)
    aurc = float(np.sum(np.diff(np.r_[0.0, coverage]) * risk))
    return coverage, risk, aurc
