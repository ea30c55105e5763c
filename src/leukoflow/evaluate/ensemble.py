"""Ensembles of architectures: the members' probabilities combined, then evaluated as one model.

Two methods, both applied by `combine` (the ensemble job and `leukoflow predict` with an
ensemble bundle call the same function):

- `mean`: the mean of the members' probabilities of `all`, p = sum_m p_m / M;
- `stacked`: a logistic regression on the members' logits, fitted on the VALIDATION subset,
  p = sigmoid(intercept + sum_m weight_m * logit(p_m)). It is L2-regularised (scikit-learn's
  C = 1, the intercept not penalised), so validation logits that separate the classes
  perfectly still give finite weights.

The combined probabilities then go through `leukoflow.evaluate.job.evaluate_predictions` like a
single model's: temperature, threshold and referral band fitted on validation, test scored
with subject-bootstrap CIs. Beside them, the ensemble's uncertainty columns
(`leukoflow.evaluate.uncertainty.ensemble_uncertainty`: `member_spread`, and the members' mean
`tta_spread` and `mc_std` where every member has the column), computed from the members'
prediction CSVs as `leukoflow predict` computes them per cell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.calibration import logit, sigmoid
from leukoflow.evaluate.job import evaluate_with_config, write_evaluation
from leukoflow.evaluate.uncertainty import MEMBER_COLUMNS, ensemble_uncertainty

log = logging.getLogger(__name__)

METHODS = ("mean", "stacked")
STACKING_C = 1.0  # inverse L2 strength of the stacking regression


def combine(probabilities: ArrayLike, combiner: Mapping) -> np.ndarray:
    """The ensemble's probability of `all` from its members' probabilities.

    Args:
        probabilities: (M, N) the members' probabilities of `all`, in `combiner["members"]`
            order.
        combiner: {method, weights (M,), intercept} from `fit_combiner` (or a bundle).

    Returns:
        (N,) float64 probabilities.

    Raises:
        LeukoflowError: for an unknown method, or a member count other than the weights'.
    """
    probabilities = np.atleast_2d(np.asarray(probabilities, float))
    weights = np.asarray(combiner["weights"], float)
    if len(weights) != len(probabilities):
        raise LeukoflowError(
            f"{len(probabilities)} members' probabilities for {len(weights)} weights"
        )
    if combiner["method"] == "mean":
        return weights @ probabilities
    if combiner["method"] == "stacked":
        return sigmoid(float(combiner["intercept"]) + weights @ logit(probabilities))
    raise LeukoflowError(
        f"ensemble method {combiner['method']!r} is unknown; allowed: {', '.join(METHODS)}"
    )


def fit_combiner(
    method: str, members: Sequence[str], val_probabilities: ArrayLike, y_val: ArrayLike
) -> dict:
    """The combiner of an ensemble, from the VALIDATION subset only.

    Args:
        method: `mean` or `stacked`.
        members: the members' names, in the order of the rows of `val_probabilities`.
        val_probabilities: (M, N) the members' validation probabilities of `all`.
        y_val: (N,) 0/1 validation labels (used by `stacked` only).

    Returns:
        {method, members, weights, intercept}: `mean` has weights 1/M on the
        probabilities and intercept 0; `stacked` the regression's weights on the logits.

    Raises:
        LeukoflowError: for an unknown method, or `stacked` on a validation subset with
            one class only.
    """
    members = list(members)
    if method == "mean":
        return {
            "method": method,
            "members": members,
            "weights": [1.0 / len(members)] * len(members),
            "intercept": 0.0,
        }
    if method != "stacked":
        raise LeukoflowError(
            f"ensemble method {method!r} is unknown; allowed: {', '.join(METHODS)}"
        )
    from sklearn.linear_model import LogisticRegression

    y_val = np.asarray(y_val, int)
    if len(np.unique(y_val)) < 2:
        raise LeukoflowError("stacking needs both classes in the validation subset")
    features = logit(np.atleast_2d(np.asarray(val_probabilities, float))).T
    regression = LogisticRegression(C=STACKING_C, tol=1e-10, max_iter=10000).fit(features, y_val)
    return {
        "method": method,
        "members": members,
        "weights": regression.coef_[0].tolist(),
        "intercept": float(regression.intercept_[0]),
    }


def align_members(
    frames: Mapping[str, pd.DataFrame], subset: str
) -> tuple[pd.DataFrame, np.ndarray, list[dict[str, np.ndarray]]]:
    """The members' predictions of one subset, rows matched by image path.

    Args:
        frames: {member: its predictions frame (row, path, subject, y, probability_all, and
            the uncertainty columns of `MEMBER_COLUMNS` its evaluation computed)}.
        subset: `val` or `test` (for the error message).

    Returns:
        (base, probabilities, uncertainty): the first member's row, path, subject and y
        columns; (M, N) probabilities in the order of `frames` and of `base`; per member,
        {column of `MEMBER_COLUMNS` it has: (N,)} in the order of `base`.

    Raises:
        LeukoflowError: when the members were scored on different images.
    """
    names = list(frames)
    base = frames[names[0]][["row", "path", "subject", "y"]].reset_index(drop=True)
    rows, uncertainty = [], []
    for name in names:
        frame = frames[name].set_index("path")
        if set(frame.index) != set(base["path"]) or len(frame) != len(base):
            raise LeukoflowError(
                f"ensemble members {names[0]} and {name} were scored on different {subset} "
                "images; every member must come from the same split"
            )
        frame = frame.loc[base["path"]]
        rows.append(frame["probability_all"].to_numpy(float))
        uncertainty.append({c: frame[c].to_numpy(float) for c in MEMBER_COLUMNS if c in frame})
    base["subject"] = base["subject"].astype(str)
    return base, np.vstack(rows), uncertainty


def run_ensemble(
    name: str,
    method: str,
    members: Sequence[str],
    val_files: Sequence[str | Path],
    test_files: Sequence[str | Path],
    evaluate_config: Mapping,
    metrics_out: str | Path,
    val_out: str | Path,
    test_out: str | Path,
) -> dict:
    """The `ensemble` job: combine the members' predictions, evaluate like one model.

    Args:
        name: the ensemble's name (recorded as its `architecture`).
        method: `mean` or `stacked`.
        members: the member architectures.
        val_files: each member's validation predictions CSV (evaluate's), in `members` order.
        test_files: each member's test predictions CSV, likewise.
        evaluate_config: the config's `evaluate` block.
        metrics_out: metrics JSON to write (evaluate's contract, plus `ensemble`;
            `mc_dropout`: the config's passes when every member has `mc_std`, else 0).
        val_out: validation predictions CSV to write (with the uncertainty columns of
            `ensemble_uncertainty`).
        test_out: test predictions CSV to write, likewise.

    Returns:
        The metrics dict.

    Raises:
        LeukoflowError: for fewer than two members, file counts other than the members',
            members scored on different images, or as `fit_combiner` and evaluation.
    """
    members = list(members)
    if len(members) < 2:
        raise LeukoflowError(f"ensemble {name}: needs at least two members, got {members}")
    for option, files in (("--val", val_files), ("--test", test_files)):
        if len(files) != len(members):
            raise LeukoflowError(
                f"{option}: {len(files)} files for {len(members)} members; one per member"
            )
    read = {
        subset: {m: pd.read_csv(f, dtype={"subject": str}) for m, f in zip(members, files)}
        for subset, files in (("val", val_files), ("test", test_files))
    }
    val_base, val_p, val_u = align_members(read["val"], "val")
    test_base, test_p, test_u = align_members(read["test"], "test")
    combiner = fit_combiner(method, members, val_p, val_base["y"])
    val = val_base.assign(probability_all=combine(val_p, combiner))
    test = test_base.assign(probability_all=combine(test_p, combiner))
    val = val.assign(**ensemble_uncertainty(val_p, val_u))
    test = test.assign(**ensemble_uncertainty(test_p, test_u))
    metrics, val, test = evaluate_with_config(val, test, evaluate_config)
    tta = evaluate_config.get("tta", "none")  # the members' evaluations' test-time augmentation
    passes = int(evaluate_config.get("mc_dropout", 0)) if "mc_std" in test else 0
    metrics.update(architecture=name, split="main", tta=tta, mc_dropout=passes, ensemble=combiner)
    write_evaluation(metrics, val, test, metrics_out, val_out, test_out)
    log.info(
        "ensemble %s (%s of %s): test F1 %.3f, weighted F1 %.3f",
        name,
        method,
        ", ".join(members),
        metrics["test"]["f1"],
        metrics["test"]["weighted_f1"],
    )
    return metrics
