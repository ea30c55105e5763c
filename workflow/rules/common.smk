# Config, paths and input functions; no logic beyond naming files and parameters.
# Functions Snakemake calls with wildcards are named get_*.
import functools
import json
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from leukoflow.evaluate import ablation
from leukoflow.evaluate.shifts import chosen_strengths
from leukoflow.core.runlock import release_stale_locks
from leukoflow.core.settings import (
    arch_config_hash,
    check_config,
    ensemble_config_hash,
    ensembles,
    merged_settings,
)

validate(config, workflow.source_path("../../config/schema.yaml"), set_default=True)
check_config(config)

# A run killed outright (SIGKILL, power loss) leaves Snakemake's locks behind; the next run
# removes them when no other run of this workflow is alive here (leukoflow.core.runlock).
if workflow.is_main_process:
    for stale in release_stale_locks():
        logger.warning(
            f"removed the stale Snakemake lock {stale} of a run that was killed"
        )

ARCHS = list(config["architectures"])
CV_FOLDS = config["cv"]["folds"]
SPLITS = ["main"] + [f"fold{k}" for k in range(CV_FOLDS)]
ENSEMBLES = ensembles(config)
ABLATION = ablation.plan(config)  # [{architecture, combination, levels, run}]
STRESS = chosen_strengths(
    config["stress"]["strengths"]
)  # [(shift, strength)]; [] = off
DATASET = (
    config["dataset"]["path"]
    if config["dataset"]["source"] == "folder"
    else "results/data/synthetic"
)
ENV = "../../envs/leukoflow.yaml"

# Every job's shell: strict mode, and the `leukoflow` command of the environment Snakemake
# runs from (`.venv/bin/snakemake` without activating it) after any on PATH, so an
# activated environment or `--sdm conda` keeps its own. Braces escaped: the prefix is
# formatted like a shell command.
_BIN = (
    shlex.quote(str(Path(sys.executable).parent)).replace("{", "{{").replace("}", "}}")
)


# The GPU jobs' shared places, from the config (see leukoflow.core.gpus and leukoflow.core.runtime):
# the GPUs to lease and their lock directory, and the compile cache. Exported by the prefix,
# not written into the rules' commands, so changing them reruns nothing.
_GPU_ENV = {
    "LEUKOFLOW_GPUS": ",".join(map(str, config["gpus"] or [])),
    "LEUKOFLOW_GPU_LOCK_DIR": config["gpu_lock_dir"] or "",
    "LEUKOFLOW_COMPILE_CACHE": config["compile_cache"] or "",
}
_EXPORTS = "".join(f"export {k}={shlex.quote(v)}; " for k, v in _GPU_ENV.items() if v)


shell.prefix(
    f'set -euo pipefail; export PATH="$PATH":{_BIN}; '
    + _EXPORTS.replace("{", "{{").replace("}", "}}")
)


# The Keras backend of the jobs that run a model (each has `params.backend`).
BACKEND = config["backend"]


def keras_shell(command):
    """The shell command of a job that runs a model, under the configured Keras backend."""
    return f"KERAS_BACKEND={{params.backend:q}} {command}"


