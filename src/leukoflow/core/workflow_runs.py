"""The workflow run on a copy of itself: copy it, run Snakemake there, read what it did.

The benchmarks (`leukoflow bench plan`, `bench prepare`) and the workflow, DVC and Slurm
tests run Snakemake the same way: on a fresh copy of the workflow's files (no results), with
this Python's scripts first on PATH, so the rules' `leukoflow` commands are this
installation's. `planned_jobs` reads a dry run's job counts, `job_intervals` the jobs'
start and end times from a Snakemake log.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import yaml

from leukoflow.core.errors import LeukoflowError

WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs", "profiles")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_workflow(
    source: str | Path, dest: str | Path, configs: Mapping[str, str | Path | dict] | None = None
) -> Path:
    """Copy the workflow's files (`WORKFLOW_FILES`, not its results) of `source` into `dest`.

    Args:
        source: the repository folder (the one with the Snakefile).
        dest: the folder of the copy (created if missing; files already there are replaced).
        configs: extra config files for the copy's `config/` folder: {file name: a file to
            copy, or a dict written as YAML}.

    Returns:
        `dest`, as a Path.

    Raises:
        LeukoflowError: `source` has no Snakefile.
    """
    source, dest = Path(source), Path(dest)
    if not (source / "Snakefile").is_file():
        raise LeukoflowError(f"{source}: no Snakefile; pass the repository folder")
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=IGNORE, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, dest / name)
    for name, config in (configs or {}).items():
        target = dest / "config" / name
        if isinstance(config, Mapping):
            target.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        else:
            shutil.copy2(config, target)
    return dest


def snakemake_command(*args: str) -> list[str]:
    """The command line of this Python's `snakemake` with `args`."""
    return [str(Path(sys.executable).parent / "snakemake"), *map(str, args)]


def snakemake_env(env: Mapping[str, str] | None = None, activate: bool = True) -> dict[str, str]:
    """`env` (default: os.environ) with this Python's scripts first on PATH, as in an activated
    environment, so the rules' `leukoflow` commands are this installation's; with `activate`
    False, that folder is taken off PATH instead (`.venv/bin/snakemake` run as it is)."""
    env = dict(os.environ if env is None else env)
    scripts = str(Path(sys.executable).parent)
    others = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]
    env["PATH"] = os.pathsep.join([scripts, *others] if activate else others)
    return env


def run_snakemake(
    workdir: str | Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float | None = 1200,
    merge_output: bool = False,
    activate: bool = True,
) -> subprocess.CompletedProcess:
    """Run this Python's snakemake with `args` in `workdir`.

    Args:
        workdir: the folder Snakemake runs in (a copy from `copy_workflow`).
        *args: snakemake's arguments.
        env: the environment (default: os.environ); `snakemake_env` puts this Python's
            scripts first on its PATH.
        check: raise when snakemake fails.
        timeout: seconds before the run is killed (None: no limit).
        merge_output: capture stderr into stdout (one stream, in order) instead of apart.
        activate: run as from an activated environment (see `snakemake_env`).

    Returns:
        The CompletedProcess, with its output as text.

    Raises:
        LeukoflowError: `check` and snakemake exited non-zero; the message holds the tail
            of its output.
        subprocess.TimeoutExpired: the run took longer than `timeout`.
    """
    result = subprocess.run(
        snakemake_command(*args),
        cwd=workdir,
        env=snakemake_env(env, activate),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise LeukoflowError(
            f"snakemake {' '.join(map(str, args))} failed ({result.returncode}) in {workdir}:\n"
            f"{result.stdout[-4000:]}\n{(result.stderr or '')[-8000:]}"
        )
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: jobs} from the "Job stats" table a snakemake run prints (the target rule `all`
    left out); empty when there is no table (nothing to do).

    Args:
        result: the run, from `run_snakemake` (stdout and stderr are both read).

    Returns:
        The job count of each rule, in the table's order.
    """
    text = result.stdout + (result.stderr or "")
    if "Job stats:" not in text:
        return {}
    jobs = {}
    for line in text.split("Job stats:", 1)[1].splitlines()[3:]:
        match = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not match or match[1] == "total":
            break
        if match[1] != "all":
            jobs[match[1]] = int(match[2])
    return jobs


def job_intervals(log_text: str) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every finished job in a snakemake log, in finishing order.

    Snakemake stamps its log to the second, so the times are whole seconds.

    Args:
        log_text: the text of `.snakemake/log/*.snakemake.log` (or of the run's output).

    Returns:
        One (rule, start, end) per job whose start and finish are both in the log.
    """
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
    started, intervals, now = {}, [], None
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        match = stamp.match(line.strip())
        if match:
            now = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
            continue
        rule = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if rule:
            jobid = next(
                re.search(r"jobid: (\d+)", later)[1] for later in lines[i:] if "jobid:" in later
            )
            started[jobid] = (rule[1], now)
        done = re.search(r"Finished jobid: (\d+)", line)
        if done and done[1] in started:
            name, start = started.pop(done[1])
            intervals.append((name, start, now))
    return intervals
