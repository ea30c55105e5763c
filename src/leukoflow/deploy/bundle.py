"""The model bundle: what `leukoflow predict` needs to classify new cell images.

A bundle is a folder: `bundle.json`, the Keras model file(s) it names, their ONNX copies and
the model card. A model bundle (`kind: model`) holds `model.keras` and `model.onnx`; an
ensemble bundle (`kind: ensemble`) holds one `.keras` file per member under `members/`, each
with its `.onnx` beside it. Every model takes float32 `(N, size, size, 3)` in `[0, 255]` and
gives `(N, 1)`, the probability of `all`. `README.md` is the model card
(`leukoflow.deploy.modelcard`), made from bundle.json alone.

`bundle.json` (format 2): `format_version`, `kind`, `architecture` (the architecture's or
the ensemble's name), `members` ([{architecture, input_size, file, settings, dtype_policy,
onnx}]; `onnx`: the member's ONNX file or the reason it has none, see
`leukoflow.deploy.onnx_model.export_checked`), `combiner`
(how the members' probabilities become one: {method, members, weights, intercept}, see
`leukoflow.evaluate.ensemble.combine`; a model bundle's is the mean of its one member),
`temperature` (fitted on validation: the probabilities `predict` writes are calibrated,
sigmoid(logit(p) / T)), `threshold` (chosen on validation, on the calibrated probability:
`all` when >= threshold), `referral` ({lo, hi, metric, target}: a cell whose calibrated
probability lies in [lo, hi) is referred), `class_names` (`["hem", "all"]`, index = label),
`positive_class`, `stain_reference` (fitted on the training subjects, embedded),
`test_metrics`, `evaluation` (what the card reports beside them: the threshold rule, subset
sizes, bootstrap, the test metrics' intervals, ECE and Brier before and after calibration,
the referral band on validation and test), `data` (the dataset and split configuration and
each subset's subjects and images, when the split table is given), `patients` (the
patient-level call of `leukoflow.evaluate.patients`, when the bundle was made with it:
aggregator, patient threshold and its rule, the validation subjects it was fitted on, the
test subjects' scores and the cells needed), `config_hash`,
`versions` and `created` (UTC, ISO 8601). A model bundle
also keeps `input_size`, `settings` and `dtype_policy` (the precision the model was trained
in and runs in: float32, mixed_bfloat16 or mixed_float16) at the top; each member of an
ensemble keeps its own `dtype_policy`. Format 1 bundles (one model, no
temperature, no referral) are still read: temperature 1, no referral band. A bundle without
a member's `onnx` was made before ONNX export: it runs on the Keras engine only.

Each member's Keras file and its ONNX file carry their sha256 (`sha256` in the member and in
its `onnx` entry), checked when the file is loaded. An ensemble bundle written beside its
members' model bundles (the workflow's `results/models/`) refers to their files
(`../ARCH/model.keras`) instead of holding copies: each model is stored once. Such a bundle
needs its siblings; `leukoflow export` (`leukoflow.deploy.export`) writes a self-contained
copy to move elsewhere. A model bundle, and an ensemble bundle of copied members, is
self-contained: copying the folder is enough.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from leukoflow import CLASS_NAMES
from leukoflow.core.errors import LeukoflowError
from leukoflow.stain.normalize import METHODS

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MODEL_FILE = "model.keras"
MEMBERS_DIR = "members"
META_FILE = "bundle.json"
REQUIRED_KEYS = ("architecture", "class_names", "threshold", "stain_reference")
ENGINES = ("keras", "onnx")


@dataclass
class Member:
    """One model of a bundle: its architecture, input size, settings, loaded Keras model
    (None when the bundle was loaded for ONNX Runtime) and ONNX file (None when it has
    none)."""

    architecture: str
    input_size: int
    settings: dict
    model: keras.Model | None
    onnx_file: Path | None = None


@dataclass
class Bundle:
    """A loaded bundle: its members' models, the metadata of `bundle.json` and the engine
    it was loaded for ("keras" or "onnx")."""

    members: list[Member]
    meta: dict
    path: Path
    engine: str = "keras"

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
        """How the members' probabilities are combined (`leukoflow.evaluate.ensemble.combine`)."""
        return self.meta["combiner"]

    @property
    def tta(self) -> str | int:
        """The test-time augmentation evaluate fitted the threshold and temperature with
        (`leukoflow.models.inference.tta_views`; `none` for a bundle that does not record it)."""
        return self.meta.get("tta", "none")

    @property
    def referral(self) -> dict | None:
        """The referral band {lo, hi, metric, target}, or None (a format 1 bundle)."""
        return self.meta.get("referral")

    @property
    def reference(self) -> dict:
        """The stain reference, in the form `leukoflow.stain.normalize.normalize` takes."""
        return self.meta["stain_reference"]


