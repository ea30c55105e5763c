"""Workflow-level fixtures, and the one finished tiny run the session's tests share."""

import pytest
from wf import finished_run, tiny_workflow


@pytest.fixture
def workdir(tmp_path):
    """A fresh copy of the workflow."""
    return tiny_workflow(tmp_path / "wf")


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny workflow run to the end once for the session (`wf.finished_run`); tests read
    its outputs and logs and dry-run it, none may change its results."""
    return finished_run(tmp_path_factory.mktemp("finished"))
