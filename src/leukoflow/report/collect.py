"""Reading what the workflow wrote: every input of the report, named one by one.

The caller names every file in one manifest (`inputs_from_manifest`: the `report`
subcommand's `--manifest`, which the Snakemake rule builds with `report_manifest()` in
workflow/rules/common.smk); nothing is found by convention in a results tree, and models
are matched to their files by name. Each architecture's and ensemble's evaluation is
required; everything else is optional, and a missing optional file leaves a note in the
report instead of failing it.
"""

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukoflow.core.errors import LeukoflowError, check_names
from leukoflow.report.patients import PatientResults, read_patient_results


@dataclass(frozen=True, kw_only=True)
class ModelFiles:
    """The files the workflow wrote for one model, an architecture or an ensemble.

    A file every model has (a new per-model output of the workflow) is one field here, one
    line in `MODEL_REPORT_FILES` of workflow/rules/common.smk, and its reading in `collect`.

    Attributes:
        metrics: its metrics.json (evaluate's contract; an ensemble's adds `ensemble`: the
            combiner) (required).
        predictions: its test_predictions.csv (required).
        bundle: its bundle folder (its bundle.json feeds the model-card section).
        patients: the patients step's patients.json (the Patients section).
        patient_subjects: its subjects.csv.
        patient_curve: its curve.csv.
    """

    metrics: Path
    predictions: Path
    bundle: Path | None = None
    patients: Path | None = None
    patient_subjects: Path | None = None
    patient_curve: Path | None = None


@dataclass(frozen=True, kw_only=True)
class ArchFiles(ModelFiles):
    """The files the workflow wrote for one architecture: `ModelFiles`, and

    Attributes:
        history: training history.csv.
        timing: the timing job's JSON.
        saliency: saliency.json (the measures of the maps).
        saliency_figure: saliency.png (the figure).
        fold_metrics: evaluate's metrics.json of each cross-validation fold's model, in fold
            order (empty without cross-validation).
        live: training's DVCLive folder (its metrics.json: the last epoch's figures).
    """

    history: Path
    timing: Path
    saliency: Path
    saliency_figure: Path
    fold_metrics: tuple[Path, ...] = ()
    live: Path | None = None


@dataclass(frozen=True, kw_only=True)
class EnsembleFiles(ModelFiles):
    """The files the ensemble job and its bundle wrote for one ensemble (`ModelFiles`)."""


@dataclass(frozen=True)
class ReportInputs:
    """Every input of the report.

    Attributes:
        archs: {architecture: its files}, in table order.
        folds: number of cross-validation folds (0 = none; else at least 2, and every
            architecture has that many `fold_metrics`).
        stain_spread: the stain step's spread.json.
        stain_examples: the stain step's examples.png.
        augment_examples: the augmentation step's examples PNG.
        ensembles: {ensemble: its files}, in table order after the architectures.
        dataset: the config's `dataset` block (source, path, synthetic generator settings).
        split_table: the split CSV (subjects and images per subset), or None.
        ablation_effects: the ablation job's effects CSV, or None without an ablation.
        ablation_combinations: its combinations CSV, or None.
        stress: the stress table CSV of each model (`leukoflow.evaluate.stress`), or none.
    """

    archs: dict[str, ArchFiles]
    folds: int
    stain_spread: Path
    stain_examples: Path
    augment_examples: Path
    ensembles: dict[str, EnsembleFiles] = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    split_table: Path | None = None
    ablation_effects: Path | None = None
    ablation_combinations: Path | None = None
    stress: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ReportOutputs:
    """Every file and folder the report writes.

    Attributes:
        table_csv: Table I as CSV.
        table_md: Table I as Markdown, with its notes.
        metrics_json: the flat test metrics `dvc metrics diff` compares.
        plots: the folder of figures and the CSV data behind them (replaced as a whole).
        html: the self-contained report page.
    """

    table_csv: Path
    table_md: Path
    metrics_json: Path
    plots: Path
    html: Path


MANIFEST_KEYS = (
    "architectures",
    "ensembles",
    "folds",
    "split_table",
    "ablation",
    "stain",
    "augment_examples",
    "dataset",
    "stress",
)


