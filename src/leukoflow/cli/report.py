"""Subcommand `report`: Table I, plots, metrics.json and the HTML page, every file named."""

from pathlib import Path

from leukoflow.cli import json_object
from leukoflow.core.errors import ConfigError

# Per-architecture inputs: option, ArchFiles field, help.
PER_ARCH = (
    ("--metrics", "metrics", "evaluate's metrics.json"),
    ("--predictions", "predictions", "evaluate's test_predictions.csv"),
    ("--histories", "history", "training history.csv"),
    ("--timings", "timing", "timing JSON"),
    ("--saliency", "saliency", "saliency.json"),
    ("--saliency-figures", "saliency_png", "saliency.png"),
)
# Optional per-architecture inputs: none, or one per architecture.
OPTIONAL_PER_ARCH = (
    ("--bundles", "bundle", "model bundle folder (bundle.json: the model-card section)"),
    ("--live", "live", "training's DVCLive folder (metrics.json: final training figures)"),
)


def _per_arch(args, option, field):
    """The files given to `option` (stored as `field`), one per architecture.

    ConfigError when their number is not the number of architectures.
    """
    files = getattr(args, field)
    if len(files) != len(args.archs):
        raise ConfigError(
            f"{option}: {len(files)} files for {len(args.archs)} architectures (--archs); "
            "give one per architecture, in the order of --archs"
        )
    return [Path(f) for f in files]


def _fold_metrics(args):
    """{arch: its fold metrics files}; ConfigError unless --folds K gives K per architecture."""
    if args.folds == 1:
        raise ConfigError("--folds: 1 is not cross-validation; give 0 (none) or 2 and more")
    n = args.folds
    if len(args.fold_metrics) != n * len(args.archs):
        raise ConfigError(
            f"--fold-metrics: {len(args.fold_metrics)} files, expected --folds ({n}) times "
            f"{len(args.archs)} architectures, architecture by architecture in the order of "
            "--archs, folds 0 to K-1 within each"
        )
    files = [Path(f) for f in args.fold_metrics]
    return {arch: tuple(files[i * n : (i + 1) * n]) for i, arch in enumerate(args.archs)}


def _ensembles(args, cls):
    """{ensemble: its files}; ConfigError unless every ensemble has one of each (its bundle:
    one each, or none given at all)."""
    bundles = args.ensemble_bundles or [None] * len(args.ensembles)
    for option, files in (
        ("--ensemble-metrics", args.ensemble_metrics),
        ("--ensemble-predictions", args.ensemble_predictions),
        ("--ensemble-bundles", bundles),
    ):
        if len(files) != len(args.ensembles):
            raise ConfigError(
                f"{option}: {len(files)} files for {len(args.ensembles)} ensembles "
                "(--ensembles); give one per ensemble, in the order of --ensembles"
            )
    return {
        name: cls(
            metrics=Path(metrics),
            predictions=Path(predictions),
            bundle=Path(bundle) if bundle else None,
        )
        for name, metrics, predictions, bundle in zip(
            args.ensembles, args.ensemble_metrics, args.ensemble_predictions, bundles, strict=True
        )
    }


def _optional_one(option, files):
    """The one file given to an option that takes zero or one, or None."""
    if len(files) > 1:
        raise ConfigError(f"{option}: give at most one file, got {len(files)}")
    return Path(files[0]) if files else None


