"""`leukoflow bench dvc`: how fast DVC versions a dataset folder (`dvc add`, `dvc push` to a
local remote, `dvc status`) against a plain copy.

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
from pathlib import Path

from leukoflow.bench.common import cpu_seconds, synthetic_dataset, timed
from leukoflow.core.errors import LeukoflowError

log = logging.getLogger(__name__)

CACHE_TYPES = ("copy", "hardlink", "symlink")


def tree_size(root: str | Path) -> tuple[int, int]:
    """(number of files, total bytes) under `root` (links counted as themselves)."""
    files, size = 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


def dvc_command(args: list[str], cwd: str | Path, jobs: int | None = None) -> tuple[float, float]:
    """Run one `dvc` command with this Python in `cwd`, without analytics.

    Args:
        args: DVC's arguments, e.g. ["add", "data"].
        cwd: the repository.
        jobs: `--jobs` of push and pull.

    Returns:
        (wall seconds, CPU seconds of the command).

    Raises:
        LeukoflowError: the command failed; the message holds its stderr's tail.
    """
    command = [sys.executable, "-m", "dvc", *args]
    if jobs is not None and args[0] in ("push", "pull"):
        command += ["--jobs", str(jobs)]
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    seconds, done = timed(subprocess.run, command, cwd=cwd, env=env, capture_output=True, text=True)
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
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


def measure_cache_type(
    dataset: Path,
    work_dir: Path,
    cache_type: str,
    files: int,
    size: int,
    checksum_jobs: int | None = None,
    jobs: int | None = None,
) -> dict:
    """Time copy, `dvc add`, no-op `dvc status`, `dvc push` for one `cache.type`.

    Args:
        dataset: the folder measured.
        work_dir: where the repository and remote are made (and deleted).
        cache_type: DVC's `cache.type`.
        files, size: the folder's file count and bytes (for the rates).
        checksum_jobs: `core.checksum_jobs` (None: DVC's default).
        jobs: `dvc push --jobs`.

    Returns:
        Wall and CPU seconds, files/s and MB/s of each step, and add and push wall time as
        multiples of the copy.
    """
    repo = Path(work_dir) / f"repo-{cache_type}"
    remote = Path(work_dir) / f"remote-{cache_type}"
    repo.mkdir()
    try:
        dvc_command(["init", "--no-scm", "--quiet"], repo)
        dvc_command(["config", "cache.type", cache_type], repo)
        if checksum_jobs is not None:
            dvc_command(["config", "core.checksum_jobs", str(checksum_jobs)], repo)
        dvc_command(["remote", "add", "--default", "local", str(remote)], repo)
        cpu = cpu_seconds(resource.RUSAGE_SELF)
        seconds, _ = timed(shutil.copytree, dataset, repo / "data")
        copy = seconds, cpu_seconds(resource.RUSAGE_SELF) - cpu
        add = dvc_command(["add", "data"], repo)
        status = dvc_command(["status"], repo)
        push = dvc_command(["push"], repo, jobs=jobs)
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
    dataset: str | Path | None = None,
    work_dir: str | Path | None = None,
    cache_types: tuple[str, ...] = CACHE_TYPES,
    checksum_jobs: int | None = None,
    jobs: int | None = None,
    threads: int = 1,
) -> dict:
    """Measure DVC on the folder `dataset` for each link type in `cache_types`.

    Args:
        dataset: the folder; None: the full-scale synthetic dataset (10,661 training images
            at 450 px, about 6.5 GB), generated with `threads` workers and deleted afterwards.
        work_dir: room for three copies of the dataset (source, repository and cache,
            remote); default: a new temporary folder. What is written there is deleted.
        cache_types: DVC `cache.type` values.
        checksum_jobs: `core.checksum_jobs`.
        jobs: `dvc push --jobs`.
        threads: processes generating the synthetic dataset.

    Returns:
        {"dataset", "files", "bytes", "checksum_jobs", "push_jobs", "runs": one
        `measure_cache_type` result per cache type}.

    Raises:
        LeukoflowError: `dataset` is not a folder or holds no file, or a DVC command failed.
    """
    owned = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="leukoflow-dvc-bench-") if owned else work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    generated = dataset is None
    try:
        if generated:
            from leukoflow.data.synth import generate_dataset

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


def format_report(result: dict) -> str:
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


def run(
    images: int = 1000,
    size: int = 450,
    cache_types: str = "copy,hardlink,symlink",
    dataset: str | None = None,
) -> dict:
    """`measure_dvc` on a synthetic dataset (or on `dataset`), flat.

    Args:
        images: about how many synthetic cells (when no `dataset`).
        size: their side, px.
        cache_types: comma-separated DVC `cache.type` values.
        dataset: measure this folder instead.

    Returns:
        `dvc_files`, `dvc_mb`, and per cache type `<type>_<step>_s` and `_files_per_s` of
        copy, add, status and push, and `<type>_add_over_copy`, `<type>_push_over_copy`.
    """
    types = tuple(t.strip() for t in cache_types.split(",") if t.strip())
    with tempfile.TemporaryDirectory(prefix="leukoflow-bench-dvc-") as tmp:
        if dataset is None:
            dataset = Path(tmp) / "data"
            synthetic_dataset(dataset, images, size, os.cpu_count() or 1)
        result = measure_dvc(dataset, Path(tmp) / "work", cache_types=types)
    figures = {"dvc_files": result["files"], "dvc_mb": result["bytes"] / 1e6}
    for measured in result["runs"]:
        kind = measured["cache_type"]
        for step in ("copy", "add", "status", "push"):
            figures[f"{kind}_{step}_s"] = measured[step]["s"]
            if "files_per_s" in measured[step]:
                figures[f"{kind}_{step}_files_per_s"] = measured[step]["files_per_s"]
        figures[f"{kind}_add_over_copy"] = measured["add_over_copy"]
        figures[f"{kind}_push_over_copy"] = measured["push_over_copy"]
    return figures
