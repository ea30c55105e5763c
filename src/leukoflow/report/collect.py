"""Reading what the workflow wrote: every input of the report, named one by one.

The caller (the `report` subcommand, and through it the Snakemake rule) names every file;
nothing is found by convention in a results tree. Each architecture's and ensemble's
evaluation is required; everything else is optional, and a missing optional file leaves a
note in the report instead of failing it.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukoflow.core.errors import LeukoflowError


@dataclass(frozen=True)
class ArchFiles:
    """The files the workflow wrote for one architecture.

    Attributes:
        metrics: evaluate's metrics.json (required).
        predictions: evaluate's test_predictions.csv (required).
        history: training history.csv.
        timing: the timing job's JSON.
        saliency: saliency.json (the measures of the maps).
        saliency_png: saliency.png (the figure).
        fold_metrics: evaluate's metrics.json of each cross-validation fold's model, in fold
            order (empty without cross-validation).
        bundle: the model bundle folder (its bundle.json feeds the model-card section).
        live: training's DVCLive folder (its metrics.json: the last epoch's figures).
    """

    metrics: Path
    predictions: Path
    history: Path
    timing: Path
    saliency: Path
    saliency_png: Path
    fold_metrics: tuple[Path, ...] = ()
    bundle: Path | None = None
    live: Path | None = None


@dataclass(frozen=True)
class EnsembleFiles:
    """The files the ensemble job wrote for one ensemble.

    Attributes:
        metrics: its metrics.json (evaluate's contract, with `ensemble`: the combiner).
        predictions: its test_predictions.csv.
        bundle: its bundle folder (its bundle.json feeds the model-card section).
    """

    metrics: Path
    predictions: Path
    bundle: Path | None = None


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
    bundles: dict[str, dict] = field(default_factory=dict)
    live: dict[str, dict] = field(default_factory=dict)
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
        raise LeukoflowError("report: no architectures given (--archs)")
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
        figure = files.saliency_png
        if _existing(figure, notes, f"saliency figure of {arch} not found ({figure})."):
            data.saliency_png[arch] = figure
        history = _existing(
            files.history, notes, f"training history of {arch} not found ({files.history})."
        )
        if history:
            data.history[arch] = pd.read_csv(history)
        _bundle(data, arch, files.bundle)
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
    return data
