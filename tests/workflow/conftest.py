"""Workflow-level fixtures."""

import pytest
from wf import tiny_workflow


@pytest.fixture
def workdir(tmp_path):
    """A fresh copy of the workflow."""
    return tiny_workflow(tmp_path / "wf")
