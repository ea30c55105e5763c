"""Subcommands of the evaluate stage: `evaluate`, `ensemble`, `timing`, `saliency`, `ablation`,
`stress`, `stress-ensemble` and `patients`."""

import argparse

from leukoflow.cli import config_option, files_by_name, gpu_job_options, json_object


def run_evaluate(args: argparse.Namespace) -> None:
    """Predict val and test, threshold on val, write metrics and predictions."""
    from leukoflow.evaluate.job import run_evaluate as evaluate

    evaluate(
        args.model,
        args.val,
        args.test,
        args.settings,
        args.evaluate,
        args.metrics,
        args.val_predictions,
        args.test_predictions,
        split_id=args.split_id,
    )


def run_ensemble(args: argparse.Namespace) -> None:
    """Combine the members' predictions and evaluate the ensemble like one model."""
    from leukoflow.evaluate.ensemble import run_ensemble as ensemble

    ensemble(
        args.name,
        args.method,
        args.members,
        files_by_name("--val", args.val, args.members),
        files_by_name("--test", args.test, args.members),
        args.evaluate,
        args.metrics,
        args.val_predictions,
        args.test_predictions,
    )


def _evaluate_option(parser):
    """Add `--evaluate`, the config's evaluate block as a JSON object."""
    config_option(parser, "evaluate", what=": threshold rule, bootstrap, TTA, seed, referral")


def _outputs_options(parser):
    """Add the three files evaluate and ensemble write."""
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--val-predictions", required=True, help="validation predictions CSV")
    parser.add_argument("--test-predictions", required=True, help="test predictions CSV")


def run_timing(args: argparse.Namespace) -> None:
    """Time batch-1 latency and batch throughput of the compiled model."""
    from leukoflow.evaluate.timing import run_timing as timing

    block = args.timing
    timing(
        args.model,
        args.settings,
        block["warmup"],
        block["calls"],
        block["batch_size"],
        args.out,
        tta=args.tta,
    )


def run_saliency(args: argparse.Namespace) -> None:
    """Saliency maps of test cells, their measures and the figure."""
    from leukoflow.evaluate.saliency import run_saliency as saliency

    saliency(args.model, args.test, args.settings, args.saliency, args.measures, args.figure)


def _settings_option(parser):
    """Add `--settings`, the architecture's merged settings as a JSON object."""
    parser.add_argument(
        "--settings",
        type=json_object,
        default={},
        help="merged settings of the architecture (JSON object)",
    )


def run_ablation(args: argparse.Namespace) -> None:
    """Each factor's effect with paired subject-bootstrap CIs, and each combination's metrics."""
    from leukoflow.evaluate.ablation_effects import run_ablation_table

    run_ablation_table(
        args.plan,
        args.metrics,
        args.predictions,
        args.effects,
        args.combinations,
        args.markdown,
        n_resamples=args.evaluate["bootstrap"],
        seed=args.evaluate["seed"],
        min_subjects_per_class=args.evaluate["min_subjects_per_class"],
    )


def run_stress(args: argparse.Namespace) -> None:
    """The test subset under every acquisition shift: the model's stress table."""
    from leukoflow.evaluate.stress import run_stress as stress

    stress(
        args.model,
        args.test,
        args.metrics,
        args.test_predictions,
        args.reference,
        args.dataset,
        args.settings,
        args.evaluate,
        args.stress,
        args.table,
        args.shifted,
    )


def run_stress_ensemble(args: argparse.Namespace) -> None:
    """The ensemble's stress table from its members' shifted probabilities."""
    from leukoflow.evaluate.stress import run_stress_ensemble as stress

    stress(
        args.name,
        args.members,
        files_by_name("--shifted", args.shifted, args.members),
        args.metrics,
        args.test_predictions,
        args.evaluate,
        args.table,
    )


def _register_stress(subparsers):
    """Add `stress` and `stress-ensemble`."""
    p = subparsers.add_parser(
        "stress", help="the test subset under acquisition shifts: changes with paired CIs"
    )
    p.add_argument("--model", required=True, help="model.keras")
    p.add_argument("--test", required=True, help="test store (.npy)")
    p.add_argument("--metrics", required=True, help="evaluate's metrics.json (fitted values)")
    p.add_argument("--test-predictions", required=True, help="evaluate's test_predictions.csv")
    p.add_argument("--reference", required=True, help="the stain reference of the stores")
    p.add_argument("--dataset", required=True, help="the dataset folder (raw images)")
    _settings_option(p)
    _evaluate_option(p)
    config_option(p, "stress", what=": the strengths of each shift, the seed of their draws")
    p.add_argument("--table", required=True, help="stress table CSV to write")
    p.add_argument("--shifted", required=True, help="shifted probabilities CSV to write")
    gpu_job_options(p)
    p.set_defaults(func=run_stress)

    p = subparsers.add_parser(
        "stress-ensemble",
        help="an ensemble's stress table from its members' shifted probabilities",
        description="Members' files are given by name: --shifted maps each member to its file.",
    )
    p.add_argument("--name", required=True, help="the ensemble's name (recorded)")
    p.add_argument("--members", nargs="+", required=True, help="member architectures, in order")
    p.add_argument(
        "--shifted",
        type=json_object,
        required=True,
        help="{member: its shifted_predictions.csv (the stress job's)} (JSON)",
    )
    p.add_argument("--metrics", required=True, help="the ensemble job's metrics.json")
    p.add_argument("--test-predictions", required=True, help="its test_predictions.csv")
    _evaluate_option(p)
    p.add_argument("--table", required=True, help="stress table CSV to write")
    p.set_defaults(func=run_stress_ensemble)


