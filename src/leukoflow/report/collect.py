"""Reading what the workflow wrote: every input of the report, named one by one.

The caller (the `report` subcommand, and through it the Snakemake rule) names every file;
nothing is found by convention in a results tree. Each architecture's evaluation is
required; everything else is optional, and a missing optional file leaves a note in the
report instead of failing it.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leukoflow.errors import LeukoflowError


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
class ReportInputs:
    """Every input of the report.

    Attributes:
        archs: {architecture: its files}, in table order.
        folds: number of cross-validation folds (0 = none; else at least 2, and every
            architecture has that many `fold_metrics`).
        stain_spread: the stain step's spread.json.
        stain_examples: the stain step's examples.png.
        augment_examples: the augmentation step's examples PNG.
    """

    archs: dict[str, ArchFiles]
    folds: int
    stain_spread: Path
    stain_examples: Path
    augment_examples: Path


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
    sentence in `notes`.
    """

    archs: list[str]
    folds: int
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
    bundles: dict[str, dict] = field(default_factory=dict)
    live: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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


def collect(inputs: ReportInputs) -> ReportData:
    """Read every input of the report; notes list the optional inputs that are missing.

    Args:
        inputs: the files to read.

    Returns:
        The report data, architectures in the order of `inputs.archs`.

    Raises:
        LeukoflowError: an architecture's metrics.json or test_predictions.csv is missing
            (the message names the file), or no architecture is given.
    """
    if not inputs.archs:
        raise LeukoflowError("report: no architectures given (--archs)")
    data = ReportData(archs=list(inputs.archs), folds=inputs.folds)
    notes = data.notes
    for arch, files in inputs.archs.items():
        for path in (files.metrics, files.predictions):
            if not Path(path).is_file():
                raise LeukoflowError(
                    f"{path} is missing: run `leukoflow evaluate` for {arch} first"
                )
        data.metrics[arch] = _read_json(files.metrics)
        data.predictions[arch] = pd.read_csv(files.predictions)
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
        if files.bundle is not None:
            meta = _optional_json(Path(files.bundle) / "bundle.json", notes, f"bundle of {arch}")
            if meta is not None:
                data.bundles[arch] = meta
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
    return data
