"""Subcommands of the data stage: `synth`, `ingest`, `split` and `split-random`."""

import argparse
import logging

log = logging.getLogger(__name__)


def run_ingest(args: argparse.Namespace) -> None:
    """Check every image and write the manifest (and quarantine list)."""
    from leukoflow.data.ingest import ingest, write_ingest

    result = ingest(args.dataset, threads=args.threads)
    write_ingest(result, args.out, args.quarantine, args.on_bad)


def run_split(args: argparse.Namespace) -> None:
    """Split the manifest by subject and write the split table."""
    from leukoflow.core.atomic import atomic_path
    from leukoflow.data.split import make_split, read_manifest, split_report

    split = make_split(
        read_manifest(args.manifest),
        args.mode,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        k=args.k,
        train_folds=args.train_folds,
        val_folds=args.val_folds,
        test_folds=args.test_folds,
    )
    with atomic_path(args.out) as tmp:
        split.to_csv(tmp, index=False)
    log.info(
        "split (%s), subjects and images per subset and class:\n%s",
        args.mode,
        split_report(split).to_string(index=False),
    )


def run_synth(args: argparse.Namespace) -> None:
    """Generate the dataset (the library logs its summary)."""
    from leukoflow.data.synth import generate_dataset

    generate_dataset(
        args.out_dir,
        subjects=args.subjects,
        images_per_subject=args.images_per_subject,
        size=args.size,
        seed=args.seed,
        threads=args.threads,
        prelim_subjects=args.prelim_subjects,
        full_scale=args.full_scale,
    )


def run_split_random(args: argparse.Namespace) -> None:
    """Write the image-level random counterpart of a split table."""
    from leukoflow.core.atomic import atomic_path
    from leukoflow.data.split import random_image_split, read_manifest, split_report

    split = random_image_split(read_manifest(args.split), args.seed)
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
    p.add_argument("--subjects", type=int, default=24, help="training subjects (>= 6)")
    p.add_argument("--images-per-subject", type=int, default=12, help="mean images per subject")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (>= 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.add_argument(
        "--prelim-subjects",
        type=int,
        default=None,
        help="extra subjects for the preliminary test set (default: 15%% of --subjects, "
        "at least 2; 0 for none)",
    )
    p.add_argument(
        "--full-scale",
        action="store_true",
        help="C-NMC 2019 size: 73 subjects, 10,661 training images at 450 px "
        "(overrides --subjects, --images-per-subject, --size)",
    )
    p.set_defaults(func=run_synth)

    p = subparsers.add_parser("ingest", help="check a C-NMC dataset folder, write the manifest")
    p.add_argument("dataset", help="dataset root (C-NMC layout or an {all,hem}/ tree)")
    p.add_argument("--out", required=True, help="manifest CSV to write")
    p.add_argument("--quarantine", help="CSV listing every bad file and why")
    p.add_argument(
        "--on-bad",
        choices=["error", "quarantine"],
        default="error",
        help="error: exit non-zero naming every bad file (default); "
        "quarantine: keep the good ones, list the bad ones",
    )
    p.add_argument("--threads", type=int, default=1, help="worker processes")
    p.set_defaults(func=run_ingest)

    p = subparsers.add_parser("split", help="subject-disjoint train/val/test split")
    p.add_argument("manifest", help="manifest CSV written by `leukoflow ingest`")
    p.add_argument("--out", required=True, help="split CSV to write")
    p.add_argument("--mode", choices=["holdout", "official", "kfold"], default="holdout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--k", type=int, default=0, help="cross-validation folds (0 = none)")
    p.add_argument("--train-folds", nargs="+", default=["0", "1"], help="official mode")
    p.add_argument("--val-folds", nargs="+", default=["2"], help="official mode")
    p.add_argument("--test-folds", nargs="+", default=["prelim_test"], help="official mode")
    p.set_defaults(func=run_split)

    p = subparsers.add_parser(
        "split-random",
        help="the image-level random split of the ablation (not subject-disjoint, on purpose)",
    )
    p.add_argument("split", help="the subject-disjoint split CSV (`leukoflow split`)")
    p.add_argument("--out", required=True, help="split CSV to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    p.set_defaults(func=run_split_random)
