"""Workflow-level fixtures: a fresh copy of the workflow, and one finished tiny run that
every test reading a finished run shares."""

import pytest
from wf import GPU_RULES, tiny_workflow

from leukoflow.workflow_runs import run_snakemake


@pytest.fixture
def workdir(tmp_path):
    """A fresh copy of the workflow."""
    return tiny_workflow(tmp_path / "wf")


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny workflow run to the end with 4 cores, one-thread GPU jobs and gpu=1."""
    workdir = tiny_workflow(tmp_path_factory.mktemp("finished") / "wf")
    run_snakemake(
        workdir,
        "--cores",
        "4",
        "--resources",
        "gpu=1",
        "--configfile",
        "config/tiny.yaml",
        "--set-threads",
        *(f"{rule}=1" for rule in sorted(GPU_RULES)),
    )
    return workdir
