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
from leukoflow.core import gpus, runtime, settings
from leukoflow.core.errors import LeukoflowError, check_names

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


def config_option(
    parser: argparse.ArgumentParser, block: str, dest: str | None = None, what: str = ""
) -> None:
    """Add `--BLOCK JSON`: the config block `block` as the rule passes it, the one way a
    step's command takes its configuration.

    Keys left out (the whole option left out: every key) get their defaults from
    config/schema.yaml (`leukoflow.core.settings.config_block`), the one place they are
    written; a value the schema refuses is a usage error naming the key.

    Args:
        parser: the subcommand's parser.
        block: the config key (`augment`, `split`, `timing`, ...; nested: `dataset.synthetic`,
            whose option is `--synthetic`).
        dest: the attribute of the parsed arguments (default: the option's name).
        what: what the command uses the block for, for the help.
    """

    def parse(text: str) -> dict:
        try:
            return settings.config_block(block, json_object(text))
        except LeukoflowError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = f"{block} block"
    name = block.rsplit(".", 1)[-1]
    parser.add_argument(
        f"--{name}",
        dest=dest or name,
        type=parse,
        default="{}",
        metavar="JSON",
        help=f"the config's `{block}` block (JSON object){what}; keys left out take their "
        "defaults from config/schema.yaml",
    )


def max_pixels_option(parser: argparse.ArgumentParser) -> None:
    """Add `--max-pixels N`: the largest image (width x height) a command reads; a larger one
    is a bad image (`leukoflow.data.images`). Left out: `DEFAULT_MAX_PIXELS`, which a test
    holds equal to `ingest.max_pixels` of config/schema.yaml (`predict` and `serve` run from
    an installed package, without the schema)."""
    from leukoflow.data.images import DEFAULT_MAX_PIXELS

    def parse(text: str) -> int:
        try:
            pixels = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if pixels < 64:
            raise argparse.ArgumentTypeError(f"{pixels}: give at least 64 pixels")
        return pixels

    parse.__name__ = "pixel count"
    parser.add_argument(
        "--max-pixels",
        type=parse,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="largest image read, width x height in pixels; a larger one is a bad file "
        "(a decompression bomb) (default: %(default)s, as ingest.max_pixels)",
    )


def files_by_name(option: str, files: dict, names: list[str]) -> list[str]:
    """The files of a {name: file} option, in the order of `names`: ensembles' members are
    matched to their files by name, never by position.

    Raises:
        LeukoflowError: when the option's names are not exactly `names` (it says which are
            missing and which are unknown).
    """
    check_names(option, files, names, names)
    return [files[name] for name in names]


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
