"""How fast DVC versions a dataset folder: `dvc add`, `dvc push` to a local remote, `dvc status`.

`measure_dvc(dataset)` copies the folder into a fresh DVC repository once per cache link type,
times each DVC command in a subprocess, and returns a dict of wall times and CPU times (seconds)
and rates (files/s, MB/s). The plain copy of the folder is the baseline, timed in the same run,
so the figures read as "DVC costs this many copies of the data". CPU time (user + system) does
not grow when other work shares the machine; wall time does.
"""

import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

CACHE_TYPES = ("copy", "hardlink", "symlink")


def tree_size(root):
    """(number of files, total bytes) under `root`."""
    files, size = 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


def _cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def dvc(args, cwd, jobs=None):
    """Run one `dvc` command in `cwd`; return (wall, CPU) seconds. Raises on failure."""
    command = [sys.executable, "-m", "dvc", *args]
    if jobs is not None and args[0] in ("push", "pull"):
        command += ["--jobs", str(jobs)]
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    cpu, start = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _cpu(resource.RUSAGE_CHILDREN) - cpu
    if done.returncode != 0:
        raise LeukoflowError(f"`dvc {' '.join(args)}` failed in {cwd}:\n{done.stderr[-2000:]}")
    return seconds, cpu


def _rates(times, files, size):
    seconds, cpu = times
    return {
        "s": round(seconds, 4),
        "cpu_s": round(cpu, 4),
        "files_per_s": round(files / seconds, 1),
        "mb_per_s": round(size / 1e6 / seconds, 1),
    }


def measure_cache_type(dataset, work_dir, cache_type, files, size, checksum_jobs=None, jobs=None):
    """Time copy, `dvc add`, no-op `dvc status`, `dvc push` for one `cache.type` (seconds)."""
    repo = Path(work_dir) / f"repo-{cache_type}"
    remote = Path(work_dir) / f"remote-{cache_type}"
    repo.mkdir()
    try:
        dvc(["init", "--no-scm", "--quiet"], repo)
        dvc(["config", "cache.type", cache_type], repo)
        if checksum_jobs is not None:
            dvc(["config", "core.checksum_jobs", str(checksum_jobs)], repo)
        dvc(["remote", "add", "--default", "local", str(remote)], repo)
        cpu, start = _cpu(resource.RUSAGE_SELF), time.perf_counter()
        shutil.copytree(dataset, repo / "data")
        copy = time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu
        add = dvc(["add", "data"], repo)
        status = dvc(["status"], repo)
        push = dvc(["push"], repo, jobs=jobs)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(remote, ignore_errors=True)
    result = {
        "cache_type": cache_type,
        "copy": _rates(copy, files, size),
        "add": _rates(add, files, size),
        "status": _rates(status, files, size),
        "push": _rates(push, files, size),
        "add_over_copy": round(add[0] / copy[0], 2),
        "push_over_copy": round(push[0] / copy[0], 2),
    }
    log.info("%s", result)
    return result


def measure_dvc(
    dataset=None, work_dir=None, cache_types=CACHE_TYPES, checksum_jobs=None, jobs=None, threads=1
):
    """Measure DVC on the folder `dataset` for each link type in `cache_types`.

    `dataset` None: the full-scale synthetic dataset (10,661 training images at 450 px, about
    6.5 GB) is generated with `threads` workers and deleted afterwards. `work_dir` (default: a
    new temporary folder) needs room for three copies of the dataset (source, repository and
    cache, remote); everything written there is deleted afterwards. `checksum_jobs` sets
    `core.checksum_jobs`, `jobs` is `dvc push --jobs`.
    Returns {"files", "bytes", "runs": [per cache type: wall and CPU seconds and files/s of
    copy, add, no-op status and push, and add and push wall time as multiples of the copy]}.
    """
    owned = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="leukoflow-dvc-bench-") if owned else work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    generated = dataset is None
    try:
        if generated:
            from leukoflow.synth import generate_dataset

            dataset = work_dir / "synthetic"
            generate_dataset(dataset, full_scale=True, threads=threads)
        dataset = Path(dataset)
        if not dataset.is_dir():
            raise LeukoflowError(f"{dataset}: not a folder; pass the dataset folder to measure")
        files, size = tree_size(dataset)
        if files == 0:
            raise LeukoflowError(f"{dataset}: no files to measure")
        runs = [
            measure_cache_type(dataset, work_dir, t, files, size, checksum_jobs, jobs)
            for t in cache_types
        ]
    finally:
        if generated and dataset is not None:
            shutil.rmtree(dataset, ignore_errors=True)
        if owned:
            shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "dataset": str(dataset),
        "files": files,
        "bytes": size,
        "checksum_jobs": checksum_jobs,
        "push_jobs": jobs,
        "runs": runs,
    }


def format_report(result):
    """A plain-text table of `measure_dvc`'s result: wall seconds (CPU seconds) per step."""
    lines = [
        f"DVC on {result['dataset']}: {result['files']} files, {result['bytes'] / 1e9:.2f} GB;"
        " wall s (CPU s), files/s of wall time",
        f"{'cache.type':<10} {'copy':>13} {'dvc add':>13} {'add f/s':>8} {'dvc status':>13}"
        f" {'dvc push':>13} {'push f/s':>8} {'add/copy':>8} {'push/copy':>9}",
    ]

    def cell(step):
        return f"{step['s']:.1f} ({step['cpu_s']:.1f})"

    for run in result["runs"]:
        lines.append(
            f"{run['cache_type']:<10} {cell(run['copy']):>13} {cell(run['add']):>13}"
            f" {run['add']['files_per_s']:>8.0f} {cell(run['status']):>13}"
            f" {cell(run['push']):>13} {run['push']['files_per_s']:>8.0f}"
            f" {run['add_over_copy']:>8.2f} {run['push_over_copy']:>9.2f}"
        )
    return "\n".join(lines)
