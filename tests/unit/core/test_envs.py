"""The conda environment the rules name stays in step with pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def names(requirements):
    """Lower-case package names of requirement strings, without versions or extras."""
    return {re.split(r"[<>=!\[ ]", item, maxsplit=1)[0].lower() for item in requirements}


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "leukoflow.yaml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_names = names(conda) - {"python", "pip"}
    # what conda-forge lacks comes from pip
    pip_only = names(pip) - {"tensorflow", "tf2onnx", "onnx", "-e"}
    assert conda_names | pip_only == names(project["dependencies"])
    assert not conda_names & pip_only
    assert "tensorflow" in names(pip)
    assert "-e ../" in pip  # the package itself, from this checkout


def test_every_rule_names_the_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = len(re.findall(r"^rule \w+:", text, flags=re.M))
        assert text.count("conda:\n        ENV") == rules, smk.name