def read_json(path: str | Path, what: str):
    """Parse the JSON file `path`; a clear error names it (as `what`) when it is missing or
    broken."""
    path = Path(path)
    if not path.is_file():
        raise LeukoflowError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LeukoflowError(f"{what} {path} is not valid JSON ({error})") from None


def onnx_file_name(model_file: str) -> str:
    """The ONNX file of a member beside its Keras file (`model.keras` -> `model.onnx`)."""
    return str(PurePosixPath(model_file).with_suffix(".onnx"))


def onnx_missing(entry: dict) -> str:
    """Why a member (an entry of bundle.json's `members`) has no ONNX file; '' when it has one."""
    onnx = entry.get("onnx")
    if onnx is None:
        return "the bundle was made before ONNX export; rebuild it with `leukoflow bundle`"
    return "" if onnx.get("file") else str(onnx.get("reason") or "no reason recorded")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's contents, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checked_file(bundle_dir: str | Path, file: str, sha256: str | None) -> Path:
    """The path of a file a bundle names (relative to the bundle, maybe `../ARCH/...`), after
    checking it exists and, when bundle.json records its sha256, that its contents match.

    Raises:
        LeukoflowError: naming the file when it is missing or its checksum differs.
    """
    path = Path(bundle_dir) / file
    if not path.is_file():
        raise LeukoflowError(f"model bundle {bundle_dir} has no model file {path}")
    if sha256 and file_sha256(path) != sha256:
        raise LeukoflowError(
            f"{path}: its sha256 differs from the one model bundle {bundle_dir} records: the "
            "file changed after the bundle was made; rebuild the bundle (`leukoflow bundle`), "
            "or copy it again from its source (`leukoflow export`)"
        )
    return path


def verify_files(bundle_dir: str | Path, meta: dict) -> None:
    """Check every member's Keras file and ONNX file (when it has one) of a bundle (`meta`:
    `read_meta`), as `checked_file`.

    Raises:
        LeukoflowError: as `checked_file`.
    """
    for entry in meta["members"]:
        checked_file(bundle_dir, entry["file"], entry.get("sha256"))
        if not onnx_missing(entry):
            checked_file(bundle_dir, entry["onnx"]["file"], entry["onnx"].get("sha256"))


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
    meta = read_json(meta_path, "bundle metadata")
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


def load_bundle(bundle_dir: str | Path, engine: str = "keras") -> Bundle:
    """Load the bundle in `bundle_dir` for an engine: its metadata checked, then its models.

    Args:
        bundle_dir: the bundle folder.
        engine: "keras" loads every member's Keras file in Keras safe mode; "onnx" loads no
            Keras model (ONNX Runtime opens the members' ONNX files, `Member.onnx_file`)
            but checks that every member has one.

    Raises:
        LeukoflowError: as `read_meta`; for an engine outside `ENGINES`; for "keras", when
            a model file is missing, differs from its recorded sha256 or its input does not
            match its member's `input_size`; for "onnx", when a member has no ONNX model
            (with the reason) or its file is missing or differs from its sha256.
    """
    if engine not in ENGINES:
        raise LeukoflowError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    members = []
    for entry in meta["members"]:
        name, size = entry["architecture"], int(entry["input_size"])
        onnx = entry.get("onnx") or {}
        onnx_path = bundle_dir / onnx["file"] if onnx.get("file") else None
        if engine == "onnx":
            if onnx_path is None:
                raise LeukoflowError(
                    f"{bundle_dir} has no ONNX model of {name}: {onnx_missing(entry)}"
                )
            checked_file(bundle_dir, onnx["file"], onnx.get("sha256"))
            model = None
        else:
            model_path = checked_file(bundle_dir, entry["file"], entry.get("sha256"))
            model = _load_keras(model_path, size)
        members.append(Member(name, size, entry.get("settings") or {}, model, onnx_path))
    return Bundle(members=members, meta=meta, path=bundle_dir, engine=engine)


def _load_keras(model_path, size):
    """A member's Keras model, checked against its input size."""
    from leukoflow.models import load_model

    model = load_model(model_path)
    if tuple(model.input_shape[1:]) != (size, size, 3):
        raise LeukoflowError(
            f"{model_path}: model input {model.input_shape[1:]} does not match the "
            f"bundle's input_size {size}"
        )
    return model
