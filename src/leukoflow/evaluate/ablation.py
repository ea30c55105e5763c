"""The ablation matrix: its factors and levels, and what each combination runs on.

`ablation:` in the config names architectures and, per factor, the levels to compare; every
combination of the listed levels is trained and evaluated for every listed architecture:

- `split`: `subject` (the main split, subject-disjoint) or `random` (image level: the main
  split's subset labels shuffled among the images of each class, so each subset keeps its
  size and class mix while a subject's images spread over several subsets: leakage);
- `stain` (`stain.method`): the stain methods of `leukoflow.stain.registry` (`none`,
  `reinhard`, `macenko`);
- `augmentation`: `offline` (the class-balanced augmented store, no online augmentation),
  `online` (online augmentation layers, class weights for the imbalance) or `none` (class
  weights, no augmentation).

Names and places. A combination is named by its levels in the factor order above, e.g.
`split-random_stain-none`. Factors the ablation does not list stay at the main run's
setting. The models and evaluations of an architecture under a combination live in a run
named by all three factors' levels, the unlisted ones the main run's, e.g.
`ablation/split-random_stain-macenko_augmentation-offline` (`results/ablation/{run}/train/
{arch}/...`), so adding a factor or a level never renames a run that exists. A combination
whose levels are all the main run's for an architecture is the main run: its model and
evaluation are the main run's, nothing is retrained. The data (stain reference and stores)
depend on the split and the stain method only, so they live in a data variant shared by
every run with those two levels: `main` when they are the main run's, else
`ablation/data/{split}-{stain}`.

Only string handling and dicts here: the Snakefile calls these functions for every job it
plans.
"""

import itertools
from collections.abc import Mapping

from leukoflow.core.errors import ConfigError
from leukoflow.core.settings import deep_merge, merged_settings
from leukoflow.stain.registry import METHOD_NAMES as STAIN_METHOD_NAMES

FACTORS = {
    "split": ("subject", "random"),
    "stain": STAIN_METHOD_NAMES,
    "augmentation": ("offline", "online", "none"),
}
# What each augmentation level sets in an architecture's training settings.
AUGMENTATION = {
    "offline": {"balance": "augmented_store", "online_augmentation": {"enabled": False}},
    "online": {"balance": "class_weights", "online_augmentation": {"enabled": True}},
    "none": {"balance": "class_weights", "online_augmentation": {"enabled": False}},
}
RUNS = "ablation/"
DATA = "ablation/data/"


def factors(config: Mapping) -> dict[str, list[str]]:
    """The factors of the configured ablation and their levels.

    Args:
        config: the validated workflow configuration.

    Returns:
        {factor: levels} in `FACTORS` order, the factors the ablation lists; {} when off.
    """
    block = config.get("ablation") or {}
    return {f: list(block[f]) for f in FACTORS if block.get(f)}


def architectures(config: Mapping) -> list[str]:
    """The architectures of the configured ablation.

    Args:
        config: the validated workflow configuration.

    Returns:
        Their names in config order; [] when the ablation is off.
    """
    return list((config.get("ablation") or {}).get("architectures") or [])


def combination_name(levels: Mapping[str, str]) -> str:
    """The name of a combination of levels.

    Args:
        levels: {factor: level} of some or all factors.

    Returns:
        `factor-level` pairs joined by `_`, in `FACTORS` order: `split-random_stain-none`.
    """
    return "_".join(f"{f}-{levels[f]}" for f in FACTORS if f in levels)


def parse_name(name: str) -> dict[str, str]:
    """The levels of a combination name (`combination_name`'s inverse).

    Args:
        name: a combination's name, e.g. `split-random_stain-none`.

    Returns:
        {factor: level}.

    Raises:
        ConfigError: for a part that is not a known factor and one of its levels.
    """
    levels = {}
    for part in name.split("_"):
        factor, _, level = part.partition("-")
        if level not in FACTORS.get(factor, ()):
            raise ConfigError(
                f"ablation: {part!r} in {name!r} is not a factor and level; allowed: "
                + "; ".join(f"{f}: {', '.join(levels)}" for f, levels in FACTORS.items())
            )
        levels[factor] = level
    return levels


