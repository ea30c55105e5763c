"""Temperature scaling: one temperature, fitted on validation logits, for every probability.

A model's probability of `all` is p = sigmoid(z); its calibrated probability is
sigmoid(z / T), with the temperature T > 0 that minimises the negative log-likelihood of
the VALIDATION labels (Guo et al. 2017, "On calibration of modern neural networks"). T > 1
softens an over-confident model, T < 1 sharpens an under-confident one. The order of the
probabilities does not change, so neither does any ranking metric, nor any decision taken at
a threshold that is chosen on the calibrated probabilities. `calibration_summary` gives the
Brier score and the expected calibration error (ECE) of the test subset before and after,
each with its subject-bootstrap CI, and the CI of the change.
"""

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from leukoflow.evaluate.metrics import (
    brier_score,
    chunks,
    expected_calibration_error,
    percentile_ci,
)

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logits
INVERSE_T_RANGE = (0.05, 20.0)  # 1 / T is searched here: T from 0.05 to 20


def logit(p: ArrayLike) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [EPS, 1 - EPS] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: ArrayLike) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow for large |z|."""
    z = np.asarray(z, float)
    return np.exp(-np.logaddexp(0.0, -z))


def _nll(inverse_t, z, y):
    """Mean negative log-likelihood of labels `y` under sigmoid(z * inverse_t)."""
    scaled = z * inverse_t
    return float(np.mean(y * np.logaddexp(0.0, -scaled) + (1 - y) * np.logaddexp(0.0, scaled)))


def fit_temperature(y_val: ArrayLike, p_val: ArrayLike) -> float:
    """The temperature that minimises the validation negative log-likelihood.

    The likelihood is convex in 1 / T (the logits are scaled linearly), so a bounded scalar
    search finds its one minimum; 1 / T is kept in `INVERSE_T_RANGE`, so validation logits
    that separate the classes perfectly give T = 0.05 rather than T -> 0.

    Args:
        y_val: (N,) 0/1 validation labels.
        p_val: (N,) the model's validation probabilities of `all`.

    Returns:
        T > 0.
    """
    z, y = logit(p_val), np.asarray(y_val, float)
    found = minimize_scalar(
        _nll, bounds=INVERSE_T_RANGE, args=(z, y), method="bounded", options={"xatol": 1e-6}
    )
    return float(1.0 / found.x)


def apply_temperature(p: ArrayLike, temperature: float) -> np.ndarray:
    """The calibrated probabilities sigmoid(logit(p) / T); `p` itself when T is 1.

    Args:
        p: (N,) probabilities of `all`.
        temperature: T > 0 (from `fit_temperature`).

    Returns:
        (N,) float64 calibrated probabilities, in the same order as `p`.
    """
    p = np.asarray(p, float)
    if temperature == 1.0:
        return p
    return sigmoid(logit(p) / temperature)


def calibration_summary(
    y: ArrayLike, p_raw: ArrayLike, p_calibrated: ArrayLike, weights: np.ndarray, level=0.95
) -> dict:
    """Brier score and ECE before and after calibration, with paired bootstrap CIs.

    Args:
        y: (N,) 0/1 test labels.
        p_raw: (N,) the model's probabilities of `all`.
        p_calibrated: (N,) the calibrated ones.
        weights: (B, N) bootstrap weights (`leukoflow.evaluate.metrics.subject_resamples`); both are
            scored on the same resamples, so the change has its own CI.
        level: the coverage of the intervals.

    Returns:
        {"before": {brier, brier_ci, ece, ece_ci}, "after": {...}, "change": {brier,
        brier_ci, ece, ece_ci}} (change = after - before).
    """
    y = np.asarray(y, float)
    arms = {"before": np.asarray(p_raw, float), "after": np.asarray(p_calibrated, float)}
    ones = np.ones((1, len(y)))
    scores = {"brier": brier_score, "ece": expected_calibration_error}
    parts = {(arm, name): [] for arm in arms for name in scores}
    for rows in chunks(len(weights)):
        for arm, p in arms.items():
            for name, score in scores.items():
                parts[arm, name].append(score(y, p, weights[rows]))
    out = {"before": {}, "after": {}, "change": {}}
    for name, score in scores.items():
        for arm, p in arms.items():
            out[arm][name] = float(score(y, p, ones)[0])
            out[arm][f"{name}_ci"] = percentile_ci(np.concatenate(parts[arm, name]), level)
        change = np.concatenate(parts["after", name]) - np.concatenate(parts["before", name])
        out["change"][name] = out["after"][name] - out["before"][name]
        out["change"][f"{name}_ci"] = percentile_ci(change, level)
    return out
