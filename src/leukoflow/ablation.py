"""The ablation matrix: its factors and levels, and what each combination runs on.

`ablation:` in the config names architectures and, per factor, the levels to compare; every
combination of the listed levels is trained and evaluated for every listed architecture:

- `split`: `subject` (the main split, subject-disjoint) or `random` (image level: the main
  split's subset labels shuffled among the images of each class, so each subset keeps its
  size and class mix while a subject's images spread over several subsets: leakage);
- `stain` (`stain.method`): `none`, `reinhard` or `macenko`;
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

from leukoflow.errors import ConfigError
from leukoflow.settings import deep_merge, merged_settings

FACTORS = {
    "split": ("subject", "random"),
    "stain": ("none", "reinhard", "macenko"),
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
    """{factor: levels} of the configured ablation, in `FACTORS` order ({} when off)."""
    block = config.get("ablation") or {}
    return {f: list(block[f]) for f in FACTORS if block.get(f)}


def architectures(config: Mapping) -> list[str]:
    """The architectures of the configured ablation ([] when off)."""
    return list((config.get("ablation") or {}).get("architectures") or [])


def combination_name(levels: Mapping[str, str]) -> str:
    """`factor-level` pairs joined by `_`, in `FACTORS` order: `split-random_stain-none`."""
    return "_".join(f"{f}-{levels[f]}" for f in FACTORS if f in levels)


def parse_name(name: str) -> dict[str, str]:
    """The levels of a combination name (`combination_name`'s inverse).

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
    """Every combination of the configured levels, as {factor: level}, the first factor's
    levels varying slowest."""
    grid = factors(config)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def augmentation_level(settings: Mapping) -> str | None:
    """The augmentation level an architecture's merged settings amount to, or None when they
    are no level (e.g. the augmented store and online augmentation together)."""
    online = bool((settings.get("online_augmentation") or {}).get("enabled"))
    for level, overrides in AUGMENTATION.items():
        if (
            settings.get("balance") == overrides["balance"]
            and online == (overrides["online_augmentation"]["enabled"])
        ):
            return level
    return None


def main_levels(config: Mapping, arch: str) -> dict[str, str | None]:
    """The level of every factor in the main run of `arch`."""
    return {
        "split": "subject",
        "stain": config["stain"]["method"],
        "augmentation": augmentation_level(merged_settings(config, arch)),
    }


def run_of(config: Mapping, levels: Mapping[str, str], arch: str) -> str:
    """The run holding the model of `arch` under `levels`: `main`, or `ablation/{name}` with
    every factor's level in the name (the unlisted ones the main run's)."""
    main = main_levels(config, arch)
    if all(main[f] == level for f, level in levels.items()):
        return "main"
    full = {f: level for f, level in {**main, **levels}.items() if level is not None}
    return RUNS + combination_name(full)


def data_levels(config: Mapping, run: str) -> tuple[str, str]:
    """(split level, stain method) of a run (`main`, `fold{k}`, `ablation/{name}`) or of a
    data variant (`ablation/data/{split}-{stain}`)."""
    if run.startswith(DATA):
        split, _, stain = run[len(DATA) :].partition("-")
        return split, stain
    levels = parse_name(run[len(RUNS) :]) if run.startswith(RUNS) else {}
    return levels.get("split", "subject"), levels.get("stain", config["stain"]["method"])


def data_of(config: Mapping, run: str) -> str:
    """The data variant (stain reference and stores) of a run: `main`, `fold{k}` or
    `ablation/data/{split}-{stain}`."""
    if not run.startswith(RUNS):
        return run
    split, stain = data_levels(config, run)
    if (split, stain) == ("subject", config["stain"]["method"]):
        return "main"
    return f"{DATA}{split}-{stain}"


def run_settings(config: Mapping, run: str, arch: str) -> dict:
    """The settings of `arch` in `run`: its merged settings, and in an ablation run the
    overrides of the run's augmentation level."""
    settings = merged_settings(config, arch)
    if run.startswith(RUNS) and not run.startswith(DATA):
        level = parse_name(run[len(RUNS) :]).get("augmentation")
        if level is not None:
            settings = deep_merge(settings, AUGMENTATION[level])
    return settings


def plan(config: Mapping) -> list[dict]:
    """Every (architecture, combination) of the ablation and the run that holds it.

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
    """The level each factor's effect is measured against: the main run's when the ablation
    lists it, else the factor's first listed level."""
    main = main_levels(config, arch)
    return {f: main[f] if main[f] in levels else levels[0] for f, levels in factors(config).items()}
