"""DVC test helpers: the project copied into a temporary git + DVC repository with a local remote.

The copy runs the tiny workflow config (tests/workflow/tiny.yaml) in place of config/demo.yaml,
so dvc.yaml is tested exactly as shipped.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leukoflow.core.workflow_runs import copy_workflow, run_snakemake, snakemake_env

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
# Beside the workflow's own files (copy_workflow): the package and DVC's files.
PROJECT_FILES = ["src", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def environment():
    """os.environ with this Python's scripts first on PATH, no DVC analytics, a git identity."""
    env = snakemake_env()
    env["DVC_NO_ANALYTICS"] = "1"
    for role in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{role}_NAME"] = "leukoflow tests"
        env[f"GIT_{role}_EMAIL"] = "tests@leukoflow.invalid"
    return env


def run(cwd, *command, timeout=900):
    """Run `command` in `cwd`; return its CompletedProcess, raising with its output on failure."""
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"`{' '.join(map(str, command))}` failed ({done.returncode}) in {cwd}:\n"
            f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        )
    return done


def dvc(cwd, *args, timeout=900):
    """Run `dvc ARGS` with this Python."""
    return run(cwd, sys.executable, "-m", "dvc", *args, timeout=timeout)


def snakemake(cwd, *args):
    """Run this environment's snakemake in `cwd`, raising with its output on failure."""
    return run_snakemake(cwd, *args, env=environment(), timeout=900)


def git_commit(cwd, message):
    """Stage everything git does not ignore and commit it."""
    run(cwd, "git", "add", "-A")
    run(cwd, "git", "commit", "--quiet", "--allow-empty", "-m", message)


def file_hashes(root):
    """{relative path: sha256} of every file under `root`."""
    root = Path(root)
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_project(dest, remote):
    """The project in `dest`, a committed git + DVC repository with `remote` as default remote."""
    dest = copy_workflow(REPO, dest, {"demo.yaml": TINY})
    for name in PROJECT_FILES:
        source = REPO / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORE)
        else:
            shutil.copy2(source, target)
    run(dest, "git", "init", "--quiet", "--initial-branch", "main")
    dvc(dest, "remote", "add", "--default", "local", remote)
    git_commit(dest, "project")
    return dest


@pytest.fixture(scope="session")
def dvc_project(tmp_path_factory):
    """(project folder, remote folder): a fresh repository, nothing run yet."""
    base = tmp_path_factory.mktemp("dvc")
    remote = base / "remote"
    return make_project(base / "project", remote), remote
