"""Subcommands of the evaluate stage: `evaluate`, `ensemble`, `timing`, `saliency`, `ablation`."""

import argparse

from leukoflow.cli import gpu_job_options, json_object


def run_evaluate(args: argparse.Namespace) -> None:
    """Predict val and test, threshold on val, write metrics and predictions."""
    from leukoflow.evaluate.job import run_evaluate as evaluate

    evaluate(
        args.model,
        args.val,
        args.test,
        args.settings,
        args.evaluate,
        args.metrics,
        args.val_predictions,
        args.test_predictions,
        split_id=args.split_id,
    )


def run_ensemble(args: argparse.Namespace) -> None:
    """Combine the members' predictions and evaluate the ensemble like one model."""
    from leukoflow.evaluate.ensemble import run_ensemble as ensemble

    ensemble(
        args.name,
        args.method,
        args.members,
        args.val,
        args.test,
        args.evaluate,
        args.metrics,
        args.val_predictions,
        args.test_predictions,
    )


def _evaluate_option(parser):
    """Add `--evaluate`, the config's evaluate block as a JSON object."""
    parser.add_argument(
        "--evaluate",
        type=json_object,
        default={},
        help='the config `evaluate` block (JSON): {"threshold": "max_f1"|"0.5", '
        '"bootstrap": 2000, "tta": 0, "seed": 0, "referral": {"metric": "sensitivity", '
        '"target": 0.95}}',
    )


def _outputs_options(parser):
    """Add the three files evaluate and ensemble write."""
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--val-predictions", required=True, help="validation predictions CSV")
    parser.add_argument("--test-predictions", required=True, help="test predictions CSV")


def run_timing(args: argparse.Namespace) -> None:
    """Time batch-1 latency and batch throughput of the compiled model."""
    from leukoflow.evaluate.timing import run_timing as timing

    timing(args.model, args.settings, args.warmup, args.calls, args.batch_size, args.out)


def run_saliency(args: argparse.Namespace) -> None:
    """Saliency maps of test cells, their measures and the figure."""
    from leukoflow.evaluate.saliency import run_saliency as saliency

    saliency(args.model, args.test, args.settings, args.saliency, args.measures, args.figure)


def _settings_option(parser):
    """Add `--settings`, the architecture's merged settings as a JSON object."""
    parser.add_argument(
        "--settings",
        type=json_object,
        default={},
        help="merged settings of the architecture (JSON object)",
    )


def run_ablation(args: argparse.Namespace) -> None:
    """Each factor's effect with paired subject-bootstrap CIs, and each combination's metrics."""
    from leukoflow.evaluate.ablation_effects import run_ablation_table

    run_ablation_table(
        args.plan,
        args.metrics,
        args.predictions,
        args.effects,
        args.combinations,
        args.markdown,
        n_resamples=args.bootstrap,
        seed=args.seed,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `evaluate`, `ensemble`, `timing`, `saliency` and `ablation`."""
    p = subparsers.add_parser("evaluate", help="score a trained model on the test subset")
    p.add_argument("--model", required=True, help="model.keras written by `leukoflow train`")
    p.add_argument("--val", required=True, help="validation store (.npy); sets the threshold")
    p.add_argument("--test", required=True, help="test store (.npy)")
    _settings_option(p)
    _evaluate_option(p)
    p.add_argument("--split-id", default="main", help="the run of the model (recorded)")
    _outputs_options(p)
    gpu_job_options(p)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "ensemble",
        help="combine architectures' predictions and evaluate the ensemble",
        description="Members' files are given one per member, in the order of --members.",
    )
    p.add_argument("--name", required=True, help="the ensemble's name (recorded)")
    p.add_argument("--method", choices=["mean", "stacked"], required=True)
    p.add_argument("--members", nargs="+", required=True, help="member architectures")
    p.add_argument("--val", nargs="+", required=True, help="each member's val_predictions.csv")
    p.add_argument("--test", nargs="+", required=True, help="each member's test_predictions.csv")
    _evaluate_option(p)
    _outputs_options(p)
    p.set_defaults(func=run_ensemble)

    p = subparsers.add_parser("timing", help="inference latency (batch 1) and throughput")
    p.add_argument("--model", required=True, help="model.keras")
    _settings_option(p)
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--calls", type=int, default=100, help="timed batch-1 calls (at least 50)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the throughput")
    p.add_argument("--out", required=True, help="JSON file to write")
    gpu_job_options(p)
    p.set_defaults(func=run_timing)

    p = subparsers.add_parser("saliency", help="saliency maps, their measures and figure")
    p.add_argument("--model", required=True, help="model.keras")
    p.add_argument("--test", required=True, help="test store (.npy)")
    _settings_option(p)
    p.add_argument(
        "--saliency",
        type=json_object,
        default={},
        help='the config `saliency` block (JSON): {"methods": [...], "cells": 8, '
        '"smoothgrad_samples": 16, "ig_steps": 32, "seed": 0}',
    )
    p.add_argument("--measures", required=True, help="saliency measures JSON to write")
    p.add_argument("--figure", required=True, help="saliency figure PNG to write")
    gpu_job_options(p)
    p.set_defaults(func=run_saliency)

    p = subparsers.add_parser(
        "ablation",
        help="the ablation table: each factor's effect with paired subject-bootstrap CIs",
        description="Files are given one per ablation job, in the order of --plan's jobs.",
    )
    p.add_argument(
        "--plan",
        required=True,
        type=json_object,
        help='{"jobs": [{architecture, combination, levels, run}, ...], '
        '"reference": {architecture: {factor: level}}} (JSON)',
    )
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate's metrics.json per job")
    p.add_argument(
        "--predictions", nargs="+", required=True, help="evaluate's test_predictions.csv per job"
    )
    p.add_argument("--bootstrap", type=int, default=2000, help="subject resamples of the CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    p.add_argument("--effects", required=True, help="effects CSV to write")
    p.add_argument("--combinations", required=True, help="combinations' metrics CSV to write")
    p.add_argument("--markdown", required=True, help="both tables in Markdown, to write")
    p.set_defaults(func=run_ablation)