def run_report(args):
    """Table I, plots, metrics.json and the HTML report from the files named."""
    from leukoflow.report import (
        ArchFiles,
        EnsembleFiles,
        ReportInputs,
        ReportOutputs,
        build_report,
    )

    columns = {field: _per_arch(args, option, field) for option, field, _ in PER_ARCH}
    columns.update(
        {
            field: _per_arch(args, option, field)
            for option, field, _ in OPTIONAL_PER_ARCH
            if getattr(args, field)
        }
    )
    folds = _fold_metrics(args)
    archs = {
        arch: ArchFiles(
            **{field: files[i] for field, files in columns.items()}, fold_metrics=folds[arch]
        )
        for i, arch in enumerate(args.archs)
    }
    build_report(
        ReportInputs(
            archs=archs,
            folds=args.folds,
            stain_spread=Path(args.stain_spread),
            stain_examples=Path(args.stain_examples),
            augment_examples=Path(args.augment_examples),
            ensembles=_ensembles(args, EnsembleFiles),
            dataset=args.dataset,
            split_table=Path(args.split_table) if args.split_table else None,
            ablation_effects=_optional_one("--ablation-effects", args.ablation_effects),
            ablation_combinations=_optional_one(
                "--ablation-combinations", args.ablation_combinations
            ),
        ),
        ReportOutputs(
            table_csv=Path(args.table_csv),
            table_md=Path(args.table_md),
            metrics_json=Path(args.dvc_metrics),
            plots=Path(args.plots),
            html=Path(args.html),
        ),
    )


def register(subparsers):
    """Add `report`."""
    p = subparsers.add_parser(
        "report",
        help="Table I, plots and the HTML report",
        description="Every input and output is named. Per-architecture options take one file "
        "per architecture, in the order of --archs; per-ensemble options one per ensemble, in "
        "the order of --ensembles. Optional inputs that do not exist (all but the metrics and "
        "predictions) leave a note in the report.",
    )
    p.add_argument("--archs", nargs="+", required=True, help="architectures, in table order")
    for option, field, what in PER_ARCH:
        p.add_argument(
            option, dest=field, nargs="+", required=True, help=f"{what} of each architecture"
        )
    for option, field, what in OPTIONAL_PER_ARCH:
        p.add_argument(
            option, dest=field, nargs="*", default=[], help=f"{what} of each architecture"
        )
    p.add_argument("--folds", type=int, default=0, help="cross-validation folds K (0 = none)")
    p.add_argument(
        "--fold-metrics",
        nargs="*",
        default=[],
        help="evaluate's metrics.json of every fold model: K per architecture, architecture "
        "by architecture in the order of --archs, folds 0 to K-1 within each",
    )
    p.add_argument("--ensembles", nargs="*", default=[], help="ensembles, in table order")
    p.add_argument(
        "--ensemble-metrics", nargs="*", default=[], help="the ensemble job's metrics.json of each"
    )
    p.add_argument(
        "--ensemble-predictions",
        nargs="*",
        default=[],
        help="the ensemble job's test_predictions.csv of each",
    )
    p.add_argument(
        "--ensemble-bundles",
        nargs="*",
        default=[],
        help="the bundle folder of each (bundle.json: the model-card section), or none",
    )
    p.add_argument(
        "--dataset",
        type=json_object,
        default={},
        help="the config's dataset block (JSON): named in the report's header and Table I",
    )
    p.add_argument("--split-table", help="the split CSV (subjects and images per subset)")
    p.add_argument(
        "--ablation-effects", nargs="*", default=[], help="the ablation's effects CSV (or none)"
    )
    p.add_argument(
        "--ablation-combinations",
        nargs="*",
        default=[],
        help="the ablation's combinations CSV (or none)",
    )
    p.add_argument("--stain-spread", required=True, help="the stain step's spread.json")
    p.add_argument("--stain-examples", required=True, help="the stain step's examples PNG")
    p.add_argument("--augment-examples", required=True, help="the augmentation examples PNG")
    p.add_argument("--table-csv", required=True, help="Table I as CSV (written)")
    p.add_argument("--table-md", required=True, help="Table I as Markdown (written)")
    p.add_argument("--dvc-metrics", required=True, help="metrics.json for DVC (written)")
    p.add_argument("--plots", required=True, help="folder of figures and plot data (replaced)")
    p.add_argument("--html", required=True, help="the report page (written)")
    p.set_defaults(func=run_report)
