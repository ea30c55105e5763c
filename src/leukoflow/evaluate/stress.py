"""The stress test: each model on the test subset under the acquisition shifts of the registry.

`run_stress` is the `stress` job of one trained model: the model is loaded and compiled once,
then every chosen (shift, strength) of `leukoflow.evaluate.shifts` is applied to the test
images batch by batch and predicted with the evaluate step's test-time augmentation. The
temperature and threshold are evaluate's, fitted on the unshifted validation subset; test
labels only score. `run_stress_ensemble` combines the members' shifted probabilities with
the ensemble's fitted combiner (`leukoflow.evaluate.ensemble.combine`). Both write the
same table (`stress_table`): for each shift, F1, weighted F1 and ROC-AUC and their change
from the unshifted test, with a paired subject-bootstrap CI (the same resamples of
subjects score both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.core.atomic import atomic_path
from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.calibration import apply_temperature
from leukoflow.evaluate.ensemble import combine
from leukoflow.evaluate.metrics import (
    MIN_SUBJECTS_PER_CLASS,
    metrics_over_weights,
    percentile_ci,
    subject_classes,
    subject_resamples,
    too_few_subjects,
)
from leukoflow.evaluate.shifts import SHIFTS, chosen_strengths, shift_images

log = logging.getLogger(__name__)

STRESS_METRICS = ("f1", "weighted_f1", "roc_auc")
SHIFTED_COLUMNS = ["row", "path", "subject", "y", "shift", "strength", "probability_all"]


def stress_table(
    baseline: pd.DataFrame,
    shifted: pd.DataFrame,
    temperature: float,
    threshold: float,
    n_bootstrap: int = 2000,
    seed: int = 0,
    min_subjects_per_class: int = MIN_SUBJECTS_PER_CLASS,
) -> pd.DataFrame:
    """Each shift's metrics and their change from the unshifted test, paired subject CIs.

    Args:
        baseline: the unshifted test predictions (path, subject, y, probability_all).
        shifted: `SHIFTED_COLUMNS` rows, one per (shift, strength, test image).
        temperature: the temperature fitted on the unshifted validation subset.
        threshold: the threshold chosen there (on calibrated probabilities).
        n_bootstrap: subject resamples of the CIs.
        seed: seed of the resamples.
        min_subjects_per_class: below this many test subjects of a class, no CI (NaN) and
            `ci_note` says why (`leukoflow.evaluate.metrics.too_few_subjects`).

    Returns:
        One row per (shift, strength), in the order of `shifted`: shift, strength, params
        (JSON), n, n_subjects, ci_note ('' or why there is no CI), and for each of
        `STRESS_METRICS` the unshifted value (`{m}_unshifted`), the shifted one, the change
        (`delta_{m}`) and its 95% CI (`delta_{m}_lo`, `delta_{m}_hi`); undefined values are
        NaN.

    Raises:
        LeukoflowError: when a shift's images are not the baseline's.
    """
    y = baseline["y"].to_numpy(float)
    weights = subject_resamples(baseline["subject"].astype(str), y, n_bootstrap, seed)
    weights = np.vstack([np.ones((1, len(y))), weights])
    note = too_few_subjects(subject_classes(baseline["subject"], y), min_subjects_per_class)

    def values(p_raw):
        p = apply_temperature(p_raw, temperature)
        return metrics_over_weights(y, p, (p >= threshold).astype(float), weights, STRESS_METRICS)

    reference = values(baseline["probability_all"].to_numpy(float))
    rows = []
    for (name, strength), frame in shifted.groupby(["shift", "strength"], sort=False):
        frame = frame.set_index("path")
        if len(frame) != len(baseline) or set(frame.index) != set(baseline["path"]):
            raise LeukoflowError(
                f"stress: shift {name}/{strength} was predicted on other images than the "
                "unshifted test"
            )
        shifted_values = values(frame.loc[baseline["path"], "probability_all"].to_numpy(float))
        row = {
            "shift": name,
            "strength": strength,
            "params": json.dumps(dict(SHIFTS[name].strengths[strength]), sort_keys=True),
            "n": len(y),
            "n_subjects": int(baseline["subject"].nunique()),
            "ci_note": note or "",
        }
        for m in STRESS_METRICS:
            delta = shifted_values[m] - reference[m]
            lo, hi = (None, None) if note else percentile_ci(delta[1:])
            row.update(
                {
                    f"{m}_unshifted": reference[m][0],
                    m: shifted_values[m][0],
                    f"delta_{m}": delta[0],
                    f"delta_{m}_lo": np.nan if lo is None else lo,
                    f"delta_{m}_hi": np.nan if hi is None else hi,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_record(table_path: str | Path) -> list[dict]:
    """What a bundle keeps of its model's stress table: one dict per (shift, strength).

    Args:
        table_path: the stress table CSV (`run_stress` or `run_stress_ensemble`).

    Returns:
        [{shift, strength, params, ci_note, and per metric of `STRESS_METRICS` its
        unshifted and shifted value, change and CI}], None where undefined.

    Raises:
        LeukoflowError: naming the file when it is missing or lacks a column.
    """
    try:
        table = pd.read_csv(table_path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as error:
        raise LeukoflowError(f"stress table {table_path}: cannot read it ({error})") from None
    per_metric = ("{m}_unshifted", "{m}", "delta_{m}", "delta_{m}_lo", "delta_{m}_hi")
    columns = ["shift", "strength", "params", "ci_note"] + [
        c.format(m=m) for m in STRESS_METRICS for c in per_metric
    ]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LeukoflowError(f"stress table {table_path} lacks column(s) {missing}")
    table = table[columns].astype(object).where(table[columns].notna(), None)
    return [
        {**row, "params": json.loads(row["params"]), "ci_note": row["ci_note"] or ""}
        for row in table.to_dict("records")
    ]


def _fitted(metrics_path):
    """(temperature, threshold) of an evaluation's metrics.json."""
    metrics = json.loads(Path(metrics_path).read_text())
    return float(metrics["calibration"]["temperature"]), float(metrics["threshold"]), metrics


