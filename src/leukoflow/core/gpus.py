"""GPU leases: each GPU job of every workflow of a user computes on GPUs of its own.

Snakemake's `--resources gpu=N` only counts GPU jobs; it does not say which GPU a job may
use, so without a lease every job would see every GPU (TensorFlow maps the memory of all of
them, JAX preallocates most of GPU 0 in each process). A job therefore leases its GPUs
before the Keras backend is imported (`leukoflow.cli` does it for train, evaluate, timing,
saliency and predict):

- the GPUs are the inherited `CUDA_VISIBLE_DEVICES` when it is set (a scheduler such as
  Slurm chose them: respected as is, nothing leased), else the configured list (`gpus:` in
  the workflow config, `--gpus` or `LEUKOFLOW_GPUS`), else what `nvidia-smi -L` lists; none:
  no lease, the job computes on the CPU;
- a lease is a non-blocking `flock` on one lock file per GPU (`gpu-<id>.lock`) in a lock
  directory shared by all workflows of the user (`gpu_lock_dir:`, `--gpu-lock-dir` or
  `LEUKOFLOW_GPU_LOCK_DIR`; default `/tmp/leukoflow-gpus-<uid>`). The job then sets
  `CUDA_VISIBLE_DEVICES` to its GPUs and `CUDA_DEVICE_ORDER=PCI_BUS_ID` (the numbering of
  `nvidia-smi`);
- the lock is held for the life of the process: the kernel drops it when the process ends,
  however it ends (SIGKILL included), so a GPU is never left leased by a dead job;
- when every GPU is leased by other jobs (another workflow, say) the job waits, with a log
  line, rather than crowding a busy GPU.

The job's log names the GPU(s) it got when the lease is taken and how long it held them when
the process ends.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)

GPUS_ENV = "LEUKOFLOW_GPUS"
LOCK_DIR_ENV = "LEUKOFLOW_GPU_LOCK_DIR"
BACKEND_MODULES = ("keras", "tensorflow", "jax", "torch")
WAIT_LOG_SECONDS = 600.0


def default_lock_dir() -> Path:
    """The lock directory shared by all workflows of this user: `<tmp>/leukoflow-gpus-<uid>`."""
    return Path(tempfile.gettempdir()) / f"leukoflow-gpus-{os.getuid()}"


def nvidia_smi_gpus() -> list[str]:
    """The indices of the GPUs `nvidia-smi -L` lists (PCI bus order); [] without nvidia-smi."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return re.findall(r"^GPU (\d+):", result.stdout, flags=re.MULTILINE)


def parse_gpu_list(text: str | None) -> list[str]:
    """GPU ids from a comma-separated list ("0,1", "GPU-3f2a..,GPU-77c1.."); blanks dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@dataclass
class Lease:
    """The GPUs of this process and how it got them.

    Attributes:
        gpus: the GPU ids the job computes on (empty: the CPU).
        source: "leased" (locks held), "inherited" (`CUDA_VISIBLE_DEVICES` was set) or
            "none" (no GPU).
        lock_dir: the lock directory of a lease (None otherwise).
        started: `time.time()` when the GPUs were got.
    """

    gpus: tuple[str, ...]
    source: str
    lock_dir: Path | None = None
    started: float = field(default_factory=time.time)
    _files: list[IO] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        """A line for the job's log, e.g. 'GPU 1 (leased in /tmp/leukoflow-gpus-1000)'."""
        if not self.gpus:
            return "no GPU: computing on the CPU"
        ids = ",".join(self.gpus)
        names = f"GPU {ids}" if len(self.gpus) == 1 else f"GPUs {ids}"
        if self.source == "leased":
            return f"{names} (CUDA_VISIBLE_DEVICES={ids}, leased in {self.lock_dir})"
        return f"{names} (CUDA_VISIBLE_DEVICES={ids} inherited, not leased)"

    def release(self) -> None:
        """Close the lock files (the kernel also does this when the process ends)."""
        for handle in self._files:
            handle.close()
        self._files.clear()


def _lock_path(lock_dir: Path, gpu: str) -> Path:
    """The lock file of one GPU id (characters outside [A-Za-z0-9._-] become '_')."""
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu)}.lock"


