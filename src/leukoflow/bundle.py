"""The model bundle: what `leukoflow predict` needs to classify new cell images.

A bundle is a folder with these files:

- `model.keras`: the trained Keras model (input float32 `(N, size, size, 3)` in `[0, 255]`,
  output `(N, 1)`, the probability of `all`);
- `model.onnx`: the same model in ONNX (`leukoflow.onnx_model`), when the export succeeded
  and matches the Keras model;
- `bundle.json`: `format_version`, `architecture`, `input_size` (pixels), `class_names`
  (`["hem", "all"]`, index = label), `positive_class` (`"all"`), `stain_reference` (the
  reference fitted on the training subjects, embedded), `threshold` (the decision threshold
  chosen on validation: `all` when probability >= threshold), `test_metrics`, `evaluation`
  (threshold rule, subset sizes, bootstrap and the test metrics' intervals), `data` (the
  dataset and split configuration and each subset's subjects and images, when the split
  table is given), `onnx` (`leukoflow.onnx_model.export_checked`: the file or the reason
  there is none), `config_hash`, `settings`, `versions` (leukoflow, keras, numpy, the
  backend's name and its package's version) and `created` (UTC, ISO 8601);
- `README.md`: the model card (`leukoflow.modelcard`), made from bundle.json alone.

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
from leukoflow.modelcard import CARD_FILE, data_summary, render_card
from leukoflow.models import load_model
from leukoflow.onnx_model import ONNX_FILE, export_checked
from leukoflow.stain import METHODS, load_reference

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "bundle.json"
REQUIRED_KEYS = ("architecture", "input_size", "class_names", "threshold", "stain_reference")
EVALUATION_KEYS = ("threshold_rule", "n_test", "n_val", "n_test_subjects", "bootstrap", "ci")


@dataclass
class Bundle:
    """A loaded bundle: the Keras model (None when loaded for ONNX) and `bundle.json`."""

    model: keras.Model | None
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

    @property
    def onnx_path(self) -> Path | None:
        """The bundle's ONNX model, or None when it has none (`onnx_missing` says why)."""
        name = (self.meta.get("onnx") or {}).get("file")
        return self.path / name if name else None

    @property
    def onnx_missing(self) -> str:
        """Why the bundle has no ONNX model (for a bundle that has one: '')."""
        onnx = self.meta.get("onnx")
        if onnx is None:
            return "the bundle was made before ONNX export; rebuild it with `leukoflow bundle`"
        return "" if onnx.get("file") else str(onnx.get("reason"))


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
    split_path: str | Path | None = None,
    data_config: dict | None = None,
) -> Path:
    """Write the bundle folder `out_dir` (replaced as a whole, atomically).

    The ONNX export (`leukoflow.onnx_model.export_checked`) never fails the bundle: an
    export that fails or does not match leaves the bundle without `model.onnx` and its
    reason in bundle.json and the model card.

    Args:
        model_path: the trained `model.keras` (copied into the bundle).
        metrics_path: evaluate's `metrics.json` (keys `threshold` and `test`).
        reference_path: the stain reference JSON the stores were built with.
        settings: the architecture's merged settings (with `architecture` and
            `input_size`).
        config_hash: the hash of the configuration the model came from.
        out_dir: the bundle folder to write.
        split_path: the split table; with it, bundle.json records each subset's subjects
            and images (`leukoflow.modelcard.data_summary`).
        data_config: the configuration's `dataset` and `split` blocks (keys `dataset`,
            `split`), recorded with the split table.

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
    if split_path is not None and not Path(split_path).is_file():
        raise LeukoflowError(f"split table {split_path} does not exist")
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": settings["architecture"],
        "input_size": int(settings["input_size"]),
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "threshold": float(metrics["threshold"]),
        "test_metrics": metrics["test"],
        "evaluation": {key: metrics[key] for key in EVALUATION_KEYS if key in metrics},
        "stain_reference": reference,
        "config_hash": config_hash,
        "settings": settings,
        "versions": _package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if split_path is not None:
        data_config = data_config or {}
        meta["data"] = data_summary(
            split_path, data_config.get("dataset", {}), data_config.get("split", {})
        )
    with atomic_dir(out_dir) as tmp:
        # a copy, not a hard link: Snakemake touches a job's outputs, and touching a link
        # to the training job's model would make every job after training look out of date
        shutil.copyfile(model_path, tmp / MODEL_FILE)
        meta["onnx"] = export_checked(load_model(model_path), model_path, tmp / ONNX_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(render_card(meta))
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


def load_bundle(bundle_dir: str | Path, engine: str = "keras") -> Bundle:
    """Load the bundle in `bundle_dir`: its metadata checked, its model in Keras safe mode.

    Args:
        bundle_dir: the bundle folder.
        engine: "keras" loads model.keras; "onnx" loads no model (the caller opens
            model.onnx) but checks that the bundle has one.

    Raises:
        LeukoflowError: as `read_meta`, or when the model file is missing or its input
            does not match the bundle's `input_size`; for "onnx", when the bundle has no
            ONNX model (with the reason) or its file is missing.
    """
    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    if engine == "onnx":
        bundle = Bundle(model=None, meta=meta, path=bundle_dir)
        if bundle.onnx_path is None:
            raise LeukoflowError(f"{bundle_dir} has no ONNX model: {bundle.onnx_missing}")
        if not bundle.onnx_path.is_file():
            raise LeukoflowError(f"model bundle {bundle_dir} has no file {bundle.onnx_path}")
        return bundle
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
