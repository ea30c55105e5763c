"""The ablation table: each factor's effect on F1, weighted F1 and ROC-AUC, paired CIs.

For one architecture, the effect of a factor's level l against its reference level r is
the mean, over every setting of the other factors, of metric(l) - metric(r): two models that
differ in that factor only. Each difference is taken on the test images both models were
scored on (their shared test cells: all of them when both use the same split; for the
image-level random split against the subject-disjoint one, the cells that are test cells
in both splits, so that both models are judged on the same cells and the difference is what
the random split's model learnt from other images of the same subjects).

The CI is a paired subject bootstrap: one resample of the subjects (drawn with replacement
within each label, as for Table I) weighs every image of every comparison, so all
differences of a resample come from the same subjects. F1 and weighted F1 are taken at each
model's own threshold (chosen on its own validation subset), ROC-AUC from its
probabilities. When a comparison's shared test cells hold fewer subjects of a class than
`evaluate.min_subjects_per_class`, the row keeps its point estimate, has no interval
(`ci_note` says why) and its reading judges nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.core.atomic import atomic_path, write_text
from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.metrics import (
    MIN_SUBJECTS_PER_CLASS,
    metrics_over_weights,
    percentile_ci,
    subject_classes,
    subject_resamples,
    too_few_subjects,
)

log = logging.getLogger(__name__)

EFFECT_METRICS = ("f1", "weighted_f1", "roc_auc")
LABELS = {"f1": "F1", "weighted_f1": "Weighted F1", "roc_auc": "ROC-AUC"}


def _subject_weights(frames, n_resamples, seed):
    """(subjects index, (B, S) weights): one stratified resample of every subject seen."""
    both = pd.concat([f[["subject", "y"]] for f in frames])
    subjects = both.groupby("subject")["y"].mean().round().astype(int)
    weights = subject_resamples(subjects.index.to_numpy(), subjects.to_numpy(), n_resamples, seed)
    return {s: i for i, s in enumerate(subjects.index)}, weights


def _pair_values(merged, columns, weights):
    """metric (B+1,) of arm a and of arm b on the shared rows; row 0 = all weights one."""
    y = merged["y"].to_numpy(float)
    w = np.vstack([np.ones((1, len(merged))), weights[:, columns]])
    values = {}
    for arm, suffix in (("a", ""), ("b", "_b")):
        p = merged[f"probability_all{suffix}"].to_numpy(float)
        predicted = merged[f"predicted{suffix}"].to_numpy(float)
        values[arm] = metrics_over_weights(y, p, predicted, w, EFFECT_METRICS)
    return values


def factor_effects(
    jobs: Sequence[Mapping],
    predictions: Mapping[tuple[str, str], pd.DataFrame],
    reference: Mapping[str, Mapping[str, str]],
    n_resamples: int = 2000,
    seed: int = 0,
    min_subjects_per_class: int = MIN_SUBJECTS_PER_CLASS,
) -> pd.DataFrame:
    """The effect of every non-reference level of every factor, per architecture.

    Args:
        jobs: the ablation plan (`leukoflow.evaluate.ablation.plan`): architecture, combination,
            levels, run.
        predictions: {(architecture, combination): its test predictions (path, subject, y,
            predicted, probability_all)}.
        reference: {architecture: {factor: reference level}}.
        n_resamples: subject resamples of the CIs.
        seed: seed of the resamples.
        min_subjects_per_class: below this many shared test subjects of a class in a
            comparison, the row's CIs are withheld.

    Returns:
        One row per (architecture, factor, level): the reference level, the number of
        comparisons averaged, the shared test images and subjects (of the smallest
        comparison), for each of `EFFECT_METRICS` the effect and its CI (`_lo`, `_hi`), and
        `ci_note` ("CI: too few test subjects (n all, m hem)" of the smallest comparison)
        where the CIs are withheld.
    """
    rows = []
    for arch in dict.fromkeys(job["architecture"] for job in jobs):
        own = [job for job in jobs if job["architecture"] == arch]
        frames = {job["combination"]: predictions[arch, job["combination"]] for job in own}
        index, weights = _subject_weights(frames.values(), n_resamples, seed)
        by_levels = {tuple(sorted(job["levels"].items())): job["combination"] for job in own}
        for factor, ref in reference[arch].items():
            levels = dict.fromkeys(job["levels"][factor] for job in own)
            for level in (lv for lv in levels if lv != ref):
                diffs, shared_images, shared_subjects, classes = [], [], [], []
                for job in (j for j in own if j["levels"][factor] == level):
                    partner = by_levels[tuple(sorted({**job["levels"], factor: ref}.items()))]
                    merged = frames[job["combination"]].merge(  # the test cells both hold
                        frames[partner][["path", "predicted", "probability_all"]],
                        on="path",
                        suffixes=("", "_b"),
                    )
                    if merged.empty:
                        continue
                    columns = merged["subject"].astype(str).map(index).to_numpy()
                    values = _pair_values(merged, columns, weights)
                    diffs.append({m: values["a"][m] - values["b"][m] for m in EFFECT_METRICS})
                    shared_images.append(len(merged))
                    shared_subjects.append(merged["subject"].nunique())
                    classes.append(subject_classes(merged["subject"], merged["y"]))
                row = {
                    "architecture": arch,
                    "factor": factor,
                    "level": level,
                    "reference": ref,
                    "comparisons": len(diffs),
                    "shared_images": min(shared_images, default=0),
                    "shared_subjects": min(shared_subjects, default=0),
                }
                fewest = min(classes, key=lambda c: min(c.values()), default=None)
                note = fewest and too_few_subjects(fewest, min_subjects_per_class)
                for m in EFFECT_METRICS:
                    if diffs:
                        mean = np.mean([d[m] for d in diffs], axis=0)  # NaN stays NaN
                        point = None if np.isnan(mean[0]) else float(mean[0])
                        lo, hi = [None, None] if note else percentile_ci(mean[1:])
                    else:
                        point, lo, hi = None, None, None
                    row.update({m: point, f"{m}_lo": lo, f"{m}_hi": hi})
                if note:
                    row["ci_note"] = note
                rows.append(row)
    return pd.DataFrame(rows)


def reading(row: Mapping) -> str:
    """What a row of the effects table says, in words.

    Args:
        row: a row of `factor_effects` (factor, level, reference, each metric and its CI,
            `ci_note` where the CIs are withheld).

    Returns:
        "LEVEL scores higher|lower than REFERENCE", "mixed" or "no difference", which CIs
        exclude 0, and for the random split scoring higher, that this is leakage; that the
        shared test subset is too small to judge where the CIs are withheld.
    """
    defined = [m for m in EFFECT_METRICS if row[m] is not None and not pd.isna(row[m])]
    if not defined:
        return "no shared test cells to compare"
    note = row.get("ci_note")
    if isinstance(note, str):
        return f"the shared test subset is too small to judge ({note})"
    points = [row[m] for m in defined]
    if all(p >= 0 for p in points) and any(p > 0 for p in points):
        sign = "higher"
    elif all(p <= 0 for p in points) and any(p < 0 for p in points):
        sign = "lower"
    else:
        sign = ""
    if sign:
        text = f"{row['level']} scores {sign} than {row['reference']}"
    else:
        text = "no difference" if all(p == 0 for p in points) else "mixed"
    clear = [
        LABELS[m]
        for m in defined
        if (row[f"{m}_lo"] is not None and not pd.isna(row[f"{m}_lo"]) and row[f"{m}_lo"] > 0)
        or (row[f"{m}_hi"] is not None and not pd.isna(row[f"{m}_hi"]) and row[f"{m}_hi"] < 0)
    ]
    if clear:
        text += f" (the CI excludes 0 for {', '.join(clear)})"
    else:
        text += " (every CI includes 0: it could be noise)"
    if row["factor"] == "split" and row["level"] == "random" and sign == "higher":
        text += ": the leakage of an image-level split"
    return text


def _fmt(value, digits=3, sign=True):
    if value is None or pd.isna(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _interval(row, metric, sign=True):
    """'[lo, hi]' of a row's metric, or '[CI: too few test subjects (...)]' where withheld."""
    note = row.get("ci_note")
    if isinstance(note, str):
        return f"[{note}]"
    return f"[{_fmt(row[f'{metric}_lo'], sign=sign)}, {_fmt(row[f'{metric}_hi'], sign=sign)}]"