def _try_lock(path: Path) -> IO | None:
    """The open lock file when a non-blocking exclusive flock on it succeeds, else None."""
    handle = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
    handle.flush()
    return handle


def _try_lease(gpus: Sequence[str], count: int, lock_dir: Path) -> list[tuple[str, IO]] | None:
    """`count` of `gpus` locked, in list order, or None (nothing kept) when fewer are free."""
    held = []
    for gpu in gpus:
        handle = _try_lock(_lock_path(lock_dir, gpu))
        if handle is not None:
            held.append((gpu, handle))
            if len(held) == count:
                return held
    for _, handle in held:
        handle.close()
    return None


def lease_gpus(
    count: int = 1,
    gpus: Sequence[str] | None = None,
    lock_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
) -> Lease:
    """Lease `count` GPUs for this process (see the module docstring); wait while all are busy.

    Args:
        count: GPUs the job computes on (at least 1).
        gpus: the GPU ids to lease from; None or empty: `nvidia-smi -L`. Ignored when
            `CUDA_VISIBLE_DEVICES` is set in `env`.
        lock_dir: the shared lock directory (created, mode 0700); None: `default_lock_dir()`.
        env: the environment to read `CUDA_VISIBLE_DEVICES` from (default: os.environ).
        poll_seconds: seconds between tries while every GPU is leased.
        timeout: give up after this many seconds of waiting (None: wait as long as it takes).

    Returns:
        The `Lease`; hold on to it (its lock files must stay open). Call `export` to make it
        visible to the backend.

    Raises:
        LeukoflowError: for `count` below 1, when the job asks for more GPUs than there are
            (both numbers named), or when `timeout` passes.
    """
    if count < 1:
        raise LeukoflowError(f"a job needs at least 1 device, got {count}")
    env = os.environ if env is None else env
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        given = parse_gpu_list(inherited)
        if given and count > len(given):
            raise LeukoflowError(
                f"the job asks for {count} GPUs but CUDA_VISIBLE_DEVICES={inherited!r} gives it "
                f"{len(given)}; ask the scheduler for {count} (Slurm: --gpus={count}) or set "
                f"training.devices: {len(given)}"
            )
        return Lease(tuple(given[:count]), "inherited" if given else "none")
    pool = list(gpus) if gpus else nvidia_smi_gpus()
    if not pool:
        return Lease((), "none")
    if count > len(pool):
        raise LeukoflowError(
            f"the job asks for {count} GPUs but only {len(pool)} can be leased "
            f"({', '.join(pool)}); set training.devices to at most {len(pool)}"
        )
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    waited_since, logged = time.monotonic(), None
    while (held := _try_lease(pool, count, lock_dir)) is None:
        waited = time.monotonic() - waited_since
        if timeout is not None and waited >= timeout:
            raise LeukoflowError(
                f"no {count} of the GPUs {', '.join(pool)} became free in {timeout:.0f} s "
                f"(leases in {lock_dir})"
            )
        if logged is None or waited - logged >= WAIT_LOG_SECONDS:
            log.info(
                "waiting for %d GPU(s): %s are all leased by other jobs (locks in %s)",
                count,
                ", ".join(pool),
                lock_dir,
            )
            logged = waited
        time.sleep(poll_seconds)
    return Lease(tuple(g for g, _ in held), "leased", lock_dir, _files=[h for _, h in held])


def export(lease: Lease) -> None:
    """Make the lease the process's GPUs: `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`.

    Only a lease sets them; inherited GPUs and a job without GPUs leave the environment as
    it is. Logs the lease now and how long it was held when the process ends.

    Raises:
        LeukoflowError: when a Keras backend was imported already (it may have read the
            old `CUDA_VISIBLE_DEVICES`): a programming error in the caller.
    """
    early = [name for name in BACKEND_MODULES if name in sys.modules]
    if early and lease.source == "leased":
        raise LeukoflowError(
            f"the GPU lease came after {', '.join(early)} was imported; lease first"
        )
    if lease.source == "leased":
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(lease.gpus)
    log.info("GPU lease: %s", lease.describe())
    if lease.gpus:
        atexit.register(_log_release, lease)


def _log_release(lease: Lease) -> None:
    """Log how long the lease was held (at the end of the process)."""
    log.info("GPU lease ends: %s held %.1f s", ",".join(lease.gpus), time.time() - lease.started)
