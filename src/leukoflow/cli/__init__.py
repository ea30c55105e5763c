"""The `leukoflow` command: one subcommand per workflow step.

Each module of this package defines `register(subparsers)`, which adds its subcommands and
sets `func` to a short function that parses arguments and calls the library. Library
imports happen inside those functions, so `leukoflow --help` stays fast, and so a
subcommand that computes on GPUs (`gpu_job_options`) leases them (`leukoflow.core.gpus`) and
sets up the compile cache before anything imports Keras or its backend.
"""

import argparse
import importlib
import json
import logging
import os
import pkgutil
import sys
from collections.abc import Callable

from leukoflow import __version__
from leukoflow.core import gpus, runtime
from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)


def json_object(text: str) -> dict:
    """An argparse `type`: a JSON object given on the command line.

    Raises:
        argparse.ArgumentTypeError: when `text` is not JSON or not an object (argparse then
            names the option and exits with status 2).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def gpu_job_options(
    parser: argparse.ArgumentParser, devices: Callable[[argparse.Namespace], int] | None = None
) -> None:
    """Make a subcommand a GPU job: `--gpus`, `--gpu-lock-dir` and `--compile-cache`.

    `main` then leases the job's GPUs and points the compile cache at its folder before
    the subcommand runs (before Keras is imported).

    Args:
        parser: the subcommand's parser.
        devices: how many GPUs the job computes on, from its arguments (default: 1).
    """
    options = (
        ("--gpus", gpus.GPUS_ENV, "IDS", "GPUs to lease from, comma-separated (default: "
         "$LEUKOFLOW_GPUS, else every GPU nvidia-smi lists; an inherited "
         "CUDA_VISIBLE_DEVICES is used as is)"),
        ("--gpu-lock-dir", gpus.LOCK_DIR_ENV, "DIR", "lock directory shared by every job that "
         f"leases these GPUs (default: $LEUKOFLOW_GPU_LOCK_DIR, else {gpus.default_lock_dir()})"),
        ("--compile-cache", runtime.COMPILE_CACHE_ENV, "DIR", "folder of the persistent "
         "compilation cache shared by every job (default: $LEUKOFLOW_COMPILE_CACHE; none: no "
         "cache)"),
    )  # fmt: skip
    for option, variable, metavar, text in options:
        parser.add_argument(option, default=os.environ.get(variable), metavar=metavar, help=text)
    parser.set_defaults(gpu_devices=devices or (lambda args: 1))


def start_gpu_job(args: argparse.Namespace) -> runtime.CompileClock:
    """Lease the job's GPUs, set up the compile cache, start its compile clock.

    The lease is kept in `args.gpu_lease` (its locks are held while it lives).

    Raises:
        LeukoflowError: when the job asks for more GPUs than it can lease.
    """
    lease = gpus.lease_gpus(
        args.gpu_devices(args), gpus.parse_gpu_list(args.gpus), args.gpu_lock_dir
    )
    gpus.export(lease)
    args.gpu_lease = lease
    if args.compile_cache:
        log.info("compile cache: %s", runtime.use_compile_cache(args.compile_cache))
    clock = runtime.CompileClock()
    clock.start(os.environ.get("KERAS_BACKEND", "tensorflow"))
    return clock


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of every module in this package."""
    parser = argparse.ArgumentParser(
        prog="leukoflow",
        description="Train and compare CNNs for ALL vs normal cells (C-NMC 2019 layout).",
    )
    parser.add_argument("--version", action="version", version=f"leukoflow {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `leukoflow` console script.

    Args:
        argv: the arguments after the program name; None: `sys.argv[1:]`.

    Returns:
        The exit status: the subcommand's (0 unless it says otherwise), or 2 for a usage
        error or a `LeukoflowError` (its message printed to stderr).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error (status 2)
        return done.code
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        clock = start_gpu_job(args) if hasattr(args, "gpu_devices") else None
        status = args.func(args) or 0
    except LeukoflowError as error:
        print(f"leukoflow {args.command}: error: {error}", file=sys.stderr)
        return 2
    if clock is not None:
        log.info(clock.summary())
    return status


if __name__ == "__main__":
    sys.exit(main())
