"""Subcommand `synth`: write a synthetic dataset in the C-NMC 2019 layout."""

import argparse


def run_synth(args: argparse.Namespace) -> None:
    """Generate the dataset (the library logs its summary)."""
    from leukoflow.synth import generate_dataset

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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `synth`."""
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
