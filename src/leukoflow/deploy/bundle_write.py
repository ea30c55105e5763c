"""Writing a bundle (`leukoflow bundle`, `leukoflow bundle-ensemble`): the layout and the
keys of bundle.json are described in `leukoflow.deploy.bundle`, which reads it.

Every member's Keras file is copied into the bundle and exported to ONNX beside it
(`leukoflow.deploy.onnx_model.export_checked`); an export that fails or does not match the Keras
model leaves that member without an ONNX file and its reason in bundle.json and the card,
and never fails the bundle. An ensemble's member given as its model bundle brings its
checked ONNX file (or the reason it has none) along: each model is exported once. When that
model bundle lies beside the ensemble's (both in `results/models/`), the ensemble refers to
its files (`../ARCH/model.keras`) instead of copying them; and a model bundle written with
`refer=True` (the workflow's) refers to the training job's model file
(`../../main/train/ARCH/model.keras`): each model is stored once in the results tree, and
`leukoflow export` writes a self-contained copy. Every member's files get their sha256 in
bundle.json. The model card
(`leukoflow.deploy.modelcard.render_card`) is made from the finished bundle.json alone.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import posixpath
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from leukoflow import CLASS_NAMES, POSITIVE_CLASS, __version__
from leukoflow.core.atomic import atomic_dir
from leukoflow.core.errors import LeukoflowError
from leukoflow.core.runtime import saved_dtype_policy
from leukoflow.deploy.bundle import (
    FORMAT_VERSION,
    MEMBERS_DIR,
    META_FILE,
    MODEL_FILE,
    checked_file,
    file_sha256,
    onnx_file_name,
    onnx_missing,
    read_json,
    read_meta,
)
from leukoflow.deploy.modelcard import CARD_FILE, data_summary, render_card
from leukoflow.evaluate.patients import BUNDLE_KEYS
from leukoflow.evaluate.referral import rule_record
from leukoflow.evaluate.stress import robustness_record
from leukoflow.stain.normalize import load_reference

log = logging.getLogger(__name__)

# what bundle.json's `evaluation` takes from evaluate's metrics.json, for the card
EVALUATION_KEYS = (
    "threshold_rule",
    "n_test",
    "n_val",
    "n_test_subjects",
    "bootstrap",
    "ci",
    "ci_note",
    "risk_coverage",
    "mc_dropout",
)
REFERRAL_SUMMARY_KEYS = ("met", "val_share_referred", "val_value", "test")


def _package_versions():
    """Versions of the packages a bundle's numbers depend on."""
    import keras
    import numpy

    backend = keras.backend.backend()
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    versions = {"leukoflow": __version__, "keras": keras.__version__, "numpy": numpy.__version__}
    versions["backend"] = backend
    if backend_package:
        for dist in (backend_package, f"{backend_package}-cpu"):
            try:
                versions[backend_package] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _evaluation(metrics):
    """What the card reports beside the test metrics: the threshold rule, subset sizes,
    bootstrap, intervals, calibration before and after, the referral band's summary."""
    evaluation = {key: metrics[key] for key in EVALUATION_KEYS if key in metrics}
    calibration = metrics.get("calibration") or {}
    if "before" in calibration:
        evaluation["calibration"] = {k: v for k, v in calibration.items() if k != "temperature"}
    referral = metrics.get("referral") or {}
    if referral:
        evaluation["referral"] = {k: referral[k] for k in REFERRAL_SUMMARY_KEYS if k in referral}
    return evaluation


def _fitted(metrics_path):
    """What a bundle takes from an evaluation: threshold, temperature, referral, test metrics,
    the `evaluation` the card reports and the test-time augmentation `tta` they were fitted
    with (`predict` applies it).

    A metrics file without `calibration` or `referral` (from an older evaluate) gives
    temperature 1 and no referral band.
    """
    metrics = read_json(metrics_path, "metrics file")
    missing = [key for key in ("threshold", "test") if key not in metrics]
    if missing:
        raise LeukoflowError(f"metrics file {metrics_path} has no {', '.join(missing)} key")
    referral = metrics.get("referral")
    return metrics, {
        "threshold": float(metrics["threshold"]),
        "temperature": float((metrics.get("calibration") or {}).get("temperature", 1.0)),
        "referral": rule_record(referral) if referral else None,
        "test_metrics": metrics["test"],
        "evaluation": _evaluation(metrics),
        "tta": "none" if metrics.get("tta") is None else metrics["tta"],
    }


