"""How many cells a patient-level call needs: the subject-level curve against N cells.

For each N of the config's list (`patients.cells`: 1, 2, 5, ..., `all`), every subject
contributes N of its cells drawn WITHOUT replacement (all of them when it has fewer, counted
in `subjects_short`), the subject's aggregate is taken over them and called at the patient
threshold; this is repeated `patients.draws` times with a seeded generator. Cells of one
subject are correlated, so the curve resamples within subjects and never assumes that cells
are independent. One random order per subject and draw serves every N (the first N cells of
it), so the points of one curve share their draws.

Per N and subset: the mean over the draws of the subject-level ROC-AUC, error rate,
sensitivity and specificity, the 2.5 and 97.5 percentiles of the error rate over the draws
(the variation from which cells were drawn, not a confidence interval over patients), and the
mean number of subjects called correctly. The N a model needs is the smallest one at which the
mean sensitivity and specificity of the VALIDATION subjects both reach `patients.target`;
the test curve shows what it gives on new subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from leukoflow.evaluate.patients import cell_scores, finish, too_few

CURVE_COLUMNS = [
    "subset",
    "cells",
    "draws",
    "subjects",
    "subjects_short",
    "roc_auc",
    "error_rate",
    "error_rate_lo",
    "error_rate_hi",
    "sensitivity",
    "specificity",
    "correct",
]


def _cell_points(cells: Sequence, most: int) -> list:
    """The curve's N values: the integers below `most` ascending, then `all` when listed or
    when an N of the list is `most` or more (every subject then gives all its cells)."""
    numbers = [int(n) for n in cells if n != "all"]
    every = "all" in cells or any(n >= most for n in numbers)
    return sorted(n for n in numbers if n < most) + (["all"] if every else [])


def draw_aggregates(
    frame: pd.DataFrame, aggregator: str, points: Sequence, draws: int, seed: int
) -> tuple[np.ndarray, dict]:
    """Each subject's aggregate over N cells drawn without replacement, for every N.

    Args:
        frame: cell predictions (subject, y, calibrated_probability_all, predicted).
        aggregator: one of `leukoflow.evaluate.patients.AGGREGATORS`.
        points: the N values (integers and `all`).
        draws: draws per N.
        seed: the generator's seed.

    Returns:
        (y, {N: (draws, S) aggregates}): the subjects' 0/1 truth (subjects sorted by id) and,
        per N, the aggregate of each draw and subject.
    """
    rng = np.random.default_rng(seed)
    scores = cell_scores(frame["calibrated_probability_all"], frame["predicted"], aggregator)
    frame = frame.assign(score=scores, subject=frame["subject"].astype(str))
    y, columns = [], {n: [] for n in points}
    for _, cells in frame.groupby("subject", sort=True):
        y.append(int(cells["y"].mean() >= 0.5))
        values = cells["score"].to_numpy(float)
        order = np.argsort(rng.random((draws, len(values))), axis=1)
        running = np.cumsum(values[order], axis=1)  # (draws, cells): sums of the first k
        for n in points:
            taken = len(values) if n == "all" else min(int(n), len(values))
            columns[n].append(running[:, taken - 1] / taken)
    return np.asarray(y, int), {
        n: finish(np.stack(c, axis=1), aggregator) for n, c in columns.items()
    }


def _auc_per_draw(y: np.ndarray, aggregates: np.ndarray) -> np.ndarray:
    """ROC-AUC of each draw's aggregates (draws, S) against `y`, ties half; NaN with one
    class."""
    pos, neg = aggregates[:, y == 1], aggregates[:, y == 0]
    if not pos.shape[1] or not neg.shape[1]:
        return np.full(len(aggregates), np.nan)
    wins = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    return wins.mean(axis=(1, 2))


def curve_points(
    frame: pd.DataFrame,
    aggregator: str,
    threshold: float,
    cells: Sequence,
    draws: int,
    seed: int,
    subset: str,
) -> pd.DataFrame:
    """The cells-needed curve of one subset.

    Args:
        frame: cell predictions (subject, y, calibrated_probability_all, predicted).
        aggregator: one of `leukoflow.evaluate.patients.AGGREGATORS`.
        threshold: the patient threshold.
        cells: the N values of the config (integers and `all`).
        draws: draws per N (`all` needs one).
        seed: the generator's seed.
        subset: `val` or `test` (the `subset` column).

    Returns:
        One row per N (`CURVE_COLUMNS`); N values at or above every subject's cell count
        are `all`.
    """
    counts = frame.groupby(frame["subject"].astype(str)).size().to_numpy()
    points = _cell_points(cells, int(counts.max()))
    y, aggregates = draw_aggregates(frame, aggregator, points, draws, seed)
    rows = []
    for n in points:
        agg = aggregates[n][:1] if n == "all" else aggregates[n]
        calls = (agg >= threshold).astype(int)
        errors = (calls != y).mean(axis=1)
        rows.append(
            {
                "subset": subset,
                "cells": str(n),
                "draws": len(agg),
                "subjects": len(y),
                "subjects_short": 0 if n == "all" else int((counts < int(n)).sum()),
                "roc_auc": float(np.nanmean(_auc_per_draw(y, agg)))
                if 0 < y.sum() < len(y)
                else np.nan,
                "error_rate": float(errors.mean()),
                "error_rate_lo": float(np.percentile(errors, 2.5)),
                "error_rate_hi": float(np.percentile(errors, 97.5)),
                "sensitivity": float(calls[:, y == 1].mean()) if y.sum() else np.nan,
                "specificity": float(1 - calls[:, y == 0].mean()) if (1 - y).sum() else np.nan,
                "correct": float(len(y) * (1 - errors.mean())),
            }
        )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def smallest_n(curve: pd.DataFrame, target: float) -> int | str | None:
    """The first N of a subset's curve whose mean sensitivity and specificity both reach
    `target` (an integer, or `all`); None when none does (or a class is absent)."""
    for row in curve.itertuples():
        if row.sensitivity >= target and row.specificity >= target:  # NaN never passes
            return row.cells if row.cells == "all" else int(row.cells)
    return None


def cells_needed(
    val: pd.DataFrame,
    test: pd.DataFrame,
    aggregator: str,
    threshold: float,
    patients: Mapping,
    min_per_class: int,
) -> tuple[dict, pd.DataFrame]:
    """The curves of both subsets and the N chosen on the validation subjects.

    Args:
        val: validation cell predictions.
        test: test cell predictions.
        aggregator: the configured aggregator.
        threshold: its patient threshold (fitted on validation).
        patients: the config's `patients` block (cells, draws, seed, target).
        min_per_class: the subjects of each class below which the N is flagged.

    Returns:
        ({n, target, chosen_on, draws, seed, val_note, test_at}, the curve of both subsets):
        `n` is the smallest N reaching the target on validation (None: not reached);
        `val_note` says when validation has too few subjects to trust it; `test_at` is the
        test curve's row at `n` (at the last point when `n` is None).
    """
    options = {
        "cells": list(patients["cells"]),
        "draws": int(patients["draws"]),
        "seed": int(patients["seed"]),
    }
    val_curve = curve_points(val, aggregator, threshold, subset="val", **options)
    test_curve = curve_points(test, aggregator, threshold, subset="test", **options)
    target = float(patients["target"])
    n = smallest_n(val_curve, target)
    at = test_curve[test_curve["cells"] == str(n)] if n is not None else test_curve.tail(1)
    if at.empty:  # the test subjects all have n cells or fewer: their `all`
        at = test_curve.tail(1)
    row = at.iloc[0]
    subjects = val.assign(subject=val["subject"].astype(str)).groupby("subject")["y"].mean() >= 0.5
    needed = {
        "n": n,
        "target": target,
        "chosen_on": "validation subjects",
        "draws": options["draws"],
        "seed": options["seed"],
        "val_note": too_few(int(subjects.sum()), int((~subjects).sum()), min_per_class),
        "test_at": {
            key: (
                None
                if pd.isna(row[key])
                else (str(row[key]) if key == "cells" else float(row[key]))
            )
            for key in ("cells", "sensitivity", "specificity", "error_rate", "correct")
        }
        | {"subjects": int(row["subjects"])},
    }
    return needed, pd.concat([val_curve, test_curve], ignore_index=True)
