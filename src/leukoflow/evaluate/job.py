"""Test-set evaluation: everything fitted on validation, then scored on test with CIs.

From the validation predictions only: the temperature (`leukoflow.evaluate.calibration`), the
decision threshold (on the calibrated probabilities) and the referral rule (a band of
probabilities or an uncertainty cut, `leukoflow.evaluate.referral`). Then the test subset is
scored: every metric of `leukoflow.evaluate.metrics` with its subject-bootstrap CI, the Brier
score and ECE before and after calibration, the referral rule's share and the metrics of the
cells not referred, the
risk-coverage area. `run_evaluate` is the `evaluate` job of one trained model; the
`ensemble` job (`leukoflow.evaluate.ensemble`) goes through the same `evaluate_predictions`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.atomic import atomic_path, write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.calibration import apply_temperature, calibration_summary, fit_temperature
from leukoflow.evaluate.metrics import (
    MIN_SUBJECTS_PER_CLASS,
    binary_metrics,
    bootstrap_ci,
    subject_classes,
    subject_resamples,
    too_few_subjects,
    withhold_intervals,
)
from leukoflow.evaluate.referral import (
    choose_band,
    choose_column,
    choose_cut,
    referral_summary,
    referred_by,
    risk_coverage,
)
from leukoflow.evaluate.uncertainty import UNCERTAINTY_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = [
    "row",
    "path",
    "subject",
    "y",
    "probability_all",
    "calibrated_probability_all",
    "predicted",
    "referred",
]


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
    referral_metric: str = "sensitivity",
    referral_target: float = 0.95,
    min_subjects_per_class: int = MIN_SUBJECTS_PER_CLASS,
    referral_by: str = "probability",
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Metrics of validation and test predictions; everything fitted comes from `val` only.

    The temperature is fitted on the validation probabilities, the threshold and the
    referral rule are chosen on the calibrated validation probabilities (and, by
    uncertainty, the validation uncertainty columns); test labels are used only to score.

    Args:
        val: validation predictions (`predictions_frame`: row, path, subject, y,
            probability_all).
        test: test predictions, likewise.
        threshold_rule: the rule of `choose_threshold`.
        n_bootstrap: subject resamples of the test CIs.
        seed: seed of the resamples.
        referral_metric: the metric of the cells not referred that the band must bring to
            `referral_target` (`leukoflow.evaluate.referral.TARGET_METRICS`).
        referral_target: its target value.
        min_subjects_per_class: below this many test subjects of a class, every interval is
            [None, None] and `ci_note` says why (`leukoflow.evaluate.metrics.too_few_subjects`).
        referral_by: "probability": a band of calibrated probabilities around the
            threshold; "uncertainty": a cut on the uncertainty column that ranks the
            validation errors best (`leukoflow.evaluate.referral`).

    Returns:
        (metrics, val, test): the metrics dict (threshold, test and val metrics, CIs,
        per-subject accuracy, counts, `test_subjects` per class, `calibration`, `referral`,
        `risk_coverage`, and `ci_note` when the intervals are withheld) and the two frames
        with `calibrated_probability_all`, `predicted` and `referred` added.

    Raises:
        LeukoflowError: when a frame lacks a column or is empty, as `choose_threshold`, for
            an unknown referral metric or rule, or by uncertainty without an uncertainty
            column.
    """
    for name, frame in (("val", val), ("test", test)):
        missing = {"subject", "y", "probability_all"} - set(frame.columns)
        if missing:
            raise LeukoflowError(f"{name} predictions lack column(s) {sorted(missing)}")
        if frame.empty:
            raise LeukoflowError(f"the {name} subset is empty: nothing to evaluate")
    y_val = val["y"].to_numpy(int)
    temperature = fit_temperature(y_val, val["probability_all"].to_numpy(float))
    val, test = (
        frame.assign(
            calibrated_probability_all=apply_temperature(frame["probability_all"], temperature)
        )
        for frame in (val, test)
    )
    p_val = val["calibrated_probability_all"].to_numpy(float)
    threshold = choose_threshold(y_val, p_val, threshold_rule)
    rule = _choose_rule(val, threshold, referral_by, referral_metric, referral_target)
    val, test = (
        frame.assign(
            predicted=(frame["calibrated_probability_all"] >= threshold).astype(int),
            referred=referred_by(rule, frame["calibrated_probability_all"], frame).astype(int),
        )
        for frame in (val, test)
    )
    y, p = test["y"].to_numpy(int), test["calibrated_probability_all"].to_numpy(float)
    predicted = test["predicted"].to_numpy(int)
    weights = subject_resamples(test["subject"], y, n_bootstrap, seed)
    calibration = calibration_summary(y, test["probability_all"], p, weights)
    metrics = {
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "n_test": len(test),
        "n_val": len(val),
        "n_test_subjects": int(test["subject"].nunique()),
        "test_subjects": subject_classes(test["subject"], y),
        "min_subjects_per_class": min_subjects_per_class,
        "bootstrap": {
            "resamples": n_bootstrap,
            "unit": "subject",
            "stratified": True,
            "seed": seed,
        },
        "test": binary_metrics(y, p, threshold),
        "ci": bootstrap_ci(y, p, predicted, weights),
        "val": binary_metrics(y_val, p_val, threshold),
        "per_subject": per_subject_accuracy(test),
        "calibration": {"temperature": temperature, **calibration},
        "referral": {
            **rule,
            "test": referral_summary(y, p, predicted, test["referred"].to_numpy(bool), weights),
        },
        "risk_coverage": {  # cells ranked by |p - threshold|, and by each uncertainty
            "aurc": risk_coverage(y, p, threshold)[2],
            **{
                f"aurc_{c}": risk_coverage(y, p, threshold, -test[c].to_numpy(float))[2]
                for c in UNCERTAINTY_COLUMNS
                if c in test
            },
        },
    }
    note = too_few_subjects(metrics["test_subjects"], min_subjects_per_class)
    if note:
        log.warning("%s: every interval is withheld", note)
        metrics = {**withhold_intervals(metrics), "ci_note": note}
    return metrics, val, test