def _patients(patients_path):
    """What a bundle takes from the patients step's patients.json (`BUNDLE_KEYS`)."""
    summary = read_json(patients_path, "patients file")
    missing = [key for key in ("aggregator", "threshold") if key not in summary]
    if missing:
        raise LeukoflowError(
            f"patients file {patients_path} has no {', '.join(missing)} key; write it with "
            "`leukoflow patients`"
        )
    return {key: summary[key] for key in BUNDLE_KEYS if key in summary}


def _common_meta(
    reference_path, config_hash, split_path, data_config, patients_path=None, stress_path=None
):
    """The keys every bundle has beside its models and fitted values (and, with
    `patients_path`, the patient-level call; with `stress_path`, the stress test's rows)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "stain_reference": load_reference(reference_path),
        "config_hash": config_hash,
        "versions": _package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if split_path is not None:
        if not Path(split_path).is_file():
            raise LeukoflowError(f"split table {split_path} does not exist")
        data_config = data_config or {}
        meta["data"] = data_summary(
            split_path, data_config.get("dataset", {}), data_config.get("split", {})
        )
    if patients_path is not None:
        meta["patients"] = _patients(patients_path)
    if stress_path is not None:
        meta["robustness"] = robustness_record(stress_path)
    return meta


def _check_settings(settings, what):
    """LeukoflowError naming `what` when `settings` lacks the architecture or input size."""
    for key in ("architecture", "input_size"):
        if key not in settings:
            raise LeukoflowError(f"{what} has no {key!r} key")


def _export_onnx(source, file, folder):
    """Export the member whose Keras file is `source` to its ONNX file beside `file` in
    `folder`; the result for its `onnx` entry, the file relative to the bundle."""
    from leukoflow.deploy.onnx_model import export_checked
    from leukoflow.models import load_model

    name = onnx_file_name(file)
    result = export_checked(load_model(source), source, folder / name)
    if not result["file"]:
        return {**result, "file": None}
    return {**result, "file": name, "sha256": file_sha256(folder / name)}


def _copy_onnx(bundle_dir, file, folder):
    """Copy the checked ONNX file of the model bundle `bundle_dir` beside `file` in `folder`;
    the result for the member's `onnx` entry (the bundle's own, or why it has none)."""
    (entry,) = read_meta(bundle_dir)["members"]
    missing = onnx_missing(entry)
    if missing:
        return {**(entry.get("onnx") or {}), "file": None, "reason": missing}
    name = onnx_file_name(file)
    shutil.copyfile(Path(bundle_dir) / entry["onnx"]["file"], folder / name)
    return {**entry["onnx"], "file": name, "sha256": file_sha256(folder / name)}


def _is_sibling(bundle_dir, out_dir):
    """True when the model bundle `bundle_dir` lies in the same folder as `out_dir`."""
    bundle_dir, out_dir = Path(bundle_dir).resolve(), Path(out_dir).resolve()
    return bundle_dir.parent == out_dir.parent and bundle_dir != out_dir


def _beside(bundle_dir, file):
    """The path, from a bundle beside `bundle_dir`, of the file `bundle_dir` names as `file`
    (`../ARCH/model.keras`, or `../../main/train/ARCH/model.keras` when that bundle refers to
    its training output)."""
    return posixpath.normpath(f"../{Path(bundle_dir).name}/{file}")


def _relative(source, out_dir):
    """The path of the file `source` from the bundle folder `out_dir`, POSIX form."""
    return Path(os.path.relpath(Path(source).resolve(), Path(out_dir).resolve())).as_posix()


def _reference(bundle_dir):
    """The member entry's `file`, `sha256` and `onnx` that refer to the files of the model
    bundle `bundle_dir` beside the ensemble's (`../ARCH/...`), their checksums checked."""
    bundle_dir = Path(bundle_dir)
    (entry,) = read_meta(bundle_dir)["members"]
    model = checked_file(bundle_dir, entry["file"], entry.get("sha256"))
    found = {"file": _beside(bundle_dir, entry["file"]), "sha256": file_sha256(model)}
    missing = onnx_missing(entry)
    if missing:
        return {**found, "onnx": {**(entry.get("onnx") or {}), "file": None, "reason": missing}}
    onnx = checked_file(bundle_dir, entry["onnx"]["file"], entry["onnx"].get("sha256"))
    onnx_entry = {"file": _beside(bundle_dir, entry["onnx"]["file"]), "sha256": file_sha256(onnx)}
    return {**found, "onnx": {**entry["onnx"], **onnx_entry}}