def _read_predictions(path):
    return pd.read_csv(path, dtype={"subject": str, "path": str})


def write_table(table: pd.DataFrame, model: str, out: str | Path) -> None:
    """Write a stress table with its `model` column first, atomically."""
    with atomic_path(out) as tmp:
        table.insert(0, "model", model)
        table.to_csv(tmp, index=False, float_format="%.6g")


def unnormalised_images(
    index: pd.DataFrame, dataset: str | Path, reference: Mapping, overrides: Mapping, size: int
) -> np.ndarray:
    """The test images prepared again from the raw files with a changed stain reference.

    Args:
        index: the test store's index (`path` relative to `dataset`), in store order.
        dataset: the dataset folder.
        reference: the stain reference the stores were prepared with.
        overrides: its keys to change (a preparation shift's strength parameters).
        size: the store's side, pixels.

    Returns:
        uint8 (N, size, size, 3), in store order.
    """
    from leukoflow.data.images import open_rgb
    from leukoflow.stain.stores import prepare_image

    changed = {**reference, **overrides}
    out = np.empty((len(index), size, size, 3), np.uint8)
    for row, rel in enumerate(index["path"]):
        with open_rgb(Path(dataset) / rel) as image:
            out[row] = prepare_image(image, changed, size)
    return out


def run_stress(
    model_path: str | Path,
    test_store: str | Path,
    metrics_path: str | Path,
    test_predictions: str | Path,
    reference_path: str | Path,
    dataset: str | Path,
    settings: Mapping,
    evaluate_config: Mapping,
    stress_config: Mapping,
    table_out: str | Path,
    shifted_out: str | Path,
) -> pd.DataFrame:
    """The `stress` job of one trained model.

    Args:
        model_path: the trained `model.keras`.
        test_store: the test store it was evaluated on.
        metrics_path: evaluate's metrics.json (temperature and threshold, from validation;
            `tta`, the test-time augmentation they were fitted with).
        test_predictions: evaluate's test predictions CSV (the unshifted probabilities).
        reference_path: the stain reference the stores were prepared with.
        dataset: the dataset folder (the raw images of the preparation shifts).
        settings: the architecture's merged settings (`architecture`, `batch_size`,
            `jit_compile`).
        evaluate_config: the config's `evaluate` block (`bootstrap`, `seed`,
            `min_subjects_per_class`).
        stress_config: the config's `stress` block (`strengths`, `seed`).
        table_out: the stress table CSV to write (`stress_table`, with `model`).
        shifted_out: the shifted probabilities CSV to write (`SHIFTED_COLUMNS`; an ensemble's
            stress job reads it).

    Returns:
        The stress table.

    Raises:
        LeukoflowError: for a missing model, store or file, or predictions of other images.
    """
    from leukoflow.core.runtime import decide
    from leukoflow.models import load_model
    from leukoflow.models.inference import compiled_inference, predict_arrays
    from leukoflow.stain.normalize import load_reference
    from leukoflow.stain.stores import open_store

    pairs = chosen_strengths(stress_config.get("strengths"))
    seed = int(stress_config.get("seed", 0))
    temperature, threshold, metrics = _fitted(metrics_path)
    baseline = _read_predictions(test_predictions)
    images, index = open_store(test_store)
    if list(index["path"]) != list(baseline["path"]):
        raise LeukoflowError(f"{test_predictions}: not the predictions of {test_store}")
    predict_fn = compiled_inference(load_model(model_path), decide(settings).jit_compile)
    batch_size = int(settings.get("batch_size", 32))
    tta = metrics.get("tta", "none")  # the test-time augmentation evaluate fitted on
    frames = []
    for name, strength in pairs:
        shift = SHIFTS[name]
        source = images
        if shift.apply is None:
            reference = load_reference(reference_path)
            source = unnormalised_images(
                index, dataset, reference, shift.strengths[strength], images.shape[1]
            )
        p = np.empty(len(images), np.float32)
        for start in range(0, len(images), batch_size):
            batch = np.asarray(source[start : start + batch_size])
            if shift.apply is not None:
                batch = shift_images(batch, name, strength, seed, first_row=start)
            p[start : start + len(batch)] = predict_arrays(predict_fn, batch, batch_size, tta)
        frames.append(
            baseline[["row", "path", "subject", "y"]].assign(
                shift=name, strength=strength, probability_all=p
            )
        )
        log.info("stress %s/%s: %d images predicted", name, strength, len(p))
    shifted = pd.concat(frames, ignore_index=True)[SHIFTED_COLUMNS]
    with atomic_path(shifted_out) as tmp:
        shifted.to_csv(tmp, index=False)
    table = stress_table(
        baseline,
        shifted,
        temperature,
        threshold,
        int(evaluate_config.get("bootstrap", 2000)),
        int(evaluate_config.get("seed", 0)),
        int(evaluate_config.get("min_subjects_per_class", MIN_SUBJECTS_PER_CLASS)),
    )
    write_table(table, str(settings.get("architecture", Path(model_path).parent.name)), table_out)
    return table


