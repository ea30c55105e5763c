"""Subcommand `bench KIND`: benchmarks that print a table and write `OUT/KIND.json`.

The kinds, their options and how they run are in `leukoflow.bench.kinds`; this module only
turns them into arguments.
"""

from leukoflow.bench.kinds import KINDS, option_name


def run_bench(args):
    """`bench KIND`: one kind with the options given; `bench all`: every kind, defaults."""
    from leukoflow.bench.kinds import run_all, run_kind

    if args.kind == "all":
        run_all(args.out, args.quick, args.skip)
        return
    names = [option_name(flag) for flag, *_ in KINDS[args.kind]["options"]]
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
    k = kinds.add_parser("all", help="every benchmark kind with its defaults, then a summary")
    k.add_argument("--out", default="results/bench", help="folder of the KIND.json files")
    k.add_argument(
        "--quick",
        action="store_true",
        help="smaller runs where a kind has them (prepare: 2,400 images, not the full set)",
    )
    k.add_argument("--skip", nargs="+", default=[], choices=list(KINDS), help="kinds to leave out")
    k.set_defaults(func=run_bench)