# Threads of a job that may use every core (`--set-threads` and `max-threads` cap it).
ALL_CORES = max(1, workflow.cores)
# GPUs the run uses at once (`--resources gpu=N`; 1 when not given) and the threads of a
# job per GPU it computes on: the cores divided among the GPUs (`gpu_job_threads` sets
# it), so N GPU jobs run side by side while CPU steps keep the rest.
_GPU_RESOURCE = workflow.global_resources.get("gpu")
GPU_SLOTS = max(1, int(getattr(_GPU_RESOURCE, "value", _GPU_RESOURCE) or 1))
GPU_THREADS = config["gpu_job_threads"] or max(1, ALL_CORES // GPU_SLOTS)


# `{split}` names a run (main, fold{k}, ablation/{combination}: models and evaluations) or
# a data variant (main, fold{k}, ablation/data/{split}-{stain}: stain reference and stores);
# leukoflow.evaluate.ablation maps a run to its data variant and settings.
wildcard_constraints:
    arch="|".join(ARCHS),
    ensemble="|".join(ENSEMBLES) or "(?!)",
    split="main|fold[0-9]+|ablation/[a-z_-]+|ablation/data/[a-z]+-[a-z]+",
    subset="train|val|test",
    size="[0-9]+",


def arch_size(arch):
    """The input size of one architecture (its override, the shared one, or native)."""
    return merged_settings(config, arch)["input_size"]


def store_path(split, size, name):
    """The image store `name` (train, val, test, train_aug) of a data variant at `size` px."""
    return f"results/{split}/stores/{size}px/{name}.npy"


@functools.lru_cache(maxsize=None)
def _run_settings(run, arch):
    """leukoflow.evaluate.ablation.run_settings, once per (run, architecture): planning calls it for
    every input of every job. The dict is shared: read it, never change it."""
    return ablation.run_settings(config, run, arch)


def run_settings(wildcards):
    """The settings of an architecture in a run (the bundle's run is main)."""
    return _run_settings(wildcards.get("split", "main"), wildcards.arch)


def get_settings(wildcards):
    """The settings of one architecture in one run, as the JSON its jobs get."""
    return json.dumps(run_settings(wildcards), sort_keys=True)


def run_store(wildcards, name):
    """The store `name` of the run's data variant at the architecture's input size."""
    data = ablation.data_of(config, wildcards.split)
    return store_path(data, run_settings(wildcards)["input_size"], name)


def get_train_store(wildcards):
    """The store the training job reads: augmented and balanced, or plain."""
    balance = run_settings(wildcards)["balance"]
    return run_store(
        wildcards, "train_aug" if balance == "augmented_store" else "train"
    )


def get_val_store(wildcards):
    """The validation store at the architecture's input size."""
    return run_store(wildcards, "val")


def get_test_store(wildcards):
    """The test store at the architecture's input size."""
    return run_store(wildcards, "test")


def get_split_table(wildcards):
    """The split table of a data variant: the main one, or the image-level random one."""
    if ablation.data_levels(config, wildcards.split)[0] == "random":
        return "results/split/random.csv"
    return rules.split.output.split


def get_subject_disjoint(wildcards):
    """The augment option: subject-disjoint stores, but for the image-level random split."""
    if ablation.data_levels(config, wildcards.split)[0] == "random":
        return "--no-subject-disjoint"
    return "--subject-disjoint"


def get_stain_settings(wildcards):
    """The `stain` block of a data variant (JSON): the config's, with the variant's method."""
    method = ablation.data_levels(config, wildcards.split)[1]
    return json.dumps({**config["stain"], "method": method}, sort_keys=True)


def get_weights(wildcards):
    """The weights file a training job reads: fetched ImageNet weights, a user's file, or none."""
    weights = merged_settings(config, wildcards.arch)["weights"]
    if weights == "imagenet":
        return f"{config['weights_cache']}/{wildcards.arch}.imagenet.notop.h5"
    if weights == "none":
        return []
    return weights


def get_config_hash(wildcards):
    """The hash of what one architecture's model depends on (recorded in its bundle)."""
    return arch_config_hash(config, wildcards.arch)


def members(wildcards):
    """The member architectures of an ensemble."""
    return ENSEMBLES[wildcards.ensemble]["members"]


def member_files(pattern):
    """An input function: `pattern` formatted for each member of the ensemble."""
    return lambda wildcards: [pattern.format(arch=arch) for arch in members(wildcards)]


def member_file_map(pattern):
    """A params function: {member: `pattern` formatted for it}, as the JSON the ensemble's
    commands get (members are matched to their files by name, never by position)."""
    return lambda wildcards: json.dumps(
        {arch: pattern.format(arch=arch) for arch in members(wildcards)}, sort_keys=True
    )


def get_ensemble_settings(wildcards):
    """{member: its settings}, as the JSON the ensemble's bundle job gets."""
    return json.dumps(
        {arch: merged_settings(config, arch) for arch in members(wildcards)},
        sort_keys=True,
    )


def get_ensemble_hash(wildcards):
    """The hash of what an ensemble depends on (recorded in its bundle)."""
    return ensemble_config_hash(config, wildcards.ensemble)


def ablation_plan():
    """The ablation's jobs and reference levels, as the JSON its table job gets."""
    reference = {
        arch: ablation.reference_levels(config, arch)
        for arch in ablation.architectures(config)
    }
    return json.dumps({"jobs": ABLATION, "reference": reference}, sort_keys=True)


def ablation_files(name):
    """evaluate's file `name` of every (architecture, combination) of the ablation plan."""
    return [
        f"results/{job['run']}/evaluate/{job['architecture']}/{name}"
        for job in ABLATION
    ]


def dataset_input():
    """The dataset folder, as a rule input (a rule output when it is synthetic)."""
    if config["dataset"]["source"] == "synthetic":
        return rules.synth.output.dataset
    return ancient(DATASET)


# The report's per-model files: kind -> (its path for an architecture, for an ensemble or
# None), read by leukoflow.report.collect (a field of ModelFiles or ArchFiles each). A new
# file of every model is one line here.
REPORT_FILES = {
    "metrics": (
        "results/main/evaluate/{name}/metrics.json",
        "results/main/ensemble/{name}/metrics.json",
    ),
    "predictions": (
        "results/main/evaluate/{name}/test_predictions.csv",
        "results/main/ensemble/{name}/test_predictions.csv",
    ),
    "bundle": ("results/models/{name}", "results/models/{name}"),
    "history": ("results/main/train/{name}/history.csv", None),
    "timing": ("results/main/timing/{name}.json", None),
    "saliency": ("results/main/saliency/{name}/saliency.json", None),
    "saliency_figure": ("results/main/saliency/{name}/saliency.png", None),
    "live": ("results/main/train/{name}/dvclive", None),
    "patients": ("results/main/patients/{name}/patients.json",) * 2,
    "patient_subjects": ("results/main/patients/{name}/subjects.csv",) * 2,
    "patient_curve": ("results/main/patients/{name}/curve.csv",) * 2,
}


def _report_files(name, ensemble):
    """{kind: path} of one model's files in REPORT_FILES."""
    return {
        kind: paths[ensemble].format(name=name)
        for kind, paths in REPORT_FILES.items()
        if paths[ensemble]
    }


def report_manifest():
    """The run's results, every file by name, in table order: the report's one input
    (leukoflow.report.collect.inputs_from_manifest)."""
    size = min(arch_size(arch) for arch in ARCHS)
    return {
        "architectures": {
            arch: {
                **_report_files(arch, ensemble=False),
                "fold_metrics": [
                    f"results/{split}/evaluate/{arch}/metrics.json"
                    for split in SPLITS[1:]
                ],
            }
            for arch in ARCHS
        },
        "ensembles": {name: _report_files(name, ensemble=True) for name in ENSEMBLES},
        "folds": CV_FOLDS,
        "split_table": rules.split.output.split,
        "ablation": (
            {
                "effects": rules.ablation.output.effects,
                "combinations": rules.ablation.output.combinations,
            }
            if ABLATION
            else {}
        ),
        "stain": {
            "spread": "results/main/stain/spread.json",
            "examples": "results/main/stain/examples.png",
        },
        "augment_examples": f"results/main/stores/{size}px/train_aug_examples.png",
        "stress": (
            expand("results/main/stress/{name}/stress.csv", name=[*ARCHS, *ENSEMBLES])
            if STRESS
            else []
        ),
        "dataset": config["dataset"],
    }


def manifest_files(manifest):
    """Every file a manifest names (all but its fold count and dataset block), flat."""

    def walk(node):
        if isinstance(node, dict):
            return [path for value in node.values() for path in walk(value)]
        if isinstance(node, list):
            return [path for value in node for path in walk(value)]
        return [str(node)]

    return walk({k: v for k, v in manifest.items() if k not in ("folds", "dataset")})


def final_outputs():
    """Everything `rule all` asks for."""
    outs = [
        "results/table1.csv",
        "results/table1.md",
        "results/report.html",
        "results/metrics.json",
    ]
    outs += expand("results/models/{name}", name=[*ARCHS, *ENSEMBLES])
    outs += expand(
        "results/main/patients/{name}/patients.json", name=[*ARCHS, *ENSEMBLES]
    )
    if ABLATION:
        outs += ["results/ablation/effects.md"]
    return outs


def get_devices(wildcards):
    """The GPUs one architecture trains on (`training.devices`, data-parallel)."""
    return merged_settings(config, wildcards.arch)["devices"]


def get_train_threads(wildcards):
    """A training job's threads: GPU_THREADS per GPU it trains on."""
    return GPU_THREADS * get_devices(wildcards)


def gpu_resources(devices=1):
    """`devices` GPUs (an int or a function of the wildcards; slurm: --gpus=N), of the
    configured model when gpu_model is set."""
    model = config["gpu_model"]
    return {"gpu": devices, "gpu_model": model} if model else {"gpu": devices}


def attempt_scaled(base):
    """A resource function growing with the attempt number, so `--retries` helps."""
    return lambda wildcards, attempt: base * attempt
