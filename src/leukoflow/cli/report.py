"""Subcommand `report`: Table I, plots, metrics.json and the HTML page, every file named."""

from pathlib import Path

from leukoflow.cli import json_object


def run_report(args):
    """Table I, plots, metrics.json and the HTML report from the manifest's files."""
    from leukoflow.report import ReportOutputs, build_report, inputs_from_manifest

    build_report(
        inputs_from_manifest(args.manifest),
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
        description="Every input is named in one manifest (the workflow's is built by "
        "report_manifest() in workflow/rules/common.smk); models are matched to their files "
        "by name, in the manifest's order. Optional inputs that do not exist (all but the "
        "metrics and predictions) leave a note in the report.",
    )
    p.add_argument(
        "--manifest",
        type=json_object,
        required=True,
        metavar="JSON",
        help='the run\'s results (JSON): {"architectures": {arch: {"metrics", "predictions", '
        '"history", "timing", "saliency", "saliency_figure", "bundle", "live", '
        '"fold_metrics": [...]}}, "ensembles": {name: {"metrics", "predictions", "bundle"}}, '
        '"folds": K, "split_table", "ablation": {"effects", "combinations"}, "stain": '
        '{"spread", "examples"}, "augment_examples", "dataset": the config\'s dataset block}',
    )
    p.add_argument("--table-csv", required=True, help="Table I as CSV (written)")
    p.add_argument("--table-md", required=True, help="Table I as Markdown (written)")
    p.add_argument("--dvc-metrics", required=True, help="metrics.json for DVC (written)")
    p.add_argument("--plots", required=True, help="folder of figures and plot data (replaced)")
    p.add_argument("--html", required=True, help="the report page (written)")
    p.set_defaults(func=run_report)
