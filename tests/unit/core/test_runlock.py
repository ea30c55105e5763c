"""Stale Snakemake locks: removed only when no other run of the workflow is alive."""

import os
import signal
import subprocess
import sys
import time

from leukoflow.core.runlock import release_stale_locks

HOLDER = """
import sys, time
from leukoflow.core.runlock import release_stale_locks
release_stale_locks(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def stale_locks(workdir):
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/x\n")
    return sorted(locks.iterdir())


def test_locks_of_a_live_run_stay_and_those_of_a_killed_run_go(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        locks = stale_locks(tmp_path)
        assert release_stale_locks(tmp_path) == []  # the holder is alive: its locks are real
        assert all(path.exists() for path in locks)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    removed = []
    while not removed and time.monotonic() < deadline:  # the kernel frees the flock at death
        removed = release_stale_locks(tmp_path)
    assert removed == locks
    assert not any(path.exists() for path in locks)
