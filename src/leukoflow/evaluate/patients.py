"""From cells to patients: the subject-level call, fitted on the validation subjects only.

A subject's cells are aggregated into one score in [0, 1] by one of `AGGREGATORS`:

- `mean_probability`: the mean of the cells' calibrated probabilities of `all`;
- `fraction_all`: the share of its cells called `all` at the cell threshold;
- `mean_logit`: sigmoid of the mean of the cells' calibrated logits (the geometric mean of
  the odds).

A subject is called `all` when its aggregate is at least the patient threshold, chosen on the
VALIDATION subjects by the rule of the cell threshold (`leukoflow.evaluate.job.choose_threshold`
on one aggregate per subject). Referred cells (in the referral band) are aggregated like every
other cell and counted per subject, so a call can be read with how many of its cells a person
should look at. On the test subjects: ROC-AUC of the aggregates (CI: stratified bootstrap of
subjects), sensitivity and specificity of the calls with exact Clopper-Pearson CIs, and no
interval at all below `min_subjects_per_class` subjects of either class. How many cells a call
needs is `leukoflow.evaluate.cells_needed`. `run_patients` is the workflow's `patients` step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import beta

from leukoflow.core.atomic import atomic_path, write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.core.settings import config_block
from leukoflow.evaluate.calibration import logit, sigmoid
from leukoflow.evaluate.job import choose_threshold
from leukoflow.evaluate.metrics import (
    MIN_SUBJECTS_PER_CLASS,
    percentile_ci,
    subject_resamples,
    too_few_subjects,
    weighted_metrics,
)

log = logging.getLogger(__name__)

AGGREGATORS = ("mean_probability", "fraction_all", "mean_logit")
AGGREGATOR_WORDS = {
    "mean_probability": "mean calibrated probability of `all`",
    "fraction_all": "share of cells called `all` at the cell threshold",
    "mean_logit": "sigmoid of the mean calibrated logit",
}
SCORE_NAMES = (
    ("roc_auc", "ROC-AUC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
)
CELL_COLUMNS = ("subject", "y", "calibrated_probability_all", "predicted", "referred")
# what a bundle records of patients.json (`leukoflow.deploy.bundle_write`)
BUNDLE_KEYS = ("aggregator", "threshold", "threshold_rule", "fitted_on", "val", "test",
               "cells_needed", "min_subjects_per_class")  # fmt: skip
SUBJECT_COLUMNS = ["subset", "subject", "truth", "cells", "referred", "aggregate", "call",
                   "correct"]  # fmt: skip


def _check_aggregator(aggregator: str) -> None:
    if aggregator not in AGGREGATORS:
        raise LeukoflowError(
            f"patients.aggregator: unknown aggregator {aggregator!r}; allowed: "
            + ", ".join(AGGREGATORS)
        )


def cell_scores(probabilities: ArrayLike, called_all: ArrayLike, aggregator: str) -> np.ndarray:
    """The per-cell values whose mean, through `finish`, is a subject's aggregate.

    Args:
        probabilities: (N,) calibrated probabilities of `all`.
        called_all: (N,) 0/1, the cells called `all` at the cell threshold.
        aggregator: one of `AGGREGATORS`.

    Returns:
        (N,) float: the probabilities, the 0/1 calls, or the logits.

    Raises:
        LeukoflowError: for an unknown aggregator.
    """
    _check_aggregator(aggregator)
    if aggregator == "fraction_all":
        return np.asarray(called_all, float)
    if aggregator == "mean_logit":
        return logit(probabilities)
    return np.asarray(probabilities, float)


def finish(mean_score: ArrayLike, aggregator: str) -> np.ndarray:
    """A mean of `cell_scores` as an aggregate in [0, 1] (sigmoid for `mean_logit`)."""
    mean_score = np.asarray(mean_score, float)
    return sigmoid(mean_score) if aggregator == "mean_logit" else mean_score


def aggregate(probabilities: ArrayLike, called_all: ArrayLike, aggregator: str) -> float:
    """One subject's aggregate from its cells; NaN for a subject without cells.

    Args:
        probabilities: (N,) the cells' calibrated probabilities of `all`.
        called_all: (N,) 0/1, the cells called `all` at the cell threshold.
        aggregator: one of `AGGREGATORS`.

    Returns:
        The aggregate in [0, 1].
    """
    scores = cell_scores(probabilities, called_all, aggregator)
    return float(finish(scores.mean(), aggregator)) if len(scores) else float("nan")


def read_cells(path: str | Path) -> pd.DataFrame:
    """A predictions CSV of evaluate or ensemble, checked for the columns this step reads.

    Raises:
        LeukoflowError: naming the file when it is missing, lacks a column or is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise LeukoflowError(f"predictions file {path} does not exist")
    frame = pd.read_csv(path, dtype={"subject": str})
    missing = sorted(set(CELL_COLUMNS) - set(frame.columns))
    if missing:
        raise LeukoflowError(
            f"{path}: lacks column(s) {missing}; write it with `leukoflow evaluate` or "
            "`leukoflow ensemble`"
        )
    if frame.empty:
        raise LeukoflowError(f"{path}: no cells")
    return frame


