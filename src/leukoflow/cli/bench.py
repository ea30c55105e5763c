"""Subcommand `bench KIND`: benchmarks that print a table and write `OUT/KIND.json`.

Each kind is one row of `KINDS`: the module and function that return a flat dict of
figures, a help line, and its options `(flag, type, default, help)`; the function takes
the options as keyword arguments (flag without dashes, `-` as `_`). `bench all` runs every
kind with its defaults.
"""

import importlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

KINDS = {
    "stain": {
        "target": "leukoflow.bench_stain:run",
        "help": "stain normalisation vs torchstain (speed, agreement) and store throughput",
        "options": [
            ("--images", int, 20, "synthetic cells timed per method"),
            ("--size", int, 450, "side of the synthetic cells, px"),
            ("--shards-images", int, 200, "images written to a temporary store"),
            ("--store-size", int, 224, "side of the stored images, px"),
            ("--threads", int, None, "store worker processes (default: all cores)"),
            ("--repeats", int, 3, "timing passes (the best is kept)"),
        ],
    },
}


def format_table(kind, figures):
    """The figures as a two-column text table."""
    width = max(len(key) for key in figures)
    lines = [f"bench {kind}", "-" * (width + 14)]
    for key, value in figures.items():
        shown = f"{value:12.3f}" if isinstance(value, float) else f"{value!s:>12}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def run_kind(kind, options, out):
    """Run one benchmark kind with `options`, print its table, write `<out>/<kind>.json`."""
    from leukoflow.atomic import write_text

    module, function = KINDS[kind]["target"].split(":")
    figures = getattr(importlib.import_module(module), function)(**options)
    print(format_table(kind, figures), flush=True)
    path = Path(out) / f"{kind}.json"
    write_text(path, json.dumps(figures, indent=2) + "\n")
    log.info("wrote %s", path)


def _option_name(flag):
    return flag[2:].replace("-", "_")


def run_bench(args):
    """`bench KIND`: one kind with the options given; `bench all`: every kind, defaults."""
    if args.kind == "all":
        for kind, spec in KINDS.items():
            defaults = {_option_name(flag): default for flag, _, default, _ in spec["options"]}
            run_kind(kind, defaults, args.out)
        return
    names = [_option_name(flag) for flag, *_ in KINDS[args.kind]["options"]]
    run_kind(args.kind, {name: getattr(args, name) for name in names}, args.out)


def register(subparsers):
    """Add `bench` with one sub-subcommand per kind."""
    p = subparsers.add_parser("bench", help="benchmarks: print a table, write OUT/KIND.json")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, spec in KINDS.items():
        k = kinds.add_parser(kind, help=spec["help"])
        k.add_argument("--out", default="results/bench", help="folder of KIND.json")
        for flag, kind_type, default, text in spec["options"]:
            k.add_argument(flag, type=kind_type, default=default, help=text)
        k.set_defaults(func=run_bench)
    k = kinds.add_parser("all", help="every benchmark kind with its defaults")
    k.add_argument("--out", default="results/bench", help="folder of the KIND.json files")
    k.set_defaults(func=run_bench)
