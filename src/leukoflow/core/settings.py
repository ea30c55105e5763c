"""Configuration checks the JSON schema cannot express, per-architecture settings, ensembles.

Imported by the Snakefile while planning, so it does not import Keras.
"""

import copy
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from leukoflow.core.errors import ConfigError
from leukoflow.models.registry import ARCHITECTURES

# The one place every default is written: the Snakefile validates the config against it, and
# a command run without its config block gets the block's defaults from it (`config_block`).
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


def deep_merge(base: Mapping, overrides: Mapping | None) -> dict:
    """A copy of `base` with `overrides` applied; nested mappings merge key by key.

    Args:
        base: the defaults (not modified).
        overrides: the values that replace them; None or empty changes nothing.

    Returns:
        A deep copy: changing it changes neither argument.
    """
    merged = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@functools.cache
def _schema() -> dict:
    """config/schema.yaml, read once."""
    if not SCHEMA_PATH.is_file():
        raise ConfigError(
            f"{SCHEMA_PATH}: the configuration schema is missing; run leukoflow from its "
            "repository (pip install -e .), where config/schema.yaml lives"
        )
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(schema: Mapping, value: dict) -> dict:
    """`value` with the schema's defaults filled in where keys are missing, nested objects too."""
    for key, prop in schema.get("properties", {}).items():
        if key not in value and "default" in prop:
            value[key] = copy.deepcopy(prop["default"])
        if isinstance(value.get(key), dict) and "properties" in prop:
            _fill_defaults(prop, value[key])
    return value


def config_block(block: str, given: Mapping | None = None) -> dict:
    """One block of the configuration, checked and filled by config/schema.yaml.

    What a step's command gets as its JSON (the rule passes the block the Snakefile's
    validation filled); a command run by hand without it gets the schema's defaults.

    Args:
        block: a key of the schema (`augment`, `split`, `timing`, ...; a nested one with
            dots: `dataset.synthetic`).
        given: the block's values (None: none, every key its default).

    Returns:
        A new dict: `given` with every missing key's default.

    Raises:
        ConfigError: `block` is not in the schema, or `given` breaks it (the message names
            the key and what the schema allows).
    """
    import jsonschema

    schema = node = _schema()
    for key in block.split("."):
        if key not in node.get("properties", {}):
            raise ConfigError(
                f"{SCHEMA_PATH}: no block {block!r}; blocks: {', '.join(schema['properties'])}"
            )
        node = node["properties"][key]
    block_schema = {**node, "definitions": schema["definitions"]}
    value = copy.deepcopy(dict(given or {}))
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(block_schema).iter_errors(value)
    )
    if error is not None:
        where = ".".join([block, *map(str, error.absolute_path)])
        raise ConfigError(f"{where}: {error.message} (see {SCHEMA_PATH.name})")
    return _fill_defaults(block_schema, value)


def schema_defaults(block: str) -> dict:
    """Every default of one block of config/schema.yaml (`config_block(block)`)."""
    return config_block(block)


def merged_settings(config: Mapping, arch: str) -> dict:
    """The `training` block updated by `architectures[arch]`, native size filled in.

    This is exactly what the architecture's jobs get as `params`, so changing one
    architecture's block changes only its jobs' params.

    Args:
        config: the validated workflow configuration.
        arch: an architecture named under `architectures`.

    Returns:
        The merged settings; `input_size` is the architecture's native size when not set,
        and `architecture` is `arch`.
    """
    settings = deep_merge(config["training"], config["architectures"][arch])
    if settings.get("input_size") is None:
        settings["input_size"] = ARCHITECTURES[arch].native_size
    settings["architecture"] = arch
    return settings


def arch_config_hash(config: Mapping, arch: str) -> str:
    """A short, stable hash of what one architecture's model depends on.

    The data blocks (dataset, split, cv, stain, augment) and that architecture's merged
    settings: changing another architecture does not change it.

    Args:
        config: the validated workflow configuration.
        arch: an architecture named under `architectures`.

    Returns:
        16 hexadecimal digits (the start of a SHA-256).
    """
    relevant = {key: config.get(key) for key in ("dataset", "split", "cv", "stain", "augment")}
    relevant["settings"] = merged_settings(config, arch)
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensembles(config: Mapping) -> dict[str, dict]:
    """The ensembles of a run: {name: {"method", "members"}}.

    `ensembles` unset (null) means one mean ensemble, `Ensemble`, of every architecture run;
    `{}` means none; an ensemble without `members` holds every architecture run. An
    ensemble of every architecture is left out when fewer than two run (one listing its
    members is checked by `check_config` instead).

    Args:
        config: the validated workflow configuration.

    Returns:
        The ensembles in config order, members in config order when not listed.
    """
    archs = list(config["architectures"])
    configured = config.get("ensembles")
    if configured is None:
        configured = {"Ensemble": {"method": "mean"}}
    out = {}
    for name, spec in configured.items():
        spec = spec or {}
        if not spec.get("members") and len(archs) < 2:
            continue
        out[name] = {
            "method": spec.get("method", "mean"),
            "members": list(spec.get("members") or archs),
        }
    return out


