"""Shared fixtures: small real image files in the C-NMC layout."""

import pytest
from cells import make_cnmc_tree


@pytest.fixture
def cnmc_tree(tmp_path):
    """A tiny, valid C-NMC training tree."""
    return make_cnmc_tree(tmp_path / "cnmc")
