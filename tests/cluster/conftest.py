"""A one-node Slurm cluster for the session (tests/cluster/slurm-up.sh)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SLURM_UP = Path(__file__).with_name("slurm-up.sh")
PARTITION = "main"
ACCOUNT = "leukoflow"


def _unfit_reason():
    """Why this machine cannot run the one-node cluster, or None."""
    if os.geteuid() != 0:
        return "the Slurm tests need root (slurm-up.sh installs packages and runs daemons)"
    if not Path("/etc/debian_version").exists():
        return "the Slurm tests need Debian (slurm-up.sh installs Debian's Slurm packages)"
    if shutil.which("apt-get") is None:
        return "the Slurm tests need apt-get"
    return None


def _slurm_up(command):
    return subprocess.run(
        ["bash", str(SLURM_UP), command], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """Bring the cluster up once per session; stop it at the end if this session started it."""
    reason = _unfit_reason()
    if reason:
        pytest.skip(reason)
    was_up = _slurm_up("status").returncode == 0
    result = _slurm_up("up")
    if result.returncode == 3:
        pytest.skip(f"slurm-up.sh: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, f"slurm-up.sh up failed:\n{result.stderr[-6000:]}"
    yield {"partition": PARTITION, "account": ACCOUNT, "gpu_type": "fake"}
    if not was_up:
        _slurm_up("down")


@pytest.fixture(scope="session")
def slurm_env(slurm_cluster):
    """The environment of a user of the cluster: account and partition, this Python's scripts."""
    env = dict(os.environ)
    env["SLURM_ACCOUNT"] = slurm_cluster["account"]
    env["SLURM_PARTITION"] = slurm_cluster["partition"]
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env
