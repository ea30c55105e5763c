"""Config blocks reach every command one way: the JSON the schema filled, its defaults
written once, in config/schema.yaml."""

import dataclasses
import inspect
import json

import pytest
import yaml

from leukoflow.cli import build_parser, main
from leukoflow.core.errors import ConfigError
from leukoflow.core.settings import SCHEMA_PATH, config_block

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]

# A command run by hand without its JSON, and the blocks it then takes from the schema
COMMANDS = {
    ("synth", "out"): ["dataset.synthetic"],
    ("augment", "train.npy", "--out", "a.npy", "--index", "a.csv"): ["augment"],
    ("split", "manifest.csv", "--out", "s.csv"): ["split", "cv"],
    ("split-random", "s.csv", "--out", "r.csv"): ["split"],
    ("timing", "--model", "m.keras", "--out", "t.json"): ["timing"],
    ("evaluate", "--model", "m.keras", "--val", "v.npy", "--test", "t.npy",
     "--metrics", "m.json", "--val-predictions", "v.csv", "--test-predictions", "t.csv"):
        ["evaluate"],
    ("saliency", "--model", "m.keras", "--test", "t.npy", "--measures", "s.json",
     "--figure", "s.png"): ["saliency"],
    ("ablation", "--plan", "{}", "--metrics", "m.json", "--predictions", "p.csv",
     "--effects", "e.csv", "--combinations", "c.csv", "--markdown", "e.md"): ["evaluate"],
}  # fmt: skip


def written_defaults(block):
    """The defaults config/schema.yaml writes for `block` (nested: `dataset.synthetic`), read
    here on their own."""
    node = {"properties": SCHEMA}
    for key in block.split("."):
        node = node["properties"][key]
    defaults = {}
    for key, prop in node["properties"].items():
        value = prop["default"]
        if "properties" in prop:  # a nested block (evaluate.referral): its own defaults
            value = {k: p["default"] for k, p in prop["properties"].items()}
        defaults[key] = value
    return defaults


@pytest.mark.parametrize("argv", list(COMMANDS), ids=[argv[0] for argv in COMMANDS])
def test_a_command_run_without_its_json_gets_the_schema_defaults(argv):
    args = build_parser().parse_args(list(argv))
    for block in COMMANDS[argv]:
        assert getattr(args, block.split(".")[-1]) == written_defaults(block), block


def test_keys_left_out_get_their_defaults_and_a_bad_value_is_named(tmp_path, capsys):
    assert config_block("timing", {"calls": 60}) == {**written_defaults("timing"), "calls": 60}
    partial = config_block("evaluate", {"referral": {"metric": "npv"}})
    assert partial["referral"] == {"by": "probability", "metric": "npv", "target": 0.95}
    with pytest.raises(ConfigError, match=r"augment\.brightness: 2 is greater than the maximum"):
        config_block("augment", {"brightness": 2})
    with pytest.raises(ConfigError, match="'rotate' was unexpected"):
        config_block("augment", {"rotate": False})
    argv = ["timing", "--model", "m.keras", "--timing", json.dumps({"calls": 10})]
    assert main([*argv, "--out", str(tmp_path / "t.json")]) == 2
    assert "argument --timing: timing.calls: 10 is less than the minimum of 50" in (
        capsys.readouterr().err
    )


def test_the_library_defaults_are_the_schema_defaults():
    """Where a library function keeps a default of its own (for callers outside the
    workflow), it is the schema's."""
    from leukoflow.augment.offline import augment_store
    from leukoflow.augment.transforms import AugmentSpec
    from leukoflow.data.split import make_split
    from leukoflow.data.synth import generate_dataset
    from leukoflow.evaluate.timing import time_model

    augment = written_defaults("augment")
    assert {f.name: f.default for f in dataclasses.fields(AugmentSpec)} == {
        f.name: augment[f.name] for f in dataclasses.fields(AugmentSpec)
    }
    store = inspect.signature(augment_store).parameters
    for key in ("seed", "balance", "copies_per_image"):
        assert store[key].default == augment[key], key
    split = written_defaults("split")
    parameters = inspect.signature(make_split).parameters
    for key in ("seed", "val_fraction", "test_fraction", "train_folds", "val_folds", "test_folds"):
        default = parameters[key].default
        assert (list(default) if isinstance(default, tuple) else default) == split[key], key
    for function, block in (
        (generate_dataset, "dataset.synthetic"),
        (time_model, "timing"),
    ):
        parameters = inspect.signature(function).parameters
        for key, value in written_defaults(block).items():
            assert parameters[key].default == value, (block, key)


def test_referral_by_uncertainty_needs_an_uncertainty():
    from leukoflow.core.settings import _check_referral

    by_uncertainty = {"referral": {"by": "uncertainty"}}
    for enough in ({"mc_dropout": 8}, {"tta": "dihedral"}, {"tta": 4}):
        _check_referral({**by_uncertainty, **enough})
    for too_little in ({"mc_dropout": 0, "tta": "none"}, {"tta": 1}):
        with pytest.raises(ConfigError, match="evaluate.referral.by: uncertainty needs"):
            _check_referral({**by_uncertainty, **too_little})
    _check_referral({"mc_dropout": 0})  # by probability: nothing needed