def subject_table(cells: pd.DataFrame, aggregator: str) -> pd.DataFrame:
    """One row per subject: truth, cells, referred cells and the aggregate.

    Args:
        cells: cell predictions (`CELL_COLUMNS`).
        aggregator: one of `AGGREGATORS`.

    Returns:
        Columns subject, y (0/1: the majority label of its cells), truth (`all`/`hem`),
        cells, referred, aggregate; sorted by subject.
    """
    scores = cell_scores(cells["calibrated_probability_all"], cells["predicted"], aggregator)
    frame = cells.assign(score=scores, subject=cells["subject"].astype(str))
    table = (
        frame.groupby("subject", sort=True)
        .agg(
            y=("y", "mean"),
            cells=("y", "size"),
            referred=("referred", "sum"),
            score=("score", "mean"),
        )
        .reset_index()
    )
    table["y"] = (table["y"] >= 0.5).astype(int)
    table["truth"] = np.where(table["y"] == 1, "all", "hem")
    table["referred"] = table["referred"].astype(int)
    table["aggregate"] = finish(table.pop("score"), aggregator)
    return table


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    """The exact (Clopper-Pearson) interval of a proportion k / n.

    Returns:
        [lo, hi]; lo is 0 when k is 0 and hi is 1 when k is n.

    Raises:
        LeukoflowError: when n < 1 or k outside [0, n].
    """
    if n < 1 or not 0 <= k <= n:
        raise LeukoflowError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return [lo, hi]


def too_few(n_all: int, n_hem: int, minimum: int) -> str | None:
    """The note that replaces an interval below `minimum` subjects of a class (the rule of
    `leukoflow.evaluate.metrics.too_few_subjects`), else None."""
    if too_few_subjects({"all": n_all, "hem": n_hem}, minimum) is None:
        return None
    return f"too few subjects ({n_all} all, {n_hem} hem; at least {minimum} of each needed)"


