"""Subcommands `train` and `fetch-weights`: train one architecture, download ImageNet weights."""

import argparse

from leukoflow.cli import gpu_job_options, json_object


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` and `fetch-weights` subcommands."""
    train = subparsers.add_parser(
        "train",
        help="train one architecture (resumes from --checkpoint)",
        description="Train one architecture on an image store; writes the model, the history "
        "and the validation predictions, resuming from --checkpoint when it was written with "
        "the same settings and inputs.",
    )
    train.add_argument("--arch", required=True, help="architecture name (see the registry)")
    train.add_argument("--train", required=True, help="training store (.npy with its .csv)")
    train.add_argument("--val", required=True, help="validation store (.npy with its .csv)")
    train.add_argument(
        "--settings", required=True, type=json_object, help="merged training settings, JSON"
    )
    train.add_argument(
        "--weights-file",
        default="",
        help="ImageNet weights from fetch-weights, or a weights file; empty for none",
    )
    train.add_argument("--model", required=True, help="model.keras to write")
    train.add_argument("--history", required=True, help="history CSV to write")
    train.add_argument("--val-predictions", required=True, help="validation predictions CSV")
    train.add_argument(
        "--checkpoint", required=True, help="checkpoint folder (kept while training, resumed)"
    )
    train.add_argument(
        "--live",
        default=None,
        help="DVCLive folder: every epoch's figures (metrics.json, plots/metrics/*.tsv)",
    )
    gpu_job_options(train, devices=lambda args: args.settings.get("devices", 1))
    train.set_defaults(func=run_train)

    fetch = subparsers.add_parser(
        "fetch-weights",
        help="download an architecture's ImageNet weights (needs network)",
        description="Download the ImageNet weights of an architecture's backbone with "
        "Keras and save them to --out (the one step that uses the network).",
    )
    fetch.add_argument("--arch", required=True, help="architecture name")
    fetch.add_argument("--out", required=True, help="weights file to write (.h5)")
    fetch.set_defaults(func=run_fetch_weights)


def run_train(args: argparse.Namespace) -> None:
    """Train one architecture."""
    from leukoflow.train.job import TrainOutputs, train

    outputs = TrainOutputs.of(
        args.model, args.history, args.val_predictions, args.checkpoint, args.live
    )
    train(args.arch, args.train, args.val, args.settings, args.weights_file or None, outputs)


def run_fetch_weights(args: argparse.Namespace) -> None:
    """Download and save the ImageNet weights."""
    from leukoflow.models import fetch_imagenet_weights

    fetch_imagenet_weights(args.arch, args.out)
