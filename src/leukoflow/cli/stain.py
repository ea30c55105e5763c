"""Subcommands `stain-reference` and `stores`: the stain reference, then the image stores."""

import argparse
import logging

from leukoflow.cli import config_option, max_pixels_option

log = logging.getLogger(__name__)


def run_stain_reference(args: argparse.Namespace) -> None:
    """Fit the stain reference on a split's training subjects; write reference, spread, figure."""
    from leukoflow.data.split import read_manifest
    from leukoflow.stain.reference import build_reference

    stain = args.stain
    build_reference(
        read_manifest(args.split),
        args.dataset,
        args.split_id,
        stain["method"],
        images=stain["reference_images"],
        image=stain["reference_image"],
        seed=stain["seed"],
        out=args.out,
        spread_path=args.spread,
        examples_path=args.examples,
        max_pixels=args.max_pixels,
    )


def run_stores(args: argparse.Namespace) -> None:
    """Write the stain-normalised store of one subset of one split at one size."""
    from leukoflow.data.split import read_manifest, subset_rows
    from leukoflow.stain.normalize import load_reference
    from leukoflow.stain.stores import build_store, check_index_path

    check_index_path(args.out, args.index)
    rows = subset_rows(read_manifest(args.split), args.split_id, args.subset)
    build_store(
        rows,
        args.dataset,
        load_reference(args.reference),
        args.size,
        args.out,
        threads=args.threads,
        max_pixels=args.max_pixels,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `stain-reference` and `stores`."""
    p = subparsers.add_parser(
        "stain-reference", help="fit the stain reference on a split's training subjects"
    )
    p.add_argument("split", help="split CSV written by `leukoflow split`")
    p.add_argument("--dataset", required=True, help="dataset root the split's paths start from")
    p.add_argument("--split-id", default="main", help="main or foldK (default main)")
    config_option(
        p, "stain", what=": method, reference_images, reference_image (fit on that one image), seed"
    )
    p.add_argument("--out", required=True, help="reference JSON to write")
    p.add_argument("--spread", help="JSON of the between-subject stain spread before/after")
    p.add_argument("--examples", help="PNG of cells before and after normalisation")
    max_pixels_option(p)
    p.set_defaults(func=run_stain_reference)

    p = subparsers.add_parser("stores", help="write a stain-normalised image store (.npy + .csv)")
    p.add_argument("split", help="split CSV written by `leukoflow split`")
    p.add_argument("--dataset", required=True, help="dataset root the split's paths start from")
    p.add_argument("--reference", required=True, help="reference JSON from stain-reference")
    p.add_argument("--split-id", default="main", help="main or foldK (default main)")
    p.add_argument("--subset", choices=["train", "val", "test"], required=True)
    p.add_argument("--size", type=int, required=True, help="side of the stored images, px")
    p.add_argument("--out", required=True, help="store .npy to write")
    p.add_argument("--index", required=True, help="its index: the .csv of the same stem beside it")
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    max_pixels_option(p)
    p.set_defaults(func=run_stores)
