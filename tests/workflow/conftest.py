"""Workflow-level fixtures, and the one finished tiny run the session's tests share."""

import os

import pytest
from wf import tiny_workflow

from leukoflow.workflow_runs import run_snakemake

# The shared run: 4 cores and two fake GPUs ("0", "1"; no GPU is needed): each GPU job
# gets 4 / 2 = 2 threads and leases one of the two GPUs in the run's own lock directory,
# so two GPU jobs run side by side. Tests read its outputs and logs (and dry-run it);
# none may change its results.
SHARED_RUN = (
    "--cores", "4", "--resources", "gpu=2", "--configfile", "config/tiny.yaml",
    "--config", 'gpus=["0", "1"]', "gpu_lock_dir=.gpu-locks",
)  # fmt: skip


@pytest.fixture
def workdir(tmp_path):
    """A fresh copy of the workflow."""
    return tiny_workflow(tmp_path / "wf")


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny workflow (SimpleNet and VGG16, a few dozen synthetic images, one epoch) run
    to the end once per session with `SHARED_RUN`."""
    workdir = tiny_workflow(tmp_path_factory.mktemp("finished") / "wf")
    # GPUs and leases come from SHARED_RUN alone, not from the calling shell
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "LEUKOFLOW_"))}
    run_snakemake(workdir, *SHARED_RUN, env=env)
    return workdir
