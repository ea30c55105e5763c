"""Subcommand `augment`: the class-balanced, deterministic augmented training store."""

import argparse
import dataclasses

from leukoflow.cli import config_option


def run_augment(args: argparse.Namespace) -> None:
    """Write the augmented store (and its index) from the training store; examples PNG."""
    from leukoflow.augment.offline import augment_store
    from leukoflow.augment.transforms import AugmentSpec
    from leukoflow.stain.stores import check_index_path

    check_index_path(args.out, args.index)
    block = args.augment
    knobs = {field.name: block[field.name] for field in dataclasses.fields(AugmentSpec)}
    augment_store(
        args.store,
        args.out,
        AugmentSpec(**knobs),
        seed=block["seed"],
        balance=block["balance"],
        copies_per_image=block["copies_per_image"],
        threads=args.threads,
        examples=args.examples,
        subject_disjoint=args.subject_disjoint,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `augment`."""
    on_off = argparse.BooleanOptionalAction
    p = subparsers.add_parser(
        "augment",
        help="class-balanced, deterministic offline augmentation of the training store",
        description="Write the training images, then augmented copies (rotation about the cell "
        "centre, flips, noise, brightness/contrast and stain jitter on the cell), topping up the "
        "smaller classes; the index records each row's source row and parameters.",
    )
    p.add_argument("store", help="training store train.npy (index beside it: train.csv)")
    p.add_argument("--out", required=True, help="augmented store .npy to write")
    p.add_argument("--index", required=True, help="its index: the .csv of the same stem beside it")
    p.add_argument("--examples", help="PNG: one training cell and eight augmentations of it")
    config_option(p, "augment", what=": seed, balance, copies and the transformations")
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.add_argument(
        "--subject-disjoint",
        action=on_off,
        default=True,
        help="refuse held-out stores that share a subject with the training store (default); "
        "--no-subject-disjoint for the ablation's image-level random split",
    )
    p.set_defaults(func=run_augment)
