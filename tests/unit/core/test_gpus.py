"""GPU leases (core.gpus) with fake GPU ids: one job per GPU, waits, SIGKILL frees a GPU."""

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from leukoflow.core import gpus
from leukoflow.core.errors import LeukoflowError

LEUKOFLOW = str(Path(sys.executable).with_name("leukoflow"))
NO_CUDA = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}


def lease(count=1, pool=("0", "1"), lock_dir=None, **options):
    """A lease from the fake GPUs `pool`, with no CUDA_VISIBLE_DEVICES inherited."""
    return gpus.lease_gpus(count, list(pool), lock_dir, env=NO_CUDA, **options)


def test_each_lease_gets_a_gpu_of_its_own_until_it_is_released(tmp_path):
    first, second = lease(lock_dir=tmp_path), lease(lock_dir=tmp_path)
    assert (first.gpus, second.gpus) == (("0",), ("1",))
    assert first.source == second.source == "leased"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-0.lock", "gpu-1.lock"]
    with pytest.raises(LeukoflowError, match="no 1 of the GPUs 0, 1 became free"):
        lease(lock_dir=tmp_path, poll_seconds=0.05, timeout=0.2)
    first.release()
    assert lease(lock_dir=tmp_path, timeout=1).gpus == ("0",)


def test_a_job_of_two_gpus_takes_two_free_ones(tmp_path):
    held = lease(pool=("0", "1", "2"), lock_dir=tmp_path)
    pair = lease(2, pool=("0", "1", "2"), lock_dir=tmp_path)
    assert (held.gpus, pair.gpus) == (("0",), ("1", "2"))
    assert "GPUs 1,2 (CUDA_VISIBLE_DEVICES=1,2, leased in" in pair.describe()


def test_asking_for_more_gpus_than_there_are_names_both_numbers(tmp_path):
    with pytest.raises(LeukoflowError, match="asks for 3 GPUs but only 2 can be leased"):
        lease(3, lock_dir=tmp_path)
    env = dict(NO_CUDA, CUDA_VISIBLE_DEVICES="4")
    with pytest.raises(LeukoflowError, match="asks for 2 GPUs but CUDA_VISIBLE_DEVICES='4'"):
        gpus.lease_gpus(2, ["0", "1"], tmp_path, env=env)


def test_inherited_cuda_visible_devices_is_used_as_is(tmp_path):
    got = gpus.lease_gpus(1, ["0", "1"], tmp_path, env=dict(NO_CUDA, CUDA_VISIBLE_DEVICES="3,5"))
    assert (got.gpus, got.source) == (("3",), "inherited")
    assert not list(tmp_path.iterdir())  # nothing leased
    hidden = gpus.lease_gpus(1, ["0"], tmp_path, env=dict(NO_CUDA, CUDA_VISIBLE_DEVICES=""))
    assert (hidden.gpus, hidden.source) == ((), "none")


def test_gpus_come_from_nvidia_smi_when_none_are_configured(tmp_path, monkeypatch):
    """A stand-in for nvidia-smi (the one thing that cannot run here) on PATH."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aa)'\n"
        "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bb)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert gpus.nvidia_smi_gpus() == ["0", "1"]
    assert lease(pool=(), lock_dir=tmp_path / "locks").gpus == ("0",)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpus.nvidia_smi_gpus() == []
    assert lease(pool=(), lock_dir=tmp_path / "locks").source == "none"


HOLDER = """
import sys, time
from leukoflow.core import gpus
lease = gpus.lease_gpus(1, ["0"], sys.argv[1], env={})
print("leased", lease.gpus[0], flush=True)
time.sleep(600)
"""


def test_a_job_waits_while_its_gpu_is_leased_and_gets_it_when_the_holder_is_killed(
    tmp_path, caplog
):
    """The holder is SIGKILLed (no clean-up runs): the kernel frees its lock for the waiter."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().split() == ["leased", "0"]
        killer = threading.Timer(1.0, holder.send_signal, [signal.SIGKILL])
        killer.start()
        with caplog.at_level(logging.INFO, logger="leukoflow.core.gpus"):
            got = lease(pool=("0",), lock_dir=tmp_path, poll_seconds=0.1, timeout=30)
        killer.join()
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert got.gpus == ("0",)
    assert "waiting for 1 GPU(s): 0 are all leased by other jobs" in caplog.text


def test_gpu_subcommands_lease_before_keras_is_imported(tmp_path):
    """`leukoflow timing` leases (export refuses a lease once a backend is imported), logs the
    GPU, then fails on its missing model; the lock file was made in the given directory."""
    env = dict(NO_CUDA, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [
            LEUKOFLOW,
            "timing",
            "--model",
            str(tmp_path / "missing.keras"),
            "--out",
            str(tmp_path / "t.json"),
            "--gpus",
            "7",
            "--gpu-lock-dir",
            str(tmp_path),
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"GPU lease: GPU 7 (CUDA_VISIBLE_DEVICES=7, leased in {tmp_path})" in result.stderr
    assert "missing.keras does not exist" in result.stderr
    assert (tmp_path / "gpu-7.lock").is_file()


def test_the_cli_parser_imports_no_backend():
    code = (
        "import sys; from leukoflow.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('keras', 'tensorflow', 'jax', 'torch')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
