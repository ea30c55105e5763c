"""The model bundle: what `leukoflow predict` needs to classify new cell images.

A bundle is a folder: `bundle.json` and the Keras model file(s) it names. A model bundle
(`kind: model`) holds `model.keras`; an ensemble bundle (`kind: ensemble`) holds one file per
member under `members/`. Every model takes float32 `(N, size, size, 3)` in `[0, 255]` and
gives `(N, 1)`, the probability of `all`.

`bundle.json` (format 2): `format_version`, `kind`, `architecture` (the architecture's or
the ensemble's name), `members` ([{architecture, input_size, file, settings}]), `combiner`
(how the members' probabilities become one: {method, members, weights, intercept}, see
`leukoflow.ensemble.combine`; a model bundle's is the mean of its one member),
`temperature` (fitted on validation: the probabilities `predict` writes are calibrated,
sigmoid(logit(p) / T)), `threshold` (chosen on validation, on the calibrated probability:
`all` when >= threshold), `referral` ({lo, hi, metric, target}: a cell whose calibrated
probability lies in [lo, hi) is referred), `class_names` (`["hem", "all"]`, index = label),
`positive_class`, `stain_reference` (fitted on the training subjects, embedded),
`test_metrics`, `config_hash`, `versions` and `created` (UTC, ISO 8601). A model bundle
also keeps `input_size`, `settings` and `dtype_policy` (the precision the model was trained
in and runs in: float32, mixed_bfloat16 or mixed_float16) at the top; each member of an
ensemble keeps its own `dtype_policy`. Format 1 bundles (one model, no
temperature, no referral) are still read: temperature 1, no referral band.

Bundles are self-contained: copying the folder is enough to use the model elsewhere.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from leukoflow import CLASS_NAMES, POSITIVE_CLASS, __version__
from leukoflow.atomic import atomic_dir
from leukoflow.errors import LeukoflowError
from leukoflow.runtime import saved_dtype_policy
from leukoflow.stain import METHODS, load_reference

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MODEL_FILE = "model.keras"
MEMBERS_DIR = "members"
META_FILE = "bundle.json"
REQUIRED_KEYS = ("architecture", "class_names", "threshold", "stain_reference")


@dataclass
class Member:
    """One model of a bundle: its architecture, input size, settings and loaded model."""

    architecture: str
    input_size: int
    settings: dict
    model: keras.Model


@dataclass
class Bundle:
    """A loaded bundle: its members' models and the metadata of `bundle.json`."""

    members: list[Member]
    meta: dict
    path: Path

    @property
    def architecture(self) -> str:
        """The architecture's registry name, or the ensemble's name."""
        return self.meta["architecture"]

    @property
    def model(self) -> keras.Model:
        """The model of a one-model bundle.

        Raises:
            LeukoflowError: for an ensemble bundle (use `members`).
        """
        if len(self.members) != 1:
            raise LeukoflowError(f"{self.path} is an ensemble: it has {len(self.members)} models")
        return self.members[0].model

    @property
    def input_size(self) -> int:
        """Side of the square model input of a one-model bundle, pixels.

        Raises:
            LeukoflowError: for an ensemble bundle (use `input_sizes`).
        """
        if len(self.members) != 1:
            raise LeukoflowError(f"{self.path} is an ensemble: see its members' input sizes")
        return self.members[0].input_size

    @property
    def input_sizes(self) -> list[int]:
        """The distinct input sizes of the members, ascending: one preparation each."""
        return sorted({m.input_size for m in self.members})

    @property
    def threshold(self) -> float:
        """Decision threshold on the calibrated probability of `all` (inclusive)."""
        return float(self.meta["threshold"])

    @property
    def temperature(self) -> float:
        """The temperature of the calibration (1: none)."""
        return float(self.meta.get("temperature", 1.0))

    @property
    def combiner(self) -> dict:
        """How the members' probabilities are combined (`leukoflow.ensemble.combine`)."""
        return self.meta["combiner"]

    @property
    def referral(self) -> dict | None:
        """The referral band {lo, hi, metric, target}, or None (a format 1 bundle)."""
        return self.meta.get("referral")

    @property
    def reference(self) -> dict:
        """The stain reference, in the form `leukoflow.stain.normalize` takes."""
        return self.meta["stain_reference"]


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


