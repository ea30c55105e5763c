"""The model bundle: what `leukoflow predict` needs to classify new cell images.

A bundle is a folder with two files:

- `model.keras`: the trained Keras model (input float32 `(N, size, size, 3)` in `[0, 255]`,
  output `(N, 1)`, the probability of `all`);
- `bundle.json`: `format_version`, `architecture`, `input_size` (pixels), `class_names`
  (`["hem", "all"]`, index = label), `positive_class` (`"all"`), `stain_reference` (the
  reference fitted on the training subjects, embedded), `threshold` (the decision threshold
  chosen on validation: `all` when probability >= threshold), `test_metrics`, `config_hash`,
  `dtype_policy` (the precision the model was trained in and runs in: float32,
  mixed_bfloat16 or mixed_float16), `settings`, `versions` (leukoflow, keras, numpy, the
  backend's name and its package's version) and `created` (UTC, ISO 8601).

Bundles are self-contained: copying the folder is enough to use the model elsewhere.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
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

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "bundle.json"
REQUIRED_KEYS = ("architecture", "input_size", "class_names", "threshold", "stain_reference")


@dataclass
class Bundle:
    """A loaded bundle: the Keras model and the metadata of `bundle.json`."""

    model: keras.Model
    meta: dict
    path: Path

    @property
    def architecture(self) -> str:
        """The architecture's registry name."""
        return self.meta["architecture"]

    @property
    def input_size(self) -> int:
        """Side of the square model input, pixels."""
        return int(self.meta["input_size"])

    @property
    def threshold(self) -> float:
        """Decision threshold on the probability of `all` (inclusive)."""
        return float(self.meta["threshold"])

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


def write_bundle(
    model_path: str | Path,
    metrics_path: str | Path,
    reference_path: str | Path,
    settings: dict,
    config_hash: str,
    out_dir: str | Path,
) -> Path:
    """Write the bundle folder `out_dir` (replaced as a whole, atomically).

    Args:
        model_path: the trained `model.keras` (copied into the bundle).
        metrics_path: evaluate's `metrics.json` (keys `threshold` and `test`).
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
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise LeukoflowError(f"model file {model_path} does not exist")
    metrics = _read_json(metrics_path, "metrics file")
    missing = [key for key in ("threshold", "test") if key not in metrics]
    if missing:
        raise LeukoflowError(f"metrics file {metrics_path} has no {', '.join(missing)} key")
    reference = load_reference(reference_path)
    for key in ("architecture", "input_size"):
        if key not in settings:
            raise LeukoflowError(f"--settings has no {key!r} key")
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": settings["architecture"],
        "input_size": int(settings["input_size"]),
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "threshold": float(metrics["threshold"]),
        "test_metrics": metrics["test"],
        "stain_reference": reference,
        "config_hash": config_hash,
        "dtype_policy": saved_dtype_policy(model_path),
        "settings": settings,
        "versions": _package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with atomic_dir(out_dir) as tmp:
        # a copy, not a hard link: Snakemake touches a job's outputs, and touching a link
        # to the training job's model would make every job after training look out of date
        shutil.copyfile(model_path, tmp / MODEL_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log.info("bundle of %s written to %s", meta["architecture"], out_dir)
    return out_dir / META_FILE


def read_meta(bundle_dir: str | Path) -> dict:
    """The checked metadata of the bundle in `bundle_dir` (does not load the model).

    Raises:
        LeukoflowError: naming the file when the folder or `bundle.json` is missing, the
            JSON is broken or not an object, its format is newer than this leukoflow
            reads, a required key is missing, the stain reference is not one, or the
            class names differ.
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
    return meta


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Load the bundle in `bundle_dir`: its metadata checked, its model in Keras safe mode.

    Raises:
        LeukoflowError: as `read_meta`, or when the model file is missing or its input
            does not match the bundle's `input_size`.
    """
    from leukoflow.models import load_model

    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    model_path = bundle_dir / MODEL_FILE
    if not model_path.is_file():
        raise LeukoflowError(f"model bundle {bundle_dir} has no model file {model_path}")
    model = load_model(model_path)
    size = meta["input_size"]
    if tuple(model.input_shape[1:]) != (size, size, 3):
        raise LeukoflowError(
            f"{model_path}: model input {model.input_shape[1:]} does not match the bundle's "
            f"input_size {size}"
        )
    return Bundle(model=model, meta=meta, path=bundle_dir)
