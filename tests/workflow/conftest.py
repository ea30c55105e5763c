"""Workflow-level fixtures."""

import pytest
from wf import copy_workflow


@pytest.fixture
def workdir(tmp_path):
    """A fresh copy of the workflow."""
    return copy_workflow(tmp_path / "wf")
