"""The stain-method registry: one entry per method, everything else derived or checked here.

A new method is one `StainMethod` in `leukoflow.stain.registry` and its module; the schema's
two enums and the README's table cannot import Python, so these tests hold them to it.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from leukoflow.cli import build_parser
from leukoflow.core import settings
from leukoflow.core.errors import ConfigError
from leukoflow.core.settings import SCHEMA_PATH
from leukoflow.data import synth
from leukoflow.evaluate import ablation
from leukoflow.stain.normalize import (
    METHODS,
    fit_reference,
    load_reference,
    normalize,
    save_reference,
)
from leukoflow.stain.registry import METHOD_NAMES, STAIN_METHODS, methods_markdown

README = Path(__file__).parents[3] / "README.md"


def test_the_schema_lists_the_registry_s_methods():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    assert schema["stain"]["properties"]["method"]["enum"] == list(METHOD_NAMES)
    assert schema["ablation"]["properties"]["stain"]["items"]["enum"] == list(METHOD_NAMES)


def test_the_code_derives_its_lists_from_the_registry():
    assert METHODS == METHOD_NAMES == tuple(STAIN_METHODS)
    assert ablation.FACTORS["stain"] == METHOD_NAMES
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with pytest.raises(SystemExit):  # stain-reference's --stain block: the schema's enum
        commands.choices["stain-reference"].parse_args(
            ["s", "--dataset", "d", "--out", "o", "--stain", '{"method": "unknown"}']
        )


def test_the_settings_message_lists_the_registry_s_methods():
    """core/ sits below stain/ (tests/unit/core/test_layout.py): the settings cannot import
    the registry, so their message is checked against it here."""
    with pytest.raises(ConfigError) as error:
        settings.check_config({"ablation": {"stain": ["none"]}, "architectures": {}})
    assert f"stain: {', '.join(METHOD_NAMES)};" in str(error.value)


def test_the_readme_table_is_the_registry_s():
    assert methods_markdown() in README.read_text()
    rows = methods_markdown().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(METHOD_NAMES)


def test_importing_the_registry_imports_no_numpy():
    """The Snakefile imports it (through the ablation and the settings) while planning."""
    code = "import sys, leukoflow.stain.registry; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_method_fits_saves_loads_and_applies(tmp_path):
    images = synth.cells(3, 64, seed=3, subjects=2)[0]
    for name, spec in STAIN_METHODS.items():
        for which in ("fit", "apply", "exposure", "finish"):
            assert not getattr(spec, which) or callable(spec.function(which)), (name, which)
        reference = fit_reference(images, name)
        assert all(key in reference for key in spec.targets), name
        save_reference(reference, tmp_path / f"{name}.json")
        loaded = load_reference(tmp_path / f"{name}.json")
        assert loaded == json.loads(json.dumps(reference))
        out = normalize(images[0], loaded)
        assert out.dtype == np.uint8 and out.shape == images[0].shape
        assert (out == images[0]).all() == (not spec.apply), name
