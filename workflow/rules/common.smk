# Config access and input functions; no logic beyond naming files and parameters.
import json

from snakemake.utils import validate

from leukoflow.settings import arch_config_hash, check_config, merged_settings

validate(config, workflow.source_path("../../config/schema.yaml"), set_default=True)
check_config(config)

ARCHS = list(config["architectures"])
CV_FOLDS = config["cv"]["folds"]
SPLITS = ["main"] + [f"fold{k}" for k in range(CV_FOLDS)]
DATASET = (
    config["dataset"]["path"]
    if config["dataset"]["source"] == "folder"
    else "results/data/synthetic"
)


wildcard_constraints:
    arch="|".join(ARCHS),
    split="main|fold[0-9]+",
    subset="train|val|test",
    size="[0-9]+",


def settings(wildcards):
    """The merged settings of one architecture, as the JSON its jobs get."""
    return json.dumps(merged_settings(config, wildcards.arch), sort_keys=True)


def arch_size(arch):
    """The input size of one architecture (its override, the shared one, or native)."""
    return merged_settings(config, arch)["input_size"]


def train_store(wildcards):
    """The store the training job reads: augmented and balanced, or plain."""
    balance = merged_settings(config, wildcards.arch)["balance"]
    name = "train_aug" if balance == "augmented_store" else "train"
    return f"results/{wildcards.split}/stores/{arch_size(wildcards.arch)}px/{name}.npy"


def store(subset):
    """Input function: the store of `subset` at the architecture's input size."""

    def path(wildcards):
        return f"results/{wildcards.split}/stores/{arch_size(wildcards.arch)}px/{subset}.npy"

    return path


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
    outs += expand("results/models/{arch}/bundle.json", arch=ARCHS)
    return outs


def weights_input(wildcards):
    """The weights file a training job reads: fetched ImageNet weights, a user's file, or none."""
    weights = merged_settings(config, wildcards.arch)["weights"]
    if weights == "imagenet":
        return f"{config['weights_cache']}/{wildcards.arch}.imagenet.notop.h5"
    if weights == "none":
        return []
    return weights


def gpu_resources():
    """One GPU (slurm: --gpus=1), of the configured model when gpu_model is set."""
    model = config["gpu_model"]
    return {"gpu": 1, "gpu_model": model} if model else {"gpu": 1}


def attempt_scaled(base):
    """A resource function growing with the attempt number, so `--retries` helps."""
    return lambda wildcards, attempt: base * attempt


ENV = "../../envs/leukoflow.yaml"