def _choose_rule(val, threshold, by, metric, target):
    """The referral rule `by` ("probability" or "uncertainty") chosen on the calibrated
    validation frame."""
    y_val, p_val = val["y"].to_numpy(int), val["calibrated_probability_all"].to_numpy(float)
    if by == "probability":
        return choose_band(y_val, p_val, threshold, metric, target)
    if by != "uncertainty":
        raise LeukoflowError(
            f"evaluate.referral.by: unknown rule {by!r}; allowed: probability, uncertainty"
        )
    columns = {c: val[c].to_numpy(float) for c in UNCERTAINTY_COLUMNS if c in val}
    column = choose_column(y_val, p_val, threshold, columns)
    return choose_cut(y_val, p_val, columns[column], threshold, metric, target, column)


def evaluate_with_config(
    val: pd.DataFrame, test: pd.DataFrame, evaluate_config: Mapping
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """`evaluate_predictions` with the options of the config's `evaluate` block.

    Args:
        val: validation predictions.
        test: test predictions.
        evaluate_config: the `evaluate` block (threshold, bootstrap, seed, referral,
            min_subjects_per_class).

    Returns:
        As `evaluate_predictions`.
    """
    referral = evaluate_config.get("referral") or {}
    return evaluate_predictions(
        val,
        test,
        threshold_rule=str(evaluate_config.get("threshold", "max_f1")),
        n_bootstrap=int(evaluate_config.get("bootstrap", 2000)),
        seed=int(evaluate_config.get("seed", 0)),
        referral_metric=str(referral.get("metric", "sensitivity")),
        referral_target=float(referral.get("target", 0.95)),
        referral_by=str(referral.get("by", "probability")),
        min_subjects_per_class=int(
            evaluate_config.get("min_subjects_per_class", MIN_SUBJECTS_PER_CLASS)
        ),
    )


def predictions_frame(
    index: pd.DataFrame, probabilities: ArrayLike, uncertainty: Mapping | None = None
) -> pd.DataFrame:
    """The predictions table: row, path, subject, y (and `predicted` later) from a store index.

    Args:
        index: the store's index.
        probabilities: (N,) probabilities of `all`, in store order.
        uncertainty: {column of `leukoflow.evaluate.uncertainty.UNCERTAINTY_COLUMNS`: (N,)},
            the estimates computed (none: no column).

    Returns:
        Columns row, path, subject (text), y, probability_all, and the uncertainty columns.
    """
    frame = index[["row", "path", "subject", "y"]].copy()
    frame["subject"] = frame["subject"].astype(str)
    frame["probability_all"] = np.asarray(probabilities, float)
    for column, values in (uncertainty or {}).items():
        frame[column] = np.asarray(values, float)
    return frame


def write_evaluation(
    metrics: Mapping,
    val: pd.DataFrame,
    test: pd.DataFrame,
    metrics_out: str | Path,
    val_out: str | Path,
    test_out: str | Path,
) -> None:
    """Write the metrics JSON and the validation and test prediction CSVs (`PREDICTION_COLUMNS`
    and the uncertainty columns computed), atomically."""
    for path, frame in ((val_out, val), (test_out, test)):
        columns = PREDICTION_COLUMNS + [c for c in UNCERTAINTY_COLUMNS if c in frame]
        with atomic_path(path) as tmp:
            frame[columns].to_csv(tmp, index=False)
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
    """The `evaluate` job: predict val and test, fit on val, score test.

    Args:
        model_path: the trained `model.keras`.
        val_store: the validation store (`.npy`, index beside); sets the threshold.
        test_store: the test store.
        settings: the architecture's merged settings (`architecture`, `batch_size`,
            `jit_compile`, `mixed_precision`).
        evaluate_config: the config's `evaluate` block (threshold, bootstrap, tta, seed,
            referral).
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
    from leukoflow.core.runtime import decide
    from leukoflow.evaluate.uncertainty import predict_with_uncertainty
    from leukoflow.models import load_model
    from leukoflow.models.inference import compiled_inference
    from leukoflow.stain.stores import open_store

    model = load_model(model_path)
    jit = decide(settings).jit_compile
    predict_fn = compiled_inference(model, jit_compile=jit)
    batch_size = int(settings.get("batch_size", 32))
    tta = evaluate_config.get("tta", "none")
    mc_dropout = int(evaluate_config.get("mc_dropout", 0))
    seed = int(evaluate_config.get("seed", 0))
    frames = []
    for store in (val_store, test_store):
        images, index = open_store(store)
        log.info("predicting %d images of %s (TTA %s)", len(images), store, tta)
        out = predict_with_uncertainty(
            model, predict_fn, images, batch_size, tta, mc_dropout, seed, jit
        )
        frames.append(predictions_frame(index, out.pop("probability_all"), out))
    metrics, val, test = evaluate_with_config(frames[0], frames[1], evaluate_config)
    metrics.update(
        architecture=settings.get("architecture", Path(model_path).parent.name),
        split=split_id,
        tta=tta,
        mc_dropout=mc_dropout,
        model=str(model_path),
        settings=settings,
    )
    write_evaluation(metrics, val, test, metrics_out, val_out, test_out)
    log.info(
        "test F1 %.3f, weighted F1 %.3f at threshold %.3f, temperature %.3f",
        metrics["test"]["f1"],
        metrics["test"]["weighted_f1"],
        metrics["threshold"],
        metrics["calibration"]["temperature"],
    )
    return metrics
