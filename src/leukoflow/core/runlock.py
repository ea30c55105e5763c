"""Stale Snakemake locks: a run killed outright must not block the next one.

Snakemake locks its working directory (`.snakemake/locks/`) for the length of a run and
removes the locks when it ends, but a run killed with SIGKILL (or a machine that lost power)
leaves them behind, and the next `snakemake` refuses to start until `--unlock`. The main
Snakemake process of this workflow therefore holds an exclusive `flock` on
`.snakemake/leukoflow-run.lock` for its whole life (the kernel releases it when the process
dies, however it dies). A run that gets that lock knows no other run of this workflow is
alive in the directory, so any Snakemake locks there are stale, and removes them; a run that
does not get it leaves them alone (Snakemake then says the directory is locked, rightly).
"""

import fcntl
from pathlib import Path

RUN_LOCK = "leukoflow-run.lock"
_HELD = []  # open handles whose flock lasts as long as this process


def release_stale_locks(workdir: str | Path = ".") -> list[Path]:
    """Take this process's run lock and remove Snakemake's locks if no other run holds it.

    Args:
        workdir: the Snakemake working directory (holding `.snakemake/`).

    Returns:
        The stale lock files removed (empty when there were none, or when another run of
        the workflow is alive in `workdir`).
    """
    meta = Path(workdir) / ".snakemake"
    meta.mkdir(parents=True, exist_ok=True)
    handle = open(meta / RUN_LOCK, "a")  # stays open: the flock lasts as long as it does
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return []
    _HELD.append(handle)
    locks = meta / "locks"
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