def run_patients(args: argparse.Namespace) -> None:
    """Cells aggregated by subject: the subject-level call and the cells-needed curve."""
    from leukoflow.evaluate.patients import run_patients as patients

    patients(
        args.name,
        args.val,
        args.test,
        args.patients,
        args.evaluate,
        args.subjects,
        args.curve,
        args.summary,
    )


def _register_patients(subparsers):
    """Add `patients`."""
    p = subparsers.add_parser(
        "patients",
        help="the subject-level call of a model or ensemble and the cells it needs",
    )
    p.add_argument("--name", required=True, help="the model's or ensemble's name (recorded)")
    p.add_argument("--val", required=True, help="its val_predictions.csv (fits the call)")
    p.add_argument("--test", required=True, help="its test_predictions.csv (scored)")
    config_option(p, "patients", what=": aggregator, cells per subject, draws, seed, target")
    _evaluate_option(p)
    p.add_argument("--subjects", required=True, help="subjects CSV to write")
    p.add_argument("--curve", required=True, help="cells-needed curve CSV to write")
    p.add_argument("--summary", required=True, help="patients.json to write")
    p.set_defaults(func=run_patients)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `evaluate`, `ensemble`, `timing`, `saliency`, `ablation`, `stress`,
    `stress-ensemble` and `patients`."""
    p = subparsers.add_parser("evaluate", help="score a trained model on the test subset")
    p.add_argument("--model", required=True, help="model.keras written by `leukoflow train`")
    p.add_argument("--val", required=True, help="validation store (.npy); sets the threshold")
    p.add_argument("--test", required=True, help="test store (.npy)")
    _settings_option(p)
    _evaluate_option(p)
    p.add_argument("--split-id", default="main", help="the run of the model (recorded)")
    _outputs_options(p)
    gpu_job_options(p)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "ensemble",
        help="combine architectures' predictions and evaluate the ensemble",
        description="Members' files are given by name: --val and --test map each member to "
        "its file.",
    )
    p.add_argument("--name", required=True, help="the ensemble's name (recorded)")
    p.add_argument("--method", choices=["mean", "stacked"], required=True)
    p.add_argument("--members", nargs="+", required=True, help="member architectures, in order")
    p.add_argument(
        "--val",
        type=json_object,
        required=True,
        help="{member: its val_predictions.csv} (JSON)",
    )
    p.add_argument(
        "--test",
        type=json_object,
        required=True,
        help="{member: its test_predictions.csv} (JSON)",
    )
    _evaluate_option(p)
    _outputs_options(p)
    p.set_defaults(func=run_ensemble)

    p = subparsers.add_parser("timing", help="inference latency (batch 1) and throughput")
    p.add_argument("--model", required=True, help="model.keras")
    _settings_option(p)
    config_option(p, "timing", what=": untimed warm-up calls, timed batch-1 calls, batch size")
    p.add_argument(
        "--tta",
        default="none",
        help="evaluate's test-time augmentation, timed as well: none, dihedral or K",
    )
    p.add_argument("--out", required=True, help="JSON file to write")
    gpu_job_options(p)
    p.set_defaults(func=run_timing)

    p = subparsers.add_parser("saliency", help="saliency maps, their measures and figure")
    p.add_argument("--model", required=True, help="model.keras")
    p.add_argument("--test", required=True, help="test store (.npy)")
    _settings_option(p)
    config_option(p, "saliency", what=": methods, cells, SmoothGrad samples, IG steps, seed")
    p.add_argument("--measures", required=True, help="saliency measures JSON to write")
    p.add_argument("--figure", required=True, help="saliency figure PNG to write")
    gpu_job_options(p)
    p.set_defaults(func=run_saliency)

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
    _evaluate_option(p)  # its bootstrap and seed: the CIs' subject resamples
    p.add_argument("--effects", required=True, help="effects CSV to write")
    p.add_argument("--combinations", required=True, help="combinations' metrics CSV to write")
    p.add_argument("--markdown", required=True, help="both tables in Markdown, to write")
    p.set_defaults(func=run_ablation)
    _register_stress(subparsers)
    _register_patients(subparsers)