def effects_markdown(effects: pd.DataFrame, combos: pd.DataFrame) -> str:
    """The ablation table in Markdown.

    Args:
        effects: `factor_effects` with its `reading` column.
        combos: each combination's own test metrics (architecture, combination, run,
            n_test, each metric and its CI).

    Returns:
        The effects table, the combinations table, and their notes.
    """
    header = ["Architecture", "Factor: level vs reference", "Shared test cells (subjects)"]
    header += [f"Δ{LABELS[m]} [95% CI]" for m in EFFECT_METRICS] + ["Reading"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in effects.to_dict("records"):
        cells = [
            row["architecture"],
            f"{row['factor']}: {row['level']} vs {row['reference']}",
            f"{row['shared_images']} ({row['shared_subjects']})",
        ]
        cells += [f"{_fmt(row[m])} {_interval(row, m)}" for m in EFFECT_METRICS]
        lines.append("| " + " | ".join(cells + [row["reading"]]) + " |")
    header = ["Architecture", "Combination", "Run", "Test cells"]
    header += [f"{LABELS[m]} [95% CI]" for m in EFFECT_METRICS]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in combos.to_dict("records"):
        cells = [row["architecture"], row["combination"], row["run"], str(row["n_test"])]
        cells += [
            f"{_fmt(row[m], sign=False)} {_interval(row, m, sign=False)}" for m in EFFECT_METRICS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Effect: mean over the settings of the other factors of metric(level) - "
        "metric(reference), each difference on the test cells both models were scored on; "
        "95% CI from a paired bootstrap over subjects (one resample of the subjects weighs "
        "every comparison). F1 and weighted F1 at each model's own threshold (chosen on its "
        "own validation subset).",
        "split: random vs subject compares the two splits on the cells that are test cells in "
        "both (a random share of the subject split's test cells), so both models are judged "
        "on the same cells; in the random split, other cells of the same subjects were in "
        "training.",
        "Second table: each combination on its own test subset, as it would be reported "
        "alone (the random split's test subset differs from the others'). Run `main`: the "
        "main run's model and evaluation, reused.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def run_ablation_table(
    plan: Mapping,
    metrics_files: Sequence[str | Path],
    prediction_files: Sequence[str | Path],
    effects_csv: str | Path,
    combinations_csv: str | Path,
    table_md: str | Path,
    n_resamples: int = 2000,
    seed: int = 0,
    min_subjects_per_class: int = MIN_SUBJECTS_PER_CLASS,
) -> pd.DataFrame:
    """The `ablation` job: read every combination's evaluation, write the ablation table.

    Args:
        plan: {"jobs": `leukoflow.evaluate.ablation.plan(config)`, "reference": {architecture:
            {factor: level}}}.
        metrics_files: evaluate's metrics.json of each job, in plan order.
        prediction_files: evaluate's test_predictions.csv of each job, in plan order.
        effects_csv: the effects table to write.
        combinations_csv: each combination's own test metrics with CIs, to write.
        table_md: both tables in Markdown, with notes.
        n_resamples: subject resamples of the CIs.
        seed: seed of the resamples.
        min_subjects_per_class: below this many shared test subjects of a class, an effect
            has no CI (`factor_effects`).

    Returns:
        The effects table.

    Raises:
        LeukoflowError: file counts other than the plan's jobs.
    """
    jobs = plan["jobs"]
    for option, files in (("--metrics", metrics_files), ("--predictions", prediction_files)):
        if len(files) != len(jobs):
            raise LeukoflowError(
                f"{option}: {len(files)} files for {len(jobs)} ablation jobs; one per job, "
                "in the order of the plan"
            )
    predictions, combos = {}, []
    for job, metrics_file, prediction_file in zip(jobs, metrics_files, prediction_files):
        key = (job["architecture"], job["combination"])
        predictions[key] = pd.read_csv(prediction_file, dtype={"subject": str})
        metrics = json.loads(Path(metrics_file).read_text())
        combo = {k: job[k] for k in ("architecture", "combination", "run")}
        combo["n_test"] = metrics["n_test"]
        for m in EFFECT_METRICS:
            combo[m] = metrics["test"][m]
            combo[f"{m}_lo"], combo[f"{m}_hi"] = metrics["ci"][m]
        if metrics.get("ci_note"):
            combo["ci_note"] = metrics["ci_note"]
        combos.append(combo)
    effects = factor_effects(
        jobs, predictions, plan["reference"], n_resamples, seed, min_subjects_per_class
    )
    effects["reading"] = [reading(row) for row in effects.to_dict("records")]
    combos = pd.DataFrame(combos)
    for frame, path in ((effects, effects_csv), (combos, combinations_csv)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    write_text(table_md, effects_markdown(effects, combos))
    for row in effects.to_dict("records"):
        log.info("%s, %s: %s", row["architecture"], row["factor"], row["reading"])
    return effects
