"""The `leukoflow` command: one subcommand per workflow step.

Each module of this package defines `register(subparsers)`, which adds its subcommands and
sets `func` to a short function that parses arguments and calls the library. Library
imports happen inside those functions, so `leukoflow --help` stays fast.
"""

import argparse
import importlib
import json
import logging
import pkgutil
import sys

from leukoflow import __version__
from leukoflow.errors import LeukoflowError


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
        return args.func(args) or 0
    except LeukoflowError as error:
        print(f"leukoflow {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
