"""The package's folders are the workflow's stages: a rule file's name says where its code is.

A rule in `workflow/rules/X.smk` calls `leukoflow` subcommands registered by `cli/X.py`, whose
library code lives in `src/leukoflow/X/`; the unit tests mirror the same folders; and no
module imports one from a layer above it.
"""

import argparse
import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import leukoflow
import leukoflow.cli

REPO = Path(__file__).resolve().parents[3]
PACKAGE = Path(leukoflow.__file__).parent
RULE_FILES = sorted(p for p in (REPO / "workflow" / "rules").glob("*.smk") if p.stem != "common")
# Folders that are not a stage of the workflow: what every stage uses, the models the model
# stages share, and the entry points.
SHARED_FOLDERS = {"core", "models", "bench", "cli"}
# Import layers, lowest first: a module may import its own layer and the ones below. The
# settings read the architecture registry; synthetic cells are written as stores.
LAYERS = (
    {"core", "models"},
    {"data", "stain"},
    {"augment", "train", "evaluate"},
    {"deploy"},
    {"report"},
    {"bench", "cli"},
)


def subcommands_of(module: str) -> set[str]:
    """The subcommands one module of `leukoflow.cli` registers."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"leukoflow.cli.{module}").register(subparsers)
    return set(subparsers.choices)


def test_the_package_top_holds_only_folders():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py"], f"modules outside a stage folder: {modules}"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_a_rule_files_code_lives_in_the_folder_of_its_name(rule_file):
    stage = rule_file.stem
    assert (PACKAGE / stage / "__init__.py").is_file(), f"no package folder leukoflow/{stage}/"
    commands = set(re.findall(r'"leukoflow ([a-z][a-z-]*)', rule_file.read_text()))
    assert commands, f"{rule_file.name} calls no leukoflow subcommand"
    assert commands <= subcommands_of(stage), (
        f"{rule_file.name} calls {sorted(commands - subcommands_of(stage))}, "
        f"not registered by cli/{stage}.py"
    )


def test_every_folder_is_a_stage_or_shared_and_tests_mirror_them():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    stages = {p.stem for p in RULE_FILES}
    assert folders == stages | SHARED_FOLDERS
    cli_modules = {m.name for m in pkgutil.iter_modules(leukoflow.cli.__path__)}
    assert stages <= cli_modules
    test_folders = {p.name for p in (REPO / "tests" / "unit").iterdir() if p.is_dir()}
    assert test_folders - {"__pycache__"} <= folders


def imported_folders(path: Path) -> set[str]:
    """The leukoflow folders a module imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "leukoflow" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


def test_no_module_imports_a_layer_above_its_own():
    level = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}
    upward = []
    for path in PACKAGE.glob("*/**/*.py"):
        folder = path.relative_to(PACKAGE).parts[0]
        for other in imported_folders(path):
            if level[other] > level[folder]:
                upward.append(f"{path.relative_to(PACKAGE)} imports leukoflow.{other}")
    assert not upward, "imports upwards:\n" + "\n".join(sorted(upward))
