"""Subcommands `split-random` and `ablation`: the ablation's leaky split, and its table."""

import argparse
import logging

from leukoflow.cli import json_object

log = logging.getLogger(__name__)


def run_split_random(args: argparse.Namespace) -> None:
    """Write the image-level random counterpart of a split table."""
    from leukoflow.atomic import atomic_path
    from leukoflow.split import random_image_split, read_manifest, split_report

    split = random_image_split(read_manifest(args.split), args.seed)
    with atomic_path(args.out) as tmp:
        split.to_csv(tmp, index=False)
    log.info(
        "image-level random split (not subject-disjoint, on purpose), subjects and images "
        "per subset and class:\n%s",
        split_report(split).to_string(index=False),
    )


def run_ablation(args: argparse.Namespace) -> None:
    """Each factor's effect with paired subject-bootstrap CIs, and each combination's metrics."""
    from leukoflow.ablation_effects import run_ablation_table

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
    """Add `split-random` and `ablation`."""
    p = subparsers.add_parser(
        "split-random",
        help="the image-level random split of the ablation (not subject-disjoint, on purpose)",
    )
    p.add_argument("split", help="the subject-disjoint split CSV (`leukoflow split`)")
    p.add_argument("--out", required=True, help="split CSV to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    p.set_defaults(func=run_split_random)

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
