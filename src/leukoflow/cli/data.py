"""Subcommands of the data stage: `synth`, `ingest`, `split` and `split-random`."""

import argparse
import logging

from leukoflow.cli import config_option

log = logging.getLogger(__name__)


def run_ingest(args: argparse.Namespace) -> None:
    """Check every image and write the manifest (and quarantine list)."""
    from leukoflow.data.ingest import ingest, write_ingest

    result = ingest(args.dataset, threads=args.threads, max_pixels=args.ingest["max_pixels"])
    write_ingest(result, args.out, args.quarantine, args.ingest["on_bad"])


def run_split(args: argparse.Namespace) -> None:
    """Split the manifest by subject and write the split table."""
    from leukoflow.core.atomic import atomic_path
    from leukoflow.data.split import make_split, read_manifest, split_report

    block = args.split
    split = make_split(
        read_manifest(args.manifest),
        block["mode"],
        seed=block["seed"],
        val_fraction=block["val_fraction"],
        test_fraction=block["test_fraction"],
        k=args.cv["folds"],
        train_folds=block["train_folds"],
        val_folds=block["val_folds"],
        test_folds=block["test_folds"],
        min_subjects_per_class=args.evaluate["min_subjects_per_class"],
        dataset=args.dataset,
    )
    with atomic_path(args.out) as tmp:
        split.to_csv(tmp, index=False)
    log.info(
        "split (%s), subjects and images per subset and class:\n%s",
        block["mode"],
        split_report(split).to_string(index=False),
    )


def run_synth(args: argparse.Namespace) -> None:
    """Generate the dataset (the library logs its summary)."""
    from leukoflow.data.synth import generate_dataset

    block = args.synthetic
    generate_dataset(
        args.out_dir,
        subjects=block["subjects"],
        images_per_subject=block["images_per_subject"],
        size=block["size"],
        seed=block["seed"],
        threads=args.threads,
        prelim_subjects=args.prelim_subjects,
        full_scale=args.full_scale,
    )


def run_split_random(args: argparse.Namespace) -> None:
    """Write the image-level random counterpart of a split table."""
    from leukoflow.core.atomic import atomic_path
    from leukoflow.data.split import random_image_split, read_manifest, split_report

    split = random_image_split(read_manifest(args.table), args.split["seed"])
    with atomic_path(args.out) as tmp:
        split.to_csv(tmp, index=False)
    log.info(
        "image-level random split (not subject-disjoint, on purpose), subjects and images "
        "per subset and class:\n%s",
        split_report(split).to_string(index=False),
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `synth`, `ingest`, `split` and `split-random`."""
    p = subparsers.add_parser(
        "synth", help="write a synthetic C-NMC-shaped dataset (single cells on black)"
    )
    p.add_argument("out_dir", help="dataset folder to write (replaced as a whole)")
    config_option(
        p,
        "dataset.synthetic",
        what=": training subjects (>= 6), mean images per subject, image side (>= 32 px), seed",
    )
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.add_argument(
        "--prelim-subjects",
        type=int,
        default=None,
        help="extra subjects for the preliminary test set (default: 15%% of the subjects, "
        "at least 2; 0 for none)",
    )
    p.add_argument(
        "--full-scale",
        action="store_true",
        help="C-NMC 2019 size: 73 subjects, 10,661 training images at 450 px "
        "(overrides the subjects, images per subject and size of --synthetic)",
    )
    p.set_defaults(func=run_synth)

    p = subparsers.add_parser("ingest", help="check a C-NMC dataset folder, write the manifest")
    p.add_argument("dataset", help="dataset root (C-NMC layout or an {all,hem}/ tree)")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--quarantine", help="CSV listing every bad file and why")
    config_option(
        p,
        "ingest",
        what=': on_bad ("error": exit non-zero naming every bad file; "quarantine": keep the '
        "good ones, list the bad ones), max_pixels (a larger image is a bad file)",
    )
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.set_defaults(func=run_ingest)

    p = subparsers.add_parser("split", help="subject-disjoint train/val/test split")
    p.add_argument("manifest", help="manifest CSV written by `leukoflow ingest`")
    p.add_argument("--out", required=True, help="split CSV to write")
    config_option(p, "split", what=": mode, seed, fractions, official folds")
    config_option(p, "cv", what=": the cross-validation folds K")
    config_option(p, "evaluate", what=": a subset below min_subjects_per_class is warned of")
    p.add_argument(
        "--dataset",
        help="the dataset folder of the manifest: official mode warns when its "
        "preliminary-test folder holds fewer images than the labels CSV lists",
    )
    p.set_defaults(func=run_split)

    p = subparsers.add_parser(
        "split-random",
        help="the image-level random split of the ablation (not subject-disjoint, on purpose)",
    )
    p.add_argument(
        "table", metavar="split", help="the subject-disjoint split CSV (`leukoflow split`)"
    )
    p.add_argument("--out", required=True, help="split CSV to write")
    config_option(p, "split", what=": its seed seeds the shuffle")
    p.set_defaults(func=run_split_random)
