"""Subcommands `bundle`, `bundle-ensemble` and `predict`: package a trained model or an
ensemble, classify new cell images."""

import argparse
import logging

from leukoflow.cli import gpu_job_options, json_object, max_pixels_option
from leukoflow.core.errors import LeukoflowError

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
(missing, a dangling link, not an image, truncated, not RGB, more than --max-pixels pixels,
changed while read) gets its reason in `error` and does not stop the run.

Engines (--engine): keras runs the members' Keras files; onnx runs their ONNX files with ONNX
Runtime (no TensorFlow or JAX needed to compute); auto (the default) takes onnx on a CPU when
every member has its ONNX file, keras otherwise. The engine only computes each member's
probability: combining, calibration, threshold and referral are the same for both, and the
two agree within 1e-4.

Patients (--patients subject|folder): the cells are also grouped by the subject id of their
C-NMC name (UID_{subject}_...; names outside it form one group without a call) or by the
folder that holds them, and patients.csv, beside the CSV, gets one row per group: group,
cells, cells_with_errors, referred, cells_used, aggregate, call (all or hem, with the
bundle's aggregator and patient threshold, both fitted on validation subjects), cells_needed
(the cells per subject the model needs for the configured sensitivity and specificity, chosen
on validation subjects) and below_needed (1 when cells_used is below it). Referred cells are
aggregated like the others and counted.

Exit status: 0 when at least one image was classified; 1 when none could be (the CSV is still
written, with the reasons); 2 for a usage error (missing or incompatible bundle, bad option).
"""


def _optional_one(option: str, files: list[str]) -> str | None:
    """The one file of an option that takes zero or one (an empty word is none)."""
    files = [f for f in files if f]
    if len(files) > 1:
        raise LeukoflowError(f"{option}: give at most one file, got {len(files)}")
    return files[0] if files else None


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
        patients_path=args.patients,
        stress_path=_optional_one("--stress", args.stress),
        refer=args.refer_model,
    )


def run_bundle_ensemble(args: argparse.Namespace) -> None:
    """Write an ensemble's bundle folder: every member's model and its ONNX copy,
    bundle.json and the model card."""
    from leukoflow.deploy.bundle_write import write_ensemble_bundle

    write_ensemble_bundle(
        args.name,
        args.models,
        args.settings,
        args.metrics,
        args.reference,
        args.config_hash,
        args.out,
        split_path=args.split,
        data_config=args.data,
        patients_path=args.patients,
        stress_path=_optional_one("--stress", args.stress),
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
        max_pixels=args.max_pixels,
        patients=args.patients,
    )
    if classified == 0:
        log.error("none of the %d input files could be classified; see %s", rows, args.out)
        return 1
    return 0


def run_export(args: argparse.Namespace) -> None:
    """Write a self-contained copy of a bundle (members included, checksums in SHA256SUMS)."""
    from leukoflow.deploy.export import export_bundle

    manifest = export_bundle(args.bundle, args.out)
    log.info("checksums in %s (check elsewhere with `sha256sum -c SHA256SUMS`)", manifest)


def run_serve(args: argparse.Namespace) -> None:
    """Serve the bundles over HTTP until interrupted."""
    from pathlib import Path

    from leukoflow.core.errors import LeukoflowError
    from leukoflow.deploy.serve import MIB, Limits, create_app, serve
    from leukoflow.deploy.serve_models import load_models

    token = None
    if args.token_file:
        path = Path(args.token_file)
        token = path.read_text().strip() if path.is_file() else ""
        if not token:
            raise LeukoflowError(f"--token-file {path}: missing or empty (one line: the token)")
    if args.data_root and not Path(args.data_root).is_dir():
        raise LeukoflowError(f"--data-root {args.data_root} is not a folder")
    limits = Limits(
        max_request_bytes=int(args.max_request_mb * MIB),
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        queue=args.queue,
        batch_size=args.batch_size,
        workers=args.threads,
    )
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s without --token-file: anyone who reaches it may use it", args.host
        )
    models = load_models(args.model, args.engine)
    app = create_app(models, limits, data_root=args.data_root, token=token)
    log.info("serving %s on http://%s:%d/", ", ".join(models), args.host, args.port)
    serve(app, args.host, args.port)


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
        "--patients",
        default=None,
        help="the patients step's patients.json: the bundle records the aggregator, the "
        "patient threshold and the cells needed, for `predict --patients`",
    )
    parser.add_argument(
        "--stress",
        nargs="*",
        default=[],
        help="the stress step's stress.csv (or none): the model card's Robustness section",
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
    p.add_argument(
        "--refer-model",
        action="store_true",
        help="record the model's path (relative to the bundle) and sha256 instead of copying "
        "it: for a bundle in the results tree the model was trained in; `leukoflow export` "
        "writes a self-contained copy",
    )
    _bundle_options(p, "the architecture's merged settings (JSON)")
    p.set_defaults(func=run_bundle)

    p = subparsers.add_parser(
        "bundle-ensemble", help="package an ensemble (its members' models) for `leukoflow predict`"
    )
    p.add_argument("--name", required=True, help="the ensemble's name")
    p.add_argument(
        "--models",
        type=json_object,
        required=True,
        help="{member: its model.keras, or its model bundle folder (its checked ONNX copy is "
        "reused, not exported again)} (JSON); the members are the combiner's in --metrics",
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
        default=None,
        metavar="MODE",
        help="test-time augmentation: none, dihedral (the mean over 8 rotations and mirror "
        "images) or K (K rotations by multiples of 360/K degrees); default: the bundle's, the "
        "one evaluate fitted its threshold and temperature with",
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
    p.add_argument(
        "--patients",
        choices=("subject", "folder"),
        default=None,
        help="also write patients.csv beside --out: the cells grouped by C-NMC subject id or "
        "by folder, each group's call with the bundle's aggregator and patient threshold",
    )
    max_pixels_option(p)
    gpu_job_options(p)
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser(
        "export",
        help="write a self-contained copy of a bundle (an ensemble's members included, "
        "checksums in SHA256SUMS) to move it to another machine",
    )
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="model or ensemble bundle folder")
    p.add_argument("out", metavar="DIR", help="folder to write (replaced as a whole)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser(
        "serve", help="serve bundles over HTTP: an API and a web page (see README, Serving)"
    )
    p.add_argument(
        "--model",
        required=True,
        action="append",
        metavar="BUNDLE_DIR",
        help="a bundle to serve, under its folder's name (repeat for more)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="JSON requests may name image files under this folder, never outside",
    )
    p.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="a file holding a token: every /v1/ request must send `Authorization: Bearer TOKEN`",
    )
    p.add_argument("--max-request-mb", type=float, default=64, help="request body limit (64)")
    p.add_argument("--max-images", type=int, default=256, help="images per request (256)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=4_000_000,
        help="pixels per image (4,000,000); a larger image gets an error row",
    )
    p.add_argument(
        "--queue", type=int, default=64, help="requests waiting for the model before 503 (64)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (32)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="threads preparing images (default: the usable cores)",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "keras", "onnx"),
        default="auto",
        help="as predict's --engine (default auto)",
    )
    p.set_defaults(func=run_serve)