def ensemble_config_hash(config: Mapping, name: str) -> str:
    """A short, stable hash of an ensemble: its method and its members' hashes.

    Args:
        config: the validated workflow configuration.
        name: an ensemble of `ensembles(config)`.

    Returns:
        16 hexadecimal digits (the start of a SHA-256).
    """
    spec = ensembles(config)[name]
    relevant = {**spec, "members": {m: arch_config_hash(config, m) for m in spec["members"]}}
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_members(config, key, names):
    """ConfigError naming `key` when a name in `names` is not an architecture of the run."""
    archs = list(config["architectures"])
    unknown = [name for name in names if name not in archs]
    if unknown:
        raise ConfigError(
            f"{key}: {', '.join(map(repr, unknown))} not among the architectures run; "
            f"allowed: {', '.join(archs)}"
        )


def _check_ensembles(config):
    """Names that are not architectures' names, two or more members, all of them run."""
    for name, spec in ensembles(config).items():
        if name in ARCHITECTURES:
            raise ConfigError(
                f"ensembles: {name!r} is an architecture's name; name the ensemble otherwise "
                "(its bundle goes to results/models/NAME beside the architectures')"
            )
        _check_members(config, f"ensembles.{name}.members", spec["members"])
        if len(spec["members"]) < 2:
            raise ConfigError(
                f"ensembles.{name}.members: {spec['members']} is one architecture; an ensemble "
                "needs two or more (the architectures run: "
                f"{', '.join(config['architectures'])})"
            )


def _check_ablation(config):
    """Architectures that are run, and factors named together with them."""
    block = config.get("ablation") or {}
    archs = block.get("architectures") or []
    listed = [f for f in ("split", "stain", "augmentation") if block.get(f)]
    _check_members(config, "ablation.architectures", archs)
    if bool(archs) != bool(listed):
        raise ConfigError(
            "ablation: give both `architectures` and the levels of at least one factor "
            "(split: subject, random; stain: none, reinhard, macenko; augmentation: offline, "
            "online, none), or neither"
        )


def _check_referral(evaluate: Mapping) -> None:
    """Referral by uncertainty needs one computed: MC dropout or several test-time views."""
    several_views = str(evaluate.get("tta", "none")) not in ("none", "0", "1")
    by = (evaluate.get("referral") or {}).get("by", "probability")
    if by == "uncertainty" and not (evaluate.get("mc_dropout") or several_views):
        raise ConfigError(
            "evaluate.referral.by: uncertainty needs a per-cell uncertainty: set "
            "evaluate.mc_dropout to a pass count (e.g. 8) or evaluate.tta to dihedral"
        )


def check_config(config: Mapping, base_dir: str | Path = ".") -> None:
    """Check what the schema cannot: architectures, weights, sizes, folds, dataset folder.

    Args:
        config: the configuration, already validated (and filled) by the schema.
        base_dir: the folder `dataset.path` is relative to.

    Raises:
        ConfigError: naming the key and the allowed values, for an unknown architecture,
            `weights: imagenet` for an architecture without ImageNet weights, an
            `input_size` below the architecture's minimum, `cv.folds: 1`, a missing
            `dataset.path` folder with `dataset.source: folder`, an ensemble named like
            an architecture or holding one that is not run (or only one), an ablation
            of architectures that are not run or without a factor, or referral by
            uncertainty without one computed.
    """
    unknown = [name for name in config["architectures"] if name not in ARCHITECTURES]
    if unknown:
        raise ConfigError(
            f"architectures: unknown architecture(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(ARCHITECTURES)}"
        )
    for arch in config["architectures"]:
        settings = merged_settings(config, arch)
        if settings["weights"] == "imagenet" and not ARCHITECTURES[arch].pretrained:
            raise ConfigError(
                f"architectures.{arch}.weights: {arch} has no ImageNet weights; "
                "allowed: 'none' or the path of a weights file"
            )
        minimum = ARCHITECTURES[arch].min_size
        if settings["input_size"] < minimum:
            raise ConfigError(
                f"architectures.{arch}.input_size: {settings['input_size']} is too small; "
                f"{arch} needs at least {minimum} pixels"
            )
    _check_ensembles(config)
    _check_ablation(config)
    _check_referral(config.get("evaluate") or {})
    if config["cv"]["folds"] == 1:
        raise ConfigError("cv.folds: 1 is not cross-validation; allowed: 0 (off) or 2 and more")
    dataset = config["dataset"]
    if dataset["source"] == "folder" and not (Path(base_dir) / dataset["path"]).is_dir():
        raise ConfigError(
            f"dataset.path: folder {dataset['path']!r} does not exist; put the C-NMC 2019 data "
            "there (see README, 'Using the real C-NMC 2019 data') or set dataset.source: synthetic"
        )