def _write(out_dir, meta, models, bundles=None, refer=False):
    """Write the bundle: copy every {file in the bundle: source model} into `out_dir` (or,
    with `refer`, record its path relative to `out_dir`), export each to ONNX (or copy the
    ONNX file of the model bundle `bundles` names for that file), then write bundle.json and
    the model card. A member whose model bundle lies beside `out_dir` refers to that bundle's
    files instead (`_reference`).

    Copies or references, not hard links: DVC re-copies a hard-linked output when it records
    it, which gives the training job's model a new time and makes every job after training
    look out of date to Snakemake.
    """
    bundles = bundles or {}
    with atomic_dir(out_dir) as tmp:
        for member in meta["members"]:
            source, file = models[member["file"]], member["file"]
            if file in bundles and _is_sibling(bundles[file], out_dir):
                member.update(_reference(bundles[file]))
                continue
            if refer:
                member["file"] = _relative(source, out_dir)
                member["sha256"] = file_sha256(source)
            else:
                (tmp / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, tmp / file)
                member["sha256"] = file_sha256(tmp / file)
            if file in bundles:
                member["onnx"] = _copy_onnx(bundles[file], file, tmp)
            else:
                member["onnx"] = _export_onnx(source, file, tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(render_card(meta))
    log.info("bundle of %s written to %s", meta["architecture"], out_dir)
    return Path(out_dir) / META_FILE


def write_bundle(
    model_path: str | Path,
    metrics_path: str | Path,
    reference_path: str | Path,
    settings: dict,
    config_hash: str,
    out_dir: str | Path,
    split_path: str | Path | None = None,
    data_config: dict | None = None,
    patients_path: str | Path | None = None,
    stress_path: str | Path | None = None,
    refer: bool = False,
) -> Path:
    """Write the bundle folder of one model, `out_dir` (replaced as a whole, atomically).

    Args:
        model_path: the trained `model.keras` (copied into the bundle, or referred to with
            `refer`; exported to ONNX).
        metrics_path: evaluate's `metrics.json` (`threshold`, `test`, `calibration`,
            `referral`).
        reference_path: the stain reference JSON the stores were built with.
        settings: the architecture's merged settings (with `architecture` and
            `input_size`).
        config_hash: the hash of the configuration the model came from.
        out_dir: the bundle folder to write.
        split_path: the split table; with it, bundle.json records each subset's subjects
            and images (`leukoflow.deploy.modelcard.data_summary`).
        data_config: the configuration's `dataset` and `split` blocks (keys `dataset`,
            `split`), recorded with the split table.
        patients_path: the patients step's patients.json; with it, bundle.json records the
            aggregator, the patient threshold and the cells needed (`patients`).
        stress_path: the stress step's stress.csv; with it, bundle.json records each
            shift's changes (`robustness`, `leukoflow.evaluate.stress.robustness_record`).
        refer: record the model's path relative to `out_dir` and its sha256 instead of
            copying it (the workflow's bundles, which live in the results tree the model
            came from; `leukoflow export` makes a self-contained copy).

    Returns:
        The path of `bundle.json`.

    Raises:
        LeukoflowError: naming the file when the model, the metrics file or the split table
            is missing, the metrics file is not JSON or lacks a key, the reference cannot
            be read, or `settings` lacks a key.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise LeukoflowError(f"model file {model_path} does not exist")
    _, fitted = _fitted(metrics_path)
    _check_settings(settings, "--settings")
    arch, size = settings["architecture"], int(settings["input_size"])
    meta = {
        **_common_meta(
            reference_path, config_hash, split_path, data_config, patients_path, stress_path
        ),
        **fitted,
        "kind": "model",
        "architecture": arch,
        "input_size": size,
        "dtype_policy": saved_dtype_policy(model_path),
        "settings": settings,
        "members": [
            {"architecture": arch, "input_size": size, "file": MODEL_FILE, "settings": settings}
        ],
        "combiner": {"method": "mean", "members": [arch], "weights": [1.0], "intercept": 0.0},
    }
    return _write(out_dir, meta, {MODEL_FILE: model_path}, refer=refer)


def write_ensemble_bundle(
    name: str,
    model_paths: Mapping[str, str | Path],
    member_settings: Mapping[str, dict],
    metrics_path: str | Path,
    reference_path: str | Path,
    config_hash: str,
    out_dir: str | Path,
    split_path: str | Path | None = None,
    data_config: dict | None = None,
    patients_path: str | Path | None = None,
    stress_path: str | Path | None = None,
) -> Path:
    """Write the bundle folder of an ensemble: every member's model and its ONNX copy (or
    references to them), the combiner, bundle.json and the card.

    Args:
        name: the ensemble's name.
        model_paths: {member: its `model.keras`, or its model bundle folder, whose model
            and checked ONNX file are copied instead of exported again, or referred to
            (`../ARCH/model.keras`) when that folder lies beside `out_dir`}.
        member_settings: {member: its merged settings (with `architecture`, `input_size`)}.
        metrics_path: the ensemble job's `metrics.json` (with `ensemble`: the combiner).
        reference_path: the stain reference JSON the stores were built with.
        config_hash: the hash of the ensemble's configuration.
        out_dir: the bundle folder to write.
        split_path: the split table (as `write_bundle`).
        data_config: the configuration's `dataset` and `split` blocks (as `write_bundle`).
        patients_path: the ensemble's patients.json (as `write_bundle`).
        stress_path: the ensemble's stress.csv (as `write_bundle`).

    Returns:
        The path of `bundle.json`.

    Raises:
        LeukoflowError: naming the file when a model, the metrics file or the split table
            is missing, the metrics file has no combiner, or the members do not match it.
    """
    metrics, fitted = _fitted(metrics_path)
    combiner = metrics.get("ensemble")
    if not combiner:
        raise LeukoflowError(f"metrics file {metrics_path} has no `ensemble` (the combiner) key")
    names = list(combiner["members"])
    if set(model_paths) != set(names) or set(member_settings) != set(names):
        raise LeukoflowError(
            f"ensemble {name}: the models and settings given are not those of its members "
            f"{names} ({metrics_path})"
        )
    members, models, bundles = [], {}, {}
    for member in names:
        path = Path(model_paths[member])
        file = f"{MEMBERS_DIR}/{member}.keras"
        if path.is_dir():
            (entry,) = read_meta(path)["members"]
            bundles[file], path = path, path / entry["file"]
        if not path.is_file():
            raise LeukoflowError(f"model file {path} does not exist")
        settings = member_settings[member]
        _check_settings(settings, f"--settings of {member}")
        members.append(
            {
                "architecture": member,
                "input_size": int(settings["input_size"]),
                "file": file,
                "settings": settings,
                "dtype_policy": saved_dtype_policy(path),
            }
        )
        models[file] = path
    meta = {
        **_common_meta(
            reference_path, config_hash, split_path, data_config, patients_path, stress_path
        ),
        **fitted,
        "kind": "ensemble",
        "architecture": name,
        "members": members,
        "combiner": combiner,
    }
    return _write(out_dir, meta, models, bundles)
