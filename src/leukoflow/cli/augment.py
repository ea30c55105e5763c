"""Subcommand `augment`: the class-balanced, deterministic augmented training store."""

import argparse


def run_augment(args: argparse.Namespace) -> None:
    """Write the augmented store (and its index) from the training store; examples PNG."""
    from leukoflow.augment.offline import AugmentSpec, augment_store
    from leukoflow.stain.stores import check_index_path

    check_index_path(args.out, args.index)
    spec = AugmentSpec(
        rotation=args.rotation,
        flip=args.flip,
        noise_std=args.noise_std,
        brightness=args.brightness,
        contrast=args.contrast,
        stain_jitter=args.stain_jitter,
    )
    augment_store(
        args.store,
        args.out,
        spec,
        seed=args.seed,
        balance=args.balance,
        copies_per_image=args.copies_per_image,
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
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (>= 0)")
    p.add_argument(
        "--balance", action=on_off, default=True, help="top up smaller classes to the largest"
    )
    p.add_argument(
        "--copies-per-image", type=int, default=0, help="extra augmented copies of every image"
    )
    p.add_argument("--rotation", action=on_off, default=True, help="rotate by any angle")
    p.add_argument("--flip", action=on_off, default=True, help="random horizontal/vertical flips")
    p.add_argument(
        "--noise-std", type=float, default=4.0, help="Gaussian noise on the cell, grey levels"
    )
    p.add_argument(
        "--brightness", type=float, default=0.05, help="offset up to +-B x 255 on the cell"
    )
    p.add_argument(
        "--contrast", type=float, default=0.05, help="contrast factor in [1-C, 1+C] on the cell"
    )
    p.add_argument(
        "--stain-jitter",
        type=float,
        default=0.0,
        help="HED stain jitter strength s: concentrations x U(1-s, 1+s) + U(-s, s); 0 = off",
    )
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.add_argument(
        "--subject-disjoint",
        action=on_off,
        default=True,
        help="refuse held-out stores that share a subject with the training store (default); "
        "--no-subject-disjoint for the ablation's image-level random split",
    )
    p.set_defaults(func=run_augment)
