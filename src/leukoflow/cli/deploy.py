"""Subcommands `bundle`, `bundle-ensemble` and `predict`: package a trained model or an
ensemble, classify new cell images."""

import argparse
import logging

from leukoflow.cli import gpu_job_options, json_object

log = logging.getLogger(__name__)

PREDICT_HELP = """\
Classify cell images with a model bundle (results/models/NAME: an architecture or an
ensemble). Each image is stain-normalised with the bundle's reference and resized exactly as
in training, once per input size of the bundle's models. Folders are searched recursively
for BMP, PNG, JPEG and TIFF files (any case); files named explicitly are always read. The CSV
has one row per input file, in order: path, calibrated_probability_all (the probability of
`all` after the bundle's temperature scaling, fitted on validation), label (all or hem: all
when calibrated_probability_all >= threshold), threshold, refer (1 when the cell lies in the
referral band chosen on validation: leave it to a person), error. A file that cannot be used
(not an image, truncated, not RGB) gets its reason in `error` and does not stop the run.

Engines (--engine): keras runs the members' Keras files; onnx runs their ONNX files with ONNX
Runtime (no TensorFlow or JAX needed to compute); auto (the default) takes onnx on a CPU when
every member has its ONNX file, keras otherwise. The engine only computes each member's
probability: combining, calibration, threshold and referral are the same for both, and the
two agree within 1e-4.

Exit status: 0 when at least one image was classified; 1 when none could be (the CSV is still
written, with the reasons); 2 for a usage error (missing or incompatible bundle, bad option).
"""


def run_bundle(args: argparse.Namespace) -> None:
    """Write a bundle folder: the model, its ONNX copy, bundle.json and the model card."""
    from leukoflow.deploy.bundle_write import write_bundle

    write_bundle(
        args.model,
        args.metrics,
        args.reference,
        args.settings,
        args.config_hash,
        args.out,
        split_path=args.split,
        data_config=args.data,
    )


def run_bundle_ensemble(args: argparse.Namespace) -> None:
    """Write an ensemble's bundle folder: every member's model and its ONNX copy,
    bundle.json and the model card."""
    from leukoflow.core.errors import LeukoflowError
    from leukoflow.deploy.bundle_write import write_ensemble_bundle

    if len(args.members) != len(args.models):
        raise LeukoflowError(
            f"--models: {len(args.models)} files for {len(args.members)} members (--members)"
        )
    write_ensemble_bundle(
        args.name,
        dict(zip(args.members, args.models, strict=True)),
        args.settings,
        args.metrics,
        args.reference,
        args.config_hash,
        args.out,
        split_path=args.split,
        data_config=args.data,
    )


def run_predict(args: argparse.Namespace) -> int:
    """Classify images; exit status 1 when not a single image could be classified."""
    from leukoflow.deploy.bundle import load_bundle, read_meta
    from leukoflow.deploy.predict import (
        choose_engine,
        configure_model_threads,
        make_predict_fns,
        predict,
    )

    engine = choose_engine(args.engine, read_meta(args.model))
    if engine == "keras":
        configure_model_threads(args.model_threads)
    bundle = load_bundle(args.model, engine)
    log.info("engine: %s", engine)
    rows, classified = predict(
        bundle,
        args.inputs,
        args.out,
        batch_size=args.batch_size,
        tta=args.tta,
        workers=args.threads,
        progress=not args.quiet,
        predict_fns=make_predict_fns(bundle, threads=args.model_threads),
    )
    if classified == 0:
        log.error("none of the %d input files could be classified; see %s", rows, args.out)
        return 1
    return 0


def _bundle_options(parser, settings_help):
    """Add the options `bundle` and `bundle-ensemble` share: settings, the stain reference,
    the config hash, the training data's description and the bundle folder."""
    parser.add_argument("--settings", required=True, type=json_object, help=settings_help)
    parser.add_argument("--reference", required=True, help="stain reference JSON used in training")
    parser.add_argument("--config-hash", required=True, help="hash of the configuration")
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced as a whole)")
    parser.add_argument(
        "--split",
        default=None,
        help="the split table: the card lists each subset's subjects and images",
    )
    parser.add_argument(
        "--data",
        type=json_object,
        default=None,
        help='the config\'s dataset and split blocks (JSON: {"dataset": ..., "split": ...})',
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `bundle` and `predict`."""
    p = subparsers.add_parser("bundle", help="package a trained model for `leukoflow predict`")
    p.add_argument("--model", required=True, help="trained model.keras")
    p.add_argument("--metrics", required=True, help="evaluate's metrics.json (threshold, test)")
    _bundle_options(p, "the architecture's merged settings (JSON)")
    p.set_defaults(func=run_bundle)

    p = subparsers.add_parser(
        "bundle-ensemble", help="package an ensemble (its members' models) for `leukoflow predict`"
    )
    p.add_argument("--name", required=True, help="the ensemble's name")
    p.add_argument("--members", nargs="+", required=True, help="member architectures, in order")
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="each member's model.keras, or its model bundle folder (its checked ONNX copy "
        "is reused, not exported again)",
    )
    p.add_argument("--metrics", required=True, help="the ensemble job's metrics.json")
    _bundle_options(p, "{member: its merged settings} (JSON)")
    p.set_defaults(func=run_bundle_ensemble)

    p = subparsers.add_parser(
        "predict",
        help="classify new cell images with a model bundle",
        description=PREDICT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
    p.add_argument("--model", required=True, metavar="BUNDLE_DIR", help="model bundle folder")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv", help="CSV to write")
    p.add_argument(
        "--tta",
        type=int,
        default=0,
        metavar="K",
        help="test-time augmentation: mean over K rotations by multiples of 360/K degrees, "
        "as evaluate's `tta` (default 0: off; 1 is off too)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (32)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="threads reading and preparing images (default: the usable cores)",
    )
    p.add_argument(
        "--model-threads",
        type=int,
        default=None,
        metavar="M",
        help="threads of the model's compute (default: the usable cores)",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "keras", "onnx"),
        default="auto",
        help="keras (the Keras files), onnx (the ONNX files in ONNX Runtime) or auto "
        "(default: onnx on a CPU when every model of the bundle has its ONNX file, else keras)",
    )
    gpu_job_options(p)
    p.set_defaults(func=run_predict)