def run_stress_ensemble(
    name: str,
    members: Sequence[str],
    shifted_files: Sequence[str | Path],
    metrics_path: str | Path,
    test_predictions: str | Path,
    evaluate_config: Mapping,
    table_out: str | Path,
) -> pd.DataFrame:
    """The `stress` job of an ensemble: its members' shifted probabilities, combined.

    Args:
        name: the ensemble's name.
        members: its member architectures, in the order of the combiner.
        shifted_files: each member's shifted probabilities CSV (`run_stress`), in order.
        metrics_path: the ensemble job's metrics.json (its combiner, temperature, threshold).
        test_predictions: the ensemble's unshifted test predictions CSV.
        evaluate_config: the config's `evaluate` block (`bootstrap`, `seed`,
            `min_subjects_per_class`).
        table_out: the stress table CSV to write.

    Returns:
        The stress table.

    Raises:
        LeukoflowError: for file counts other than the members', members other than the
            combiner's, or members shifted on other images or shifts.
    """
    members = list(members)
    if len(shifted_files) != len(members):
        raise LeukoflowError(
            f"--shifted: {len(shifted_files)} files for {len(members)} members; one per member"
        )
    temperature, threshold, metrics = _fitted(metrics_path)
    combiner = metrics["ensemble"]
    if list(combiner["members"]) != members:
        raise LeukoflowError(
            f"{metrics_path}: the combiner's members {combiner['members']} are not {members}"
        )
    keys = ["shift", "strength", "path"]
    read = [_read_predictions(f).set_index(keys) for f in shifted_files]
    base = read[0].drop(columns="probability_all")
    for member, frame in zip(members, read):
        if len(frame) != len(base) or not frame.index.sort_values().equals(
            base.index.sort_values()
        ):
            raise LeukoflowError(
                f"stress of ensemble {name}: {member}'s shifted predictions hold other images "
                f"or shifts than {members[0]}'s"
            )
    probabilities = np.vstack([f.loc[base.index, "probability_all"].to_numpy(float) for f in read])
    shifted = base.assign(probability_all=combine(probabilities, combiner)).reset_index()
    table = stress_table(
        _read_predictions(test_predictions),
        shifted[SHIFTED_COLUMNS],
        temperature,
        threshold,
        int(evaluate_config.get("bootstrap", 2000)),
        int(evaluate_config.get("seed", 0)),
        int(evaluate_config.get("min_subjects_per_class", MIN_SUBJECTS_PER_CLASS)),
    )
    write_table(table, name, table_out)
    return table
