"""The workflow on a real one-node Slurm cluster (tests/cluster/slurm-up.sh) through
profiles/slurm: jobs go through sbatch, GPU jobs get a GPU, results match a local run, and a
training job killed at its time limit resumes from its checkpoint."""

import math
import re
import shutil
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leukoflow.core.workflow_runs import (
    copy_workflow,
    planned_jobs,
    run_snakemake,
    snakemake_command,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
# The node has 2 CPUs: no job may ask for more; the first status check comes after 5 s.
CLUSTER_ARGS = ["--max-threads", "2", "--slurm-init-seconds-before-status-checks", "5"]
# Rules that run on the login node (`localrules`), never through sbatch.
LOCAL_RULES = {"all", "fetch_weights", "report", "bundle", "patients", "patients_ensemble"}
GPU_RULES = {"train", "evaluate", "timing", "saliency", "stress"}
# The preemption test: SimpleNet trains about this long (epochs of 16 steps of 2 images,
# as many as a short local run says fit), so a 1-minute limit kills it part-way.
TRAINING_SECONDS = 120
CALIBRATION_EPOCHS = 12
TRAIN_MODEL = "results/main/train/SimpleNet/model.keras"
TRAIN_LOG = "logs/train/main/SimpleNet.log"
SACCT_FIELDS = ["JobID", "Comment", "State", "ReqTRES", "AllocTRES", "Account", "Partition"]


def snakemake(workdir, env, *args, timeout=600, activate=True):
    """Run this Python's snakemake in `workdir`; return the CompletedProcess (output merged).

    `activate=False` runs it as `.venv/bin/snakemake` from a shell where the environment is
    not activated (its scripts folder off PATH).
    """
    return run_snakemake(
        workdir,
        *args,
        env=env,
        check=False,
        timeout=timeout,
        merge_output=True,
        activate=activate,
    )


def check(result):
    """Fail with the tail of snakemake's output unless it succeeded."""
    tail = result.stdout[-8000:]
    assert result.returncode == 0, f"snakemake failed ({result.returncode}):\n{tail}"


def sacct_jobs(result):
    """Slurm's accounting rows (allocations, not steps) of one snakemake run's jobs: the
    plugin names every job of a run after its run ID (sbatch --job-name)."""
    match = re.search(r"SLURM run ID: (\S+)", result.stdout)
    assert match, f"no SLURM run ID in snakemake's output:\n{result.stdout[-4000:]}"
    fields = ",".join(SACCT_FIELDS)
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", "now-1days", "--name", match.group(1), "-o", fields],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines()]


def rule_of(job):
    """The rule in the plugin's job comment `rule_<name>[_wildcards_<values>]`."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


SMOKE_SNAKEFILE = """
rule all:
    input:
        "gpu.txt",
        "cpu.txt",


rule gpu:
    output:
        "gpu.txt",
    threads: max(1, workflow.cores)
    resources:
        gpu=1,
    shell:
        "echo $SLURM_JOB_ID $CUDA_VISIBLE_DEVICES {threads} > {output}"


rule cpu:
    output:
        "cpu.txt",
    shell:
        "echo $SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}} > {output}"
"""


def test_gpu_rule_goes_through_sbatch_with_a_gpu(tmp_path, slurm_cluster, slurm_env):
    (tmp_path / "Snakefile").write_text(SMOKE_SNAKEFILE)
    result = snakemake(tmp_path, slurm_env, "--profile", str(PROFILE), *CLUSTER_ARGS)
    check(result)
    jobs = {rule_of(job): job for job in sacct_jobs(result)}
    assert sorted(jobs) == ["cpu", "gpu"]
    for job in jobs.values():
        assert job["State"] == "COMPLETED"
        # The account and partition come from $SLURM_ACCOUNT and $SLURM_PARTITION.
        assert job["Account"] == slurm_cluster["account"]
        assert job["Partition"] == slurm_cluster["partition"]
    # resources: gpu=1 became --gpus=1: Slurm allocated the GPU and exported its index.
    gpu_job, cuda_devices, threads = (tmp_path / "gpu.txt").read_text().split()
    assert gpu_job == jobs["gpu"]["JobID"]
    assert cuda_devices == "0"
    assert "gres/gpu=1" in jobs["gpu"]["AllocTRES"]
    # threads: all cores, capped by --max-threads, and as many CPUs allocated.
    assert threads == "2"
    assert "cpu=2" in jobs["gpu"]["AllocTRES"]
    cpu_job, cuda_devices = (tmp_path / "cpu.txt").read_text().split()
    assert cpu_job == jobs["cpu"]["JobID"]
    assert cuda_devices == "none"
    assert "gres/gpu" not in jobs["cpu"]["AllocTRES"]


def tiny_config(**training):
    """The tiny test config with SimpleNet only (the GPU jobs queue on one fake GPU), without
    its ensembles (left out with one architecture) and ablation."""
    config = yaml.safe_load(TINY.read_text())
    config["architectures"] = {"SimpleNet": {}}
    config["ablation"] = {}
    config["training"].update(training)
    return config


def comparable(table):
    """Table I without what depends on the machine and the moment: timing and device."""
    return table.drop(columns=[c for c in table if re.search("time|throughput|device", c)])


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, slurm_cluster, slurm_env):
    """The tiny workflow run through profiles/slurm and, at the same time, locally.

    The cluster run is started as `.venv/bin/snakemake` without an activated environment:
    its Slurm jobs must find `leukoflow` all the same.
    """
    root = tmp_path_factory.mktemp("e2e")
    config = tiny_config()
    cluster = copy_workflow(REPO, root / "cluster", {"test.yaml": config})
    local = copy_workflow(REPO, root / "local", {"test.yaml": config})
    plan = snakemake(cluster, slurm_env, "-n", "--configfile", "config/test.yaml")
    check(plan)
    local_args = ["--cores", "2", "--resources", "gpu=1", "--configfile", "config/test.yaml"]
    with open(root / "local.log", "w") as local_log:
        local_run = subprocess.Popen(
            snakemake_command(*local_args),
            cwd=local,
            env=slurm_env,
            stdout=local_log,
            stderr=subprocess.STDOUT,
        )
        try:
            result = snakemake(
                cluster,
                slurm_env,
                "--profile",
                "profiles/slurm",
                "--configfile",
                "config/test.yaml",
                "--config",
                f"gpu_model={slurm_cluster['gpu_type']}",
                *CLUSTER_ARGS,
                timeout=1200,
                activate=False,
            )
            local_code = local_run.wait(timeout=1200)
        finally:
            if local_run.poll() is None:
                local_run.kill()
    check(result)
    assert local_code == 0, (root / "local.log").read_text()[-8000:]
    return {
        "cluster": cluster,
        "local": local,
        "planned": planned_jobs(plan),
        "jobs": sacct_jobs(result),
    }


def test_every_job_but_the_local_rules_went_through_sbatch(cluster_run):
    jobs = cluster_run["jobs"]
    assert [job for job in jobs if job["State"] != "COMPLETED"] == []
    submitted = Counter(rule_of(job) for job in jobs)
    expected = {rule: n for rule, n in cluster_run["planned"].items() if rule not in LOCAL_RULES}
    assert dict(submitted) == expected
    assert GPU_RULES <= set(submitted)


def test_gpu_jobs_carried_a_gpu_of_the_configured_model(cluster_run, slurm_cluster):
    # gpu_model in the workflow config: the GPU jobs asked for --gpus=<model>:1.
    model = f"gres/gpu:{slurm_cluster['gpu_type']}=1"
    for job in cluster_run["jobs"]:
        if rule_of(job) in GPU_RULES:
            assert model in job["ReqTRES"], job
            assert "gres/gpu=1" in job["AllocTRES"], job
        else:
            assert "gres/gpu" not in job["AllocTRES"], job


def test_cluster_results_equal_a_local_run(cluster_run):
    cluster = pd.read_csv(cluster_run["cluster"] / "results" / "table1.csv")
    local = pd.read_csv(cluster_run["local"] / "results" / "table1.csv")
    pd.testing.assert_frame_equal(comparable(cluster), comparable(local))


def seconds_per_epoch(workdir, env):
    """Wall seconds of one training epoch of the preemption config, here and now: a short
    local run of the train rule, timed by its log between the second and the last epoch."""
    epochs = CALIBRATION_EPOCHS
    (workdir / "config" / "test.yaml").write_text(yaml.safe_dump(preemption_config(epochs)))
    args = ["--cores", "2", "--resources", "gpu=1", "--configfile", "config/test.yaml"]
    check(snakemake(workdir, env, TRAIN_MODEL, *args))
    log = (workdir / TRAIN_LOG).read_text()
    stamps = [
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        for stamp in re.findall(r"^(\S+ \S+) INFO .*SimpleNet epoch \d+/", log, re.MULTILINE)
    ]
    assert len(stamps) == epochs, log[-4000:]
    return (stamps[-1] - stamps[1]).total_seconds() / (epochs - 2)


def preemption_config(epochs):
    """The tiny config with `epochs` of 16 small steps and no early stopping."""
    return tiny_config(epochs=epochs, patience=epochs, batch_size=2)


def test_training_killed_at_its_time_limit_resumes_from_its_checkpoint(
    cluster_run, slurm_env, tmp_path
):
    # The finished cluster run's folder; only train reruns (its settings change). Training
    # is made to last about TRAINING_SECONDS here, so the first attempt, limited to 1 minute,
    # is killed part-way; the retry gets 10 minutes.
    workdir = tmp_path / "wf"
    shutil.copytree(cluster_run["cluster"], workdir, ignore=shutil.ignore_patterns("slurm_logs"))
    epochs = max(100, math.ceil(TRAINING_SECONDS / seconds_per_epoch(workdir, slurm_env)))
    (workdir / "config" / "test.yaml").write_text(yaml.safe_dump(preemption_config(epochs)))
    result = snakemake(
        workdir,
        slurm_env,
        TRAIN_MODEL,
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/test.yaml",
        *CLUSTER_ARGS,
        "--set-resources",
        "train:runtime=1+9*(attempt-1)",
        "--retries",
        "1",
        timeout=1200,
    )
    check(result)
    jobs = sacct_jobs(result)
    assert [(rule_of(job), job["State"]) for job in jobs] == [
        ("train", "TIMEOUT"),
        ("train", "COMPLETED"),
    ]
    # The retry's log: it resumed after the last checkpointed epoch and trained only the rest.
    log = (workdir / TRAIN_LOG).read_text()
    resumed = re.search(r"resuming SimpleNet after epoch (\d+)", log)
    assert resumed, log[-4000:]
    done = int(resumed.group(1))
    assert 0 < done < epochs
    first = re.search(r"SimpleNet epoch (\d+)/", log)
    assert int(first.group(1)) == done + 1
    history = pd.read_csv(workdir / TRAIN_MODEL.replace("model.keras", "history.csv"))
    assert history["epoch"].tolist() == list(range(epochs))
