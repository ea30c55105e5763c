"""An interrupted run resumes as a whole.

The tiny run of `wf.finished_run`, in a second folder: the whole snakemake process tree is
killed with SIGKILL while a training job is in its second epoch, the same command is run
again and interrupted with Ctrl-C (SIGINT to the process group, as a terminal sends it)
while a training job makes progress, and the same command is run a third time to the end.
Table I, the metrics, the training histories and the bundles then equal those of the
uninterrupted run (timing columns aside).
"""

import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from wf import AWKWARD, run_arguments, run_environment, tiny_workflow

from leukoflow.core.workflow_runs import run_snakemake, snakemake_command

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TIMING_COLUMNS = ["time_ms", "time_p95_ms", "throughput_images_per_s", "device"]


def epochs_done(workdir):
    """{architecture: epochs in its training checkpoint} of the trainings under way."""
    done = {}
    for state in workdir.glob("results/main/train/*/checkpoint/state.json"):
        try:
            done[state.parent.parent.name] = json.loads(state.read_text())["epochs_done"]
        except (OSError, ValueError, KeyError):  # being replaced right now
            continue
    return done


def interrupted(workdir, sig, log):
    """Run the tiny workflow and send `sig` to its whole process group as soon as a training
    job has finished an epoch in this run and goes on; returns that architecture."""
    before = epochs_done(workdir)
    with open(log, "w") as out:
        process = subprocess.Popen(
            snakemake_command(*run_arguments()),
            cwd=workdir,
            env=run_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell job has
        )
        deadline = time.monotonic() + 900
        while process.poll() is None and time.monotonic() < deadline:
            moved = [a for a, n in epochs_done(workdir).items() if n >= before.get(a, 0) + 1]
            if moved:
                os.killpg(process.pid, sig)
                break
            time.sleep(0.02)
        process.wait(timeout=600)
    assert moved, f"no training job was caught in its second epoch:\n{log.read_text()[-3000:]}"
    return moved[0]


def comparable_table(workdir):
    return pd.read_csv(workdir / "results/table1.csv").drop(columns=TIMING_COLUMNS)


def comparable_metrics(workdir):
    metrics = json.loads((workdir / "results/metrics.json").read_text())
    return {arch: {k: v for k, v in m.items() if k != "time_ms"} for arch, m in metrics.items()}


def without_checksums(value):
    """A bundle.json value without its files' sha256 (a .keras or .onnx file's bytes hold
    times and names that differ between two runs with the same weights)."""
    if isinstance(value, dict):
        return {k: without_checksums(v) for k, v in value.items() if k != "sha256"}
    if isinstance(value, list):
        return [without_checksums(v) for v in value]
    return value


def bundle_contents(workdir, name):
    """(bundle.json without its creation time and checksums, every member model's weights)
    of one bundle."""
    from leukoflow.deploy.bundle import load_bundle

    bundle = load_bundle(workdir / "results/models" / name)
    meta = without_checksums({k: v for k, v in bundle.meta.items() if k != "created"})
    return meta, [w for member in bundle.members for w in member.model.get_weights()]


def test_killed_then_interrupted_run_ends_as_an_uninterrupted_one(finished, tmp_path):
    workdir = tiny_workflow(tmp_path / AWKWARD / "work dir")
    # the very config of the finished run: the same dataset folder, the same settings
    shutil.copyfile(finished / "config" / "tiny.yaml", workdir / "config" / "tiny.yaml")

    killed = interrupted(workdir, signal.SIGKILL, tmp_path / "killed.log")
    assert not (workdir / f"results/main/train/{killed}/model.keras").exists()
    assert (workdir / ".snakemake" / "locks").is_dir()  # left behind by the killed run

    interrupted(workdir, signal.SIGINT, tmp_path / "ctrl-c.log")
    assert "Terminating processes on user request" in (tmp_path / "ctrl-c.log").read_text()

    run_snakemake(workdir, *run_arguments(), env=run_environment(), activate=False)
    logs = "".join(p.read_text() for p in (workdir / "logs/train/main").glob("*.log"))
    assert f"resuming {killed} after epoch" in logs

    pd.testing.assert_frame_equal(comparable_table(workdir), comparable_table(finished))
    assert comparable_metrics(workdir) == comparable_metrics(finished)
    table = comparable_table(finished)
    for arch in table.loc[table["kind"] == "architecture", "architecture"]:
        history = f"results/main/train/{arch}/history.csv"
        pd.testing.assert_frame_equal(
            pd.read_csv(workdir / history).drop(columns="seconds"),
            pd.read_csv(finished / history).drop(columns="seconds"),
        )
    for name in table["architecture"]:  # the architectures' bundles and the ensembles'
        (meta, weights), (meta_ref, weights_ref) = (
            bundle_contents(workdir, name),
            bundle_contents(finished, name),
        )
        assert meta == meta_ref
        assert all(np.array_equal(a, b) for a, b in zip(weights, weights_ref, strict=True))