def combinations(config: Mapping) -> list[dict[str, str]]:
    """Every combination of the configured levels.

    Args:
        config: the validated workflow configuration.

    Returns:
        One {factor: level} per combination, the first factor's levels varying slowest.
    """
    grid = factors(config)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def augmentation_level(settings: Mapping) -> str | None:
    """The augmentation level an architecture's settings amount to.

    Args:
        settings: an architecture's merged settings (`balance`, `online_augmentation`).

    Returns:
        The level of `AUGMENTATION` whose settings they have, or None when they are no level
        (e.g. the augmented store and online augmentation together).
    """
    online = bool((settings.get("online_augmentation") or {}).get("enabled"))
    for level, overrides in AUGMENTATION.items():
        if (
            settings.get("balance") == overrides["balance"]
            and online == (overrides["online_augmentation"]["enabled"])
        ):
            return level
    return None


def main_levels(config: Mapping, arch: str) -> dict[str, str | None]:
    """The level of every factor in the main run of one architecture.

    Args:
        config: the validated workflow configuration.
        arch: an architecture run.

    Returns:
        {split: "subject", stain: the stain method, augmentation: its level or None}.
    """
    return {
        "split": "subject",
        "stain": config["stain"]["method"],
        "augmentation": augmentation_level(merged_settings(config, arch)),
    }


def run_of(config: Mapping, levels: Mapping[str, str], arch: str) -> str:
    """The run that holds the model of an architecture under a combination.

    Args:
        config: the validated workflow configuration.
        levels: the combination, {factor: level}.
        arch: an architecture run.

    Returns:
        `main` when the levels are the main run's, else `ablation/{name}` with every
        factor's level in the name (the unlisted ones the main run's).
    """
    main = main_levels(config, arch)
    if all(main[f] == level for f, level in levels.items()):
        return "main"
    full = {f: level for f, level in {**main, **levels}.items() if level is not None}
    return RUNS + combination_name(full)


def data_levels(config: Mapping, run: str) -> tuple[str, str]:
    """The split level and stain method of a run or a data variant.

    Args:
        config: the validated workflow configuration.
        run: `main`, `fold{k}`, `ablation/{name}` or `ablation/data/{split}-{stain}`.

    Returns:
        (split level, stain method).

    Raises:
        ConfigError: for an ablation run whose name is not one of levels.
    """
    if run.startswith(DATA):
        split, _, stain = run[len(DATA) :].partition("-")
        return split, stain
    levels = parse_name(run[len(RUNS) :]) if run.startswith(RUNS) else {}
    return levels.get("split", "subject"), levels.get("stain", config["stain"]["method"])


def data_of(config: Mapping, run: str) -> str:
    """The data variant (stain reference and stores) of a run.

    Args:
        config: the validated workflow configuration.
        run: `main`, `fold{k}` or `ablation/{name}`.

    Returns:
        `main` or `fold{k}` for those runs, and for an ablation run `main` when its split and
        stain method are the main run's, else `ablation/data/{split}-{stain}`.
    """
    if not run.startswith(RUNS):
        return run
    split, stain = data_levels(config, run)
    if (split, stain) == ("subject", config["stain"]["method"]):
        return "main"
    return f"{DATA}{split}-{stain}"


def run_settings(config: Mapping, run: str, arch: str) -> dict:
    """The settings of an architecture in a run.

    Args:
        config: the validated workflow configuration.
        run: `main`, `fold{k}` or `ablation/{name}`.
        arch: an architecture run.

    Returns:
        Its merged settings, in an ablation run with the overrides of the run's
        augmentation level (`AUGMENTATION`).
    """
    settings = merged_settings(config, arch)
    if run.startswith(RUNS) and not run.startswith(DATA):
        level = parse_name(run[len(RUNS) :]).get("augmentation")
        if level is not None:
            settings = deep_merge(settings, AUGMENTATION[level])
    return settings


def plan(config: Mapping) -> list[dict]:
    """Every (architecture, combination) of the ablation and the run that holds it.

    Args:
        config: the validated workflow configuration.

    Returns:
        [{architecture, combination, levels, run}], architecture by architecture.
    """
    return [
        {
            "architecture": arch,
            "combination": combination_name(levels),
            "levels": levels,
            "run": run_of(config, levels, arch),
        }
        for arch in architectures(config)
        for levels in combinations(config)
    ]


def reference_levels(config: Mapping, arch: str) -> dict[str, str]:
    """The level each factor's effect is measured against, for one architecture.

    Args:
        config: the validated workflow configuration.
        arch: an architecture of the ablation.

    Returns:
        {factor: level}: the main run's level when the ablation lists it, else the factor's
        first listed level.
    """
    main = main_levels(config, arch)
    return {f: main[f] if main[f] in levels else levels[0] for f, levels in factors(config).items()}
