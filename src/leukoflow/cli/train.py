"""`leukoflow train` and `leukoflow fetch-weights`."""

import json


def register(subparsers):
    """Add the `train` and `fetch-weights` subcommands."""
    train = subparsers.add_parser(
        "train",
        help="train one architecture (resumes from OUT_DIR/checkpoint)",
        description="Train one architecture on an image store; writes model.keras, "
        "history.csv and val_predictions.csv into --out-dir, resuming from "
        "--out-dir/checkpoint when it was written with the same settings and inputs.",
    )
    train.add_argument("--arch", required=True, help="architecture name (see the registry)")
    train.add_argument("--train", required=True, help="training store (.npy with its .csv)")
    train.add_argument("--val", required=True, help="validation store (.npy with its .csv)")
    train.add_argument("--settings", required=True, help="merged training settings, JSON")
    train.add_argument(
        "--weights-file",
        default="",
        help="ImageNet weights from fetch-weights, or a weights file; empty for none",
    )
    train.add_argument("--out-dir", required=True, help="output folder")
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


def run_train(args):
    """Parse the settings and train."""
    from leukoflow.errors import ConfigError
    from leukoflow.train import train

    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--settings is not valid JSON: {error}") from error
    if not isinstance(settings, dict):
        raise ConfigError("--settings must be a JSON object")
    train(args.arch, args.train, args.val, settings, args.weights_file or None, args.out_dir)


def run_fetch_weights(args):
    """Download and save the ImageNet weights."""
    from leukoflow.models import fetch_imagenet_weights

    fetch_imagenet_weights(args.arch, args.out)
