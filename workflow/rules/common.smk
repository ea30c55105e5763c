# Config, paths and input functions; no logic beyond naming files and parameters.
# Functions Snakemake calls with wildcards are named get_*.
import json
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

from leukoflow.runlock import release_stale_locks
from leukoflow.settings import arch_config_hash, check_config, merged_settings

validate(config, workflow.source_path("../../config/schema.yaml"), set_default=True)
check_config(config)

# A run killed outright (SIGKILL, power loss) leaves Snakemake's locks behind; the next run
# removes them when no other run of this workflow is alive here (leukoflow.runlock).
if workflow.is_main_process:
    for stale in release_stale_locks():
        logger.warning(f"removed the stale Snakemake lock {stale} of a run that was killed")

ARCHS = list(config["architectures"])
CV_FOLDS = config["cv"]["folds"]
SPLITS = ["main"] + [f"fold{k}" for k in range(CV_FOLDS)]
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


shell.prefix(f'set -euo pipefail; export PATH="$PATH":{_BIN}; ')


# The Keras backend of the jobs that run a model (each has `params.backend`).
BACKEND = config["backend"]
KERAS = "KERAS_BACKEND={params.backend:q} "
# Threads of a job that may use every core (`--set-threads` and `max-threads` cap it).
ALL_CORES = max(1, workflow.cores)


wildcard_constraints:
    arch="|".join(ARCHS),
    split="main|fold[0-9]+",
    subset="train|val|test",
    size="[0-9]+",


def arch_size(arch):
    """The input size of one architecture (its override, the shared one, or native)."""
    return merged_settings(config, arch)["input_size"]


def store_path(split, size, name):
    """The image store `name` (train, val, test, train_aug) of a split at `size` px."""
    return f"results/{split}/stores/{size}px/{name}.npy"


def get_settings(wildcards):
    """The merged settings of one architecture, as the JSON its jobs get."""
    return json.dumps(merged_settings(config, wildcards.arch), sort_keys=True)


def get_train_store(wildcards):
    """The store the training job reads: augmented and balanced, or plain."""
    balance = merged_settings(config, wildcards.arch)["balance"]
    name = "train_aug" if balance == "augmented_store" else "train"
    return store_path(wildcards.split, arch_size(wildcards.arch), name)


def get_val_store(wildcards):
    """The validation store at the architecture's input size."""
    return store_path(wildcards.split, arch_size(wildcards.arch), "val")


def get_test_store(wildcards):
    """The test store at the architecture's input size."""
    return store_path(wildcards.split, arch_size(wildcards.arch), "test")


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


def dataset_input():
    """The dataset folder, as a rule input (a rule output when it is synthetic)."""
    if config["dataset"]["source"] == "synthetic":
        return rules.synth.output.dataset
    return ancient(DATASET)


def final_outputs():
    """Everything `rule all` asks for."""
    outs = [
        "results/table1.csv",
        "results/table1.md",
        "results/report.html",
        "results/metrics.json",
    ]
    outs += expand("results/models/{arch}", arch=ARCHS)
    return outs


def gpu_resources():
    """One GPU (slurm: --gpus=1), of the configured model when gpu_model is set."""
    model = config["gpu_model"]
    return {"gpu": 1, "gpu_model": model} if model else {"gpu": 1}


def attempt_scaled(base):
    """A resource function growing with the attempt number, so `--retries` helps."""
    return lambda wildcards, attempt: base * attempt