def _files(cls, where, entry):
    """`cls` (ArchFiles or EnsembleFiles) from a manifest entry {field: path or [paths]}.

    Raises:
        LeukoflowError: naming `where` and the fields, for an unknown or a missing field.
    """
    if not isinstance(entry, Mapping):
        raise LeukoflowError(f"{where}: expected {{file kind: path}}, got {entry!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    check_names(where, entry, fields, required)
    values = {
        key: tuple(map(Path, value)) if isinstance(value, list) else Path(value)
        for key, value in entry.items()
        if value is not None
    }
    return cls(**values)


def _section(manifest, key, names=None):
    """`manifest[key]` ({} when absent), a mapping whose keys are among `names` (any: None)."""
    section = manifest.get(key) or {}
    if not isinstance(section, Mapping):
        raise LeukoflowError(f"manifest: `{key}` takes a mapping; got {section!r}")
    if names:
        check_names(f"manifest: {key}", section, names)
    return section


def _models(manifest, key, cls):
    """{model: its `cls` files} of the manifest's `architectures` or `ensembles`."""
    return {
        name: _files(cls, f"manifest: {key}.{name}", entry)
        for name, entry in _section(manifest, key).items()
    }


def inputs_from_manifest(manifest: Mapping) -> ReportInputs:
    """The report's inputs from the run's manifest: every file named, models by name.

    Args:
        manifest: `{"architectures": {arch: {ArchFiles field: path}}, "ensembles": {name:
            {EnsembleFiles field: path}}, "folds": K, "split_table": path, "ablation":
            {"effects": path, "combinations": path}, "stain": {"spread": path, "examples":
            path}, "augment_examples": path, "dataset": the config's dataset block, "stress":
            [each model's stress table]}`, models in table order; `fold_metrics` is a list of
            K paths, folds 0 to K-1. Only `architectures`, `stain` and `augment_examples` are
            required.

    Returns:
        The report's inputs.

    Raises:
        LeukoflowError: naming the key, for an unknown key, a missing required file, a
            fold count of 1, or an architecture without one file per fold.
    """
    check_names("manifest", manifest, MANIFEST_KEYS)
    folds = int(manifest.get("folds") or 0)
    if folds == 1:
        raise LeukoflowError("manifest: folds: 1 is not cross-validation; give 0 or 2 and more")
    archs = _models(manifest, "architectures", ArchFiles)
    for arch, files in archs.items():
        if len(files.fold_metrics) != folds:
            raise LeukoflowError(
                f"manifest: architectures.{arch}.fold_metrics: {len(files.fold_metrics)} files "
                f"for folds: {folds}; give one per fold, folds 0 to K-1"
            )
    ensembles = _models(manifest, "ensembles", EnsembleFiles)
    stain = _section(manifest, "stain", ("spread", "examples"))
    ablation = _section(manifest, "ablation", ("effects", "combinations"))
    required = {
        "stain.spread": stain.get("spread"),
        "stain.examples": stain.get("examples"),
        "augment_examples": manifest.get("augment_examples"),
    }
    missing = [key for key, value in required.items() if not value]
    if missing:
        raise LeukoflowError(f"manifest: missing {', '.join(missing)}")
    optional = {key: Path(value) if value else None for key, value in ablation.items()}
    return ReportInputs(
        archs=archs,
        folds=folds,
        stain_spread=Path(stain["spread"]),
        stain_examples=Path(stain["examples"]),
        augment_examples=Path(manifest["augment_examples"]),
        ensembles=ensembles,
        dataset=dict(manifest.get("dataset") or {}),
        split_table=Path(manifest["split_table"]) if manifest.get("split_table") else None,
        ablation_effects=optional.get("effects"),
        ablation_combinations=optional.get("combinations"),
        stress=tuple(Path(path) for path in manifest.get("stress") or ()),
    )


@dataclass
class ReportData:
    """What the report is made of, read from its inputs.

    Optional inputs that were missing are None (or absent from the dicts) and have a
    sentence in `notes`. `metrics` and `predictions` hold the architectures' and the
    ensembles' alike (`models`: all of them, in table order).
    """

    archs: list[str]
    folds: int
    ensembles: list[str] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    timing: dict[str, dict | None] = field(default_factory=dict)
    history: dict[str, pd.DataFrame] = field(default_factory=dict)
    saliency: dict[str, dict | None] = field(default_factory=dict)
    saliency_png: dict[str, Path] = field(default_factory=dict)
    cv: dict[str, list[dict]] = field(default_factory=dict)
    spread: dict | None = None
    spread_path: Path | None = None
    stain_png: Path | None = None
    augment_png: Path | None = None
    dataset: dict = field(default_factory=dict)
    subsets: pd.DataFrame | None = None
    ablation: pd.DataFrame | None = None
    ablation_combinations: pd.DataFrame | None = None
    stress: pd.DataFrame | None = None
    bundles: dict[str, dict] = field(default_factory=dict)
    live: dict[str, dict] = field(default_factory=dict)
    patients: dict[str, PatientResults] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """The architectures, then the ensembles: the rows of Table I."""
        return [*self.archs, *self.ensembles]


def _read_json(path):
    return json.loads(Path(path).read_text())


def _existing(path, notes, note):
    """`path` if it is a file, else None with `note` added to `notes`."""
    if Path(path).is_file():
        return Path(path)
    notes.append(note)
    return None


def _optional_json(path, notes, what):
    """The JSON at `path`, or None with a note saying what is missing."""
    found = _existing(path, notes, f"{what} not found ({path}); left out of the report.")
    return _read_json(found) if found else None


def _evaluation(data, name, files, command):
    """Read the metrics and test predictions of a model into `data` (both required)."""
    for path in (files.metrics, files.predictions):
        if not Path(path).is_file():
            raise LeukoflowError(f"{path} is missing: run `leukoflow {command}` for {name} first")
    data.metrics[name] = _read_json(files.metrics)
    data.predictions[name] = pd.read_csv(files.predictions, dtype={"subject": str})


def subset_counts(split_table: Path) -> pd.DataFrame:
    """Subjects and images per subset (train, val, test) and class of a split CSV.

    Args:
        split_table: the split CSV (`subset`, `label`, `subject`).

    Returns:
        Columns subset, subjects, images, all_images, hem_images, one row per subset.
    """
    split = pd.read_csv(split_table, dtype={"subject": str, "label": str})
    grouped = split.groupby("subset", sort=False)
    counts = grouped.agg(subjects=("subject", "nunique"), images=("path", "size"))
    for label in ("all", "hem"):
        counts[f"{label}_images"] = grouped["label"].apply(lambda s, lab=label: (s == lab).sum())
    order = [s for s in ("train", "val", "test") if s in counts.index]
    return counts.loc[order].reset_index()


def _bundle(data, name, folder):
    """Read the bundle.json of `name`'s bundle folder (when given) into `data.bundles`."""
    if folder is not None:
        meta = _optional_json(Path(folder) / "bundle.json", data.notes, f"bundle of {name}")
        if meta is not None:
            data.bundles[name] = meta


def _patients(data, name, files):
    """Read `name`'s patients files (when given) into `data.patients`; a note when one is
    missing."""
    paths = (files.patients, files.patient_subjects, files.patient_curve)
    if all(path is None for path in paths):
        return
    missing = [str(path) for path in paths if path is None or not Path(path).is_file()]
    if missing:
        data.notes.append(f"patients files of {name} not found ({', '.join(missing)}).")
        return
    data.patients[name] = read_patient_results(*paths)


def collect(inputs: ReportInputs) -> ReportData:
    """Read every input of the report; notes list the optional inputs that are missing.

    Args:
        inputs: the files to read.

    Returns:
        The report data, architectures in the order of `inputs.archs`, then the ensembles.

    Raises:
        LeukoflowError: an architecture's or ensemble's metrics.json or test_predictions.csv
            is missing (the message names the file), an ensemble holds an architecture the
            report does not have, or no architecture is given.
    """
    if not inputs.archs:
        raise LeukoflowError("report: no architectures given (the manifest's `architectures`)")
    data = ReportData(
        archs=list(inputs.archs),
        folds=inputs.folds,
        ensembles=list(inputs.ensembles),
        dataset=dict(inputs.dataset),
    )
    notes = data.notes
    for arch, files in inputs.archs.items():
        _evaluation(data, arch, files, "evaluate")
        data.timing[arch] = _optional_json(files.timing, notes, f"timing of {arch}")
        data.saliency[arch] = _optional_json(files.saliency, notes, f"saliency of {arch}")
        figure = files.saliency_figure
        if _existing(figure, notes, f"saliency figure of {arch} not found ({figure})."):
            data.saliency_png[arch] = figure
        history = _existing(
            files.history, notes, f"training history of {arch} not found ({files.history})."
        )
        if history:
            data.history[arch] = pd.read_csv(history)
        _bundle(data, arch, files.bundle)
        _patients(data, arch, files)
        if files.live is not None:
            summary = Path(files.live) / "metrics.json"
            live = _optional_json(summary, notes, f"DVCLive summary of {arch}'s training")
            if live is not None:
                data.live[arch] = live
        if inputs.folds >= 2:
            data.cv[arch] = [
                _read_json(path)["test"]
                for k, path in enumerate(files.fold_metrics)
                if _existing(path, notes, f"fold {k} of {arch} not found ({path}).")
            ]
    for name, files in inputs.ensembles.items():
        _evaluation(data, name, files, "ensemble")
        outside = [m for m in data.metrics[name]["ensemble"]["members"] if m not in data.archs]
        if outside:
            raise LeukoflowError(
                f"{files.metrics}: ensemble {name} holds {', '.join(outside)}, not among the "
                f"architectures of the report ({', '.join(data.archs)})"
            )
        _bundle(data, name, files.bundle)
        _patients(data, name, files)
    data.spread = _optional_json(inputs.stain_spread, notes, "stain spread numbers")
    data.spread_path = Path(inputs.stain_spread)
    data.augment_png = _existing(
        inputs.augment_examples,
        notes,
        f"augmentation examples not found ({inputs.augment_examples}); left out of the report.",
    )
    data.stain_png = _existing(
        inputs.stain_examples,
        notes,
        f"stain examples not found ({inputs.stain_examples}); left out of the report.",
    )
    if inputs.split_table is not None and _existing(
        inputs.split_table, notes, f"split table not found ({inputs.split_table})."
    ):
        data.subsets = subset_counts(inputs.split_table)
    for attribute in ("ablation_effects", "ablation_combinations"):
        path = getattr(inputs, attribute)
        if path is not None and _existing(path, notes, f"ablation table not found ({path})."):
            setattr(data, attribute.replace("_effects", ""), pd.read_csv(path))
    stress = [p for p in inputs.stress if _existing(p, notes, f"stress table not found ({p}).")]
    if stress:
        data.stress = pd.concat([pd.read_csv(p) for p in stress], ignore_index=True)
    return data