def _read_json(path, what):
    """Parse the JSON file `path`; a clear error names it when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise LeukoflowError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LeukoflowError(f"{what} {path} is not valid JSON ({error})") from None


def _fitted(metrics_path):
    """What a bundle takes from an evaluation: threshold, temperature, referral, test metrics.

    A metrics file without `calibration` or `referral` (from an older evaluate) gives
    temperature 1 and no referral band.
    """
    metrics = _read_json(metrics_path, "metrics file")
    missing = [key for key in ("threshold", "test") if key not in metrics]
    if missing:
        raise LeukoflowError(f"metrics file {metrics_path} has no {', '.join(missing)} key")
    referral = metrics.get("referral")
    return metrics, {
        "threshold": float(metrics["threshold"]),
        "temperature": float((metrics.get("calibration") or {}).get("temperature", 1.0)),
        "referral": (
            {key: referral[key] for key in ("lo", "hi", "metric", "target")} if referral else None
        ),
        "test_metrics": metrics["test"],
    }


def _common_meta(reference_path, config_hash):
    """The keys every bundle has beside its models and fitted values."""
    return {
        "format_version": FORMAT_VERSION,
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "stain_reference": load_reference(reference_path),
        "config_hash": config_hash,
        "versions": _package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _check_settings(settings, what):
    """LeukoflowError naming `what` when `settings` lacks the architecture or input size."""
    for key in ("architecture", "input_size"):
        if key not in settings:
            raise LeukoflowError(f"{what} has no {key!r} key")


def _write(out_dir, meta, models):
    """Write `bundle.json` and copy every {file in the bundle: source model} into `out_dir`.

    Copies, not hard links: Snakemake touches a job's outputs, and touching a link to the
    training job's model would make every job after training look out of date.
    """
    with atomic_dir(out_dir) as tmp:
        for name, source in models.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp / name)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("bundle of %s written to %s", meta["architecture"], out_dir)
    return Path(out_dir) / META_FILE


def write_bundle(
    model_path: str | Path,
    metrics_path: str | Path,
    reference_path: str | Path,
    settings: dict,
    config_hash: str,
    out_dir: str | Path,
) -> Path:
    """Write the bundle folder of one model, `out_dir` (replaced as a whole, atomically).

    Args:
        model_path: the trained `model.keras` (copied into the bundle).
        metrics_path: evaluate's `metrics.json` (`threshold`, `test`, `calibration`,
            `referral`).
        reference_path: the stain reference JSON the stores were built with.
        settings: the architecture's merged settings (with `architecture` and
            `input_size`).
        config_hash: the hash of the configuration the model came from.
        out_dir: the bundle folder to write.

    Returns:
        The path of `bundle.json`.

    Raises:
        LeukoflowError: naming the file when the model is missing, the metrics file is
            missing, not JSON or lacks a key, the reference cannot be read, or `settings`
            lacks a key.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise LeukoflowError(f"model file {model_path} does not exist")
    _, fitted = _fitted(metrics_path)
    _check_settings(settings, "--settings")
    arch, size = settings["architecture"], int(settings["input_size"])
    meta = {
        **_common_meta(reference_path, config_hash),
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
    return _write(out_dir, meta, {MODEL_FILE: model_path})


def write_ensemble_bundle(
    name: str,
    model_paths: Mapping[str, str | Path],
    member_settings: Mapping[str, dict],
    metrics_path: str | Path,
    reference_path: str | Path,
    config_hash: str,
    out_dir: str | Path,
) -> Path:
    """Write the bundle folder of an ensemble: every member's model, the combiner.

    Args:
        name: the ensemble's name.
        model_paths: {member: its `model.keras`}.
        member_settings: {member: its merged settings (with `architecture`, `input_size`)}.
        metrics_path: the ensemble job's `metrics.json` (with `ensemble`: the combiner).
        reference_path: the stain reference JSON the stores were built with.
        config_hash: the hash of the ensemble's configuration.
        out_dir: the bundle folder to write.

    Returns:
        The path of `bundle.json`.

    Raises:
        LeukoflowError: naming the file when a model or the metrics file is missing, the
            metrics file has no combiner, or the members do not match it.
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
    members, models = [], {}
    for member in names:
        path = model_paths[member]
        if not Path(path).is_file():
            raise LeukoflowError(f"model file {path} does not exist")
        settings = member_settings[member]
        _check_settings(settings, f"--settings of {member}")
        file = f"{MEMBERS_DIR}/{member}.keras"
        members.append(
            {
                "architecture": member,
                "input_size": int(settings["input_size"]),
                "file": file,
                "settings": settings,
                "dtype_policy": saved_dtype_policy(path),
            }
        )
        models[file] = Path(path)
    meta = {
        **_common_meta(reference_path, config_hash),
        **fitted,
        "kind": "ensemble",
        "architecture": name,
        "members": members,
        "combiner": combiner,
    }
    return _write(out_dir, meta, models)


def _members_of(meta):
    """The members list of a bundle's metadata (a format 1 bundle: its one model)."""
    if "members" in meta:
        return meta["members"]
    return [
        {
            "architecture": meta["architecture"],
            "input_size": meta.get("input_size"),
            "file": MODEL_FILE,
            "settings": meta.get("settings", {}),
        }
    ]


def read_meta(bundle_dir: str | Path) -> dict:
    """The checked metadata of the bundle in `bundle_dir` (does not load the models).

    A format 1 bundle's metadata gets its `members` and `combiner` filled in.

    Raises:
        LeukoflowError: naming the file when the folder or `bundle.json` is missing, the
            JSON is broken or not an object, its format is newer than this leukoflow
            reads, a required key is missing, the stain reference is not one, the class
            names differ, or a member lacks its input size.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise LeukoflowError(f"model bundle {bundle_dir} is not a folder")
    meta_path = bundle_dir / META_FILE
    meta = _read_json(meta_path, "bundle metadata")
    if not isinstance(meta, dict):
        raise LeukoflowError(f"{meta_path}: not a bundle description (a JSON object expected)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise LeukoflowError(f"{meta_path}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise LeukoflowError(
            f"{meta_path}: bundle format {version} is newer than this leukoflow supports "
            f"({FORMAT_VERSION}); upgrade leukoflow"
        )
    missing = [key for key in REQUIRED_KEYS if meta.get(key) is None]
    if "stain_reference" in missing:
        raise LeukoflowError(
            f"{meta_path}: the bundle has no stain reference ('stain_reference'); rebuild it "
            "with `leukoflow bundle --reference reference.json`"
        )
    if missing:
        raise LeukoflowError(f"{meta_path}: missing key(s) {', '.join(missing)}")
    reference = meta["stain_reference"]
    method = reference.get("method") if isinstance(reference, dict) else None
    if method not in METHODS:
        raise LeukoflowError(f"{meta_path}: stain_reference is not a stain reference ({method!r})")
    if list(meta["class_names"]) != list(CLASS_NAMES):
        raise LeukoflowError(
            f"{meta_path}: class_names {meta['class_names']} differ from {list(CLASS_NAMES)}"
        )
    meta["members"] = _members_of(meta)
    if any(m.get("input_size") is None for m in meta["members"]):
        raise LeukoflowError(f"{meta_path}: missing key(s) input_size")
    names = [m["architecture"] for m in meta["members"]]
    weights = [1.0 / len(names)] * len(names)
    meta.setdefault(
        "combiner", {"method": "mean", "members": names, "weights": weights, "intercept": 0.0}
    )
    return meta


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Load the bundle in `bundle_dir`: its metadata checked, its models in Keras safe mode.

    Raises:
        LeukoflowError: as `read_meta`, or when a model file is missing or its input does
            not match its member's `input_size`.
    """
    from leukoflow.models import load_model

    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    members = []
    for entry in meta["members"]:
        model_path = bundle_dir / entry["file"]
        if not model_path.is_file():
            raise LeukoflowError(f"model bundle {bundle_dir} has no model file {model_path}")
        model = load_model(model_path)
        size = int(entry["input_size"])
        if tuple(model.input_shape[1:]) != (size, size, 3):
            raise LeukoflowError(
                f"{model_path}: model input {model.input_shape[1:]} does not match the "
                f"bundle's input_size {size}"
            )
        members.append(Member(entry["architecture"], size, entry.get("settings") or {}, model))
    return Bundle(members=members, meta=meta, path=bundle_dir)