def subject_metrics(
    y: ArrayLike,
    aggregates: ArrayLike,
    threshold: float,
    min_per_class: int = MIN_SUBJECTS_PER_CLASS,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict:
    """Subject-level ROC-AUC, sensitivity and specificity, with CIs where there are subjects
    enough.

    Args:
        y: (S,) 0/1 truth per subject.
        aggregates: (S,) aggregates per subject.
        threshold: the patient threshold (`all` when aggregate >= it).
        min_per_class: below this many subjects of either class, no interval (`ci_note`).
        n_bootstrap: stratified subject resamples of the ROC-AUC interval.
        seed: their seed.

    Returns:
        {subjects, n_all, n_hem, correct, roc_auc, sensitivity, specificity (None where a
        class is absent), roc_auc_ci (bootstrap), sensitivity_ci, specificity_ci
        (Clopper-Pearson; every CI None below the minimum), ci_note}.
    """
    y = np.asarray(y, int)
    aggregates = np.asarray(aggregates, float)
    calls = (aggregates >= threshold).astype(int)
    n_all, n_hem = int(y.sum()), int((1 - y).sum())
    tp, tn = int((calls * y).sum()), int(((1 - calls) * (1 - y)).sum())
    values = weighted_metrics(y, aggregates, calls, np.ones((1, len(y))))
    auc = float(values["roc_auc"][0])
    note = too_few(n_all, n_hem, min_per_class)
    out = {
        "subjects": len(y),
        "n_all": n_all,
        "n_hem": n_hem,
        "correct": int((calls == y).sum()),
        "roc_auc": None if np.isnan(auc) else auc,
        "sensitivity": tp / n_all if n_all else None,
        "specificity": tn / n_hem if n_hem else None,
        "roc_auc_ci": None,
        "sensitivity_ci": None,
        "specificity_ci": None,
        "ci_note": note,
    }
    if note is None:
        weights = subject_resamples(np.arange(len(y)), y, n_bootstrap, seed)
        auc_ci = percentile_ci(weighted_metrics(y, aggregates, calls, weights)["roc_auc"])
        out["roc_auc_ci"] = auc_ci if auc_ci[0] is not None else None
        out["sensitivity_ci"] = clopper_pearson(tp, n_all)
        out["specificity_ci"] = clopper_pearson(tn, n_hem)
    return out


def scores_line(test: Mapping) -> str:
    """The test subjects' scores in words: ROC-AUC, sensitivity and specificity, each with
    its CI, or the note that there are too few subjects for one.

    Args:
        test: `subject_metrics`'s dict.
    """

    def number(value):
        return "-" if value is None else f"{value:.3f}"

    parts = []
    for key, name in SCORE_NAMES:
        ci = test.get(f"{key}_ci")
        interval = f" [{number(ci[0])}, {number(ci[1])}]" if ci else ""
        parts.append(f"{name} {number(test.get(key))}{interval}")
    line = ", ".join(parts)
    if test.get("ci_note"):
        return f"{line} (CI: {test['ci_note']})"
    return f"{line} (95% CIs: ROC-AUC stratified subject bootstrap, the others Clopper-Pearson)"


def fit_patient_threshold(val_subjects: pd.DataFrame, rule: str = "max_f1") -> float:
    """The patient threshold from the VALIDATION subjects' truth and aggregates only.

    Raises:
        LeukoflowError: as `choose_threshold` (e.g. no `all` subject in validation).
    """
    try:
        return choose_threshold(val_subjects["y"], val_subjects["aggregate"], rule)
    except LeukoflowError as error:
        raise LeukoflowError(f"patient threshold: {error} (validation subjects)") from None


def called(table: pd.DataFrame, threshold: float, subset: str) -> pd.DataFrame:
    """`subject_table` rows with the call at `threshold` and whether it is correct."""
    calls = table["aggregate"] >= threshold
    return table.assign(
        subset=subset,
        call=np.where(calls, "all", "hem"),
        correct=(calls.astype(int) == table["y"]).astype(int),
    )


def fit_and_score(
    val: pd.DataFrame,
    test: pd.DataFrame,
    aggregator: str,
    threshold_rule: str = "max_f1",
    min_per_class: int = MIN_SUBJECTS_PER_CLASS,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """One aggregator: threshold fitted on the validation subjects, test subjects scored.

    Args:
        val: validation cell predictions (`CELL_COLUMNS`).
        test: test cell predictions.
        aggregator: one of `AGGREGATORS`.
        threshold_rule: the rule of the cell threshold (evaluate.threshold).
        min_per_class: subjects of each class an interval needs.
        n_bootstrap: resamples of the ROC-AUC interval.
        seed: their seed.

    Returns:
        ({aggregator, threshold, threshold_rule, val: {subjects, n_all, n_hem}, test:
        `subject_metrics`}, the subjects of both subsets (`SUBJECT_COLUMNS`)).
    """
    val_table = subject_table(val, aggregator)
    threshold = fit_patient_threshold(val_table, threshold_rule)
    test_table = subject_table(test, aggregator)
    scores = subject_metrics(
        test_table["y"], test_table["aggregate"], threshold, min_per_class, n_bootstrap, seed
    )
    fitted = {
        "aggregator": aggregator,
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "val": {
            "subjects": len(val_table),
            "n_all": int(val_table["y"].sum()),
            "n_hem": int((1 - val_table["y"]).sum()),
        },
        "test": scores,
    }
    subjects = pd.concat(
        [called(val_table, threshold, "val"), called(test_table, threshold, "test")]
    )
    return fitted, subjects[SUBJECT_COLUMNS].reset_index(drop=True)


def patients_summary(
    name: str, val: pd.DataFrame, test: pd.DataFrame, patients: Mapping, evaluate: Mapping
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The patients step on two predictions frames: every aggregator fitted and scored, the
    configured one's subjects and cells-needed curve.

    Args:
        name: the model's name (recorded).
        val: validation cell predictions (`CELL_COLUMNS`).
        test: test cell predictions.
        patients: the config's `patients` block (filled by the schema).
        evaluate: the config's `evaluate` block (threshold, bootstrap, seed,
            min_subjects_per_class).

    Returns:
        (summary, subjects, curve): the patients.json dict, the subjects table and the
        curve table (`leukoflow.evaluate.cells_needed.CURVE_COLUMNS`, both subsets).

    Raises:
        LeukoflowError: as `fit_patient_threshold`, or for an unknown aggregator.
    """
    from leukoflow.evaluate.cells_needed import cells_needed

    chosen = patients["aggregator"]
    _check_aggregator(chosen)
    options = {
        "threshold_rule": str(evaluate.get("threshold", "max_f1")),
        "min_per_class": int(evaluate.get("min_subjects_per_class", MIN_SUBJECTS_PER_CLASS)),
        "n_bootstrap": int(evaluate.get("bootstrap", 2000)),
        "seed": int(evaluate.get("seed", 0)),
    }
    fits = {agg: fit_and_score(val, test, agg, **options) for agg in AGGREGATORS}
    fitted, subjects = fits[chosen]
    needed, curve = cells_needed(
        val, test, chosen, fitted["threshold"], patients, options["min_per_class"]
    )
    referred = int(test["referred"].sum())
    summary = {
        "model": name,
        **fitted,
        "fitted_on": "validation subjects",
        "min_subjects_per_class": options["min_per_class"],
        "test_cells": {"cells": len(test), "referred": referred},
        "cells_needed": needed,
        "aggregators": {
            agg: {"threshold": fit["threshold"], "test": fit["test"]}
            for agg, (fit, _) in fits.items()
        },
    }
    return summary, subjects, curve


def run_patients(
    name: str,
    val_path: str | Path,
    test_path: str | Path,
    patients: Mapping | None,
    evaluate: Mapping | None,
    subjects_out: str | Path,
    curve_out: str | Path,
    summary_out: str | Path,
) -> dict:
    """The `patients` step of one model or ensemble: read its predictions, write its subjects,
    its cells-needed curve and its summary, atomically.

    Args:
        name: the architecture's or ensemble's name.
        val_path: its val_predictions.csv (evaluate or ensemble).
        test_path: its test_predictions.csv.
        patients: the config's `patients` block (missing keys: the schema's defaults).
        evaluate: the config's `evaluate` block.
        subjects_out: subjects CSV to write (`SUBJECT_COLUMNS`).
        curve_out: curve CSV to write.
        summary_out: patients.json to write.

    Returns:
        The summary.

    Raises:
        ConfigError: for a `patients` block the schema rejects.
        LeukoflowError: as `read_cells` and `patients_summary`.
    """
    patients = config_block("patients", patients)
    val, test = read_cells(val_path), read_cells(test_path)
    summary, subjects, curve = patients_summary(name, val, test, patients, evaluate or {})
    for path, frame in ((subjects_out, subjects), (curve_out, curve)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    write_text(summary_out, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    test_fit = summary["test"]
    log.info(
        "%s: %d of %d test subjects called correctly (%s, patient threshold %.3f); cells "
        "needed for %.2f/%.2f: %s",
        name,
        test_fit["correct"],
        test_fit["subjects"],
        summary["aggregator"],
        summary["threshold"],
        patients["target"],
        patients["target"],
        summary["cells_needed"]["n"],
    )
    return summary
