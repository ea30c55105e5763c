"""The stain-method registry: one entry per stain normalisation method.

Importing this module imports nothing but the standard library: the Snakefile reads the
method names from it (the ablation's levels, the config checks) while planning. `fit` and
`apply` are dotted paths to the functions that implement a method;
`leukoflow.stain.normalize` imports them when an image is normalised. The schema's enums
and the README's table cannot import Python: a test checks them against `STAIN_METHODS`.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StainMethod:
    """What the workflow needs to know about one stain normalisation method.

    Each function is named "module:function". `fit` takes (uint8 pixels (N, 3), their
    brightest channel (N,), the counted pixels bool (N,) or None without the mask, the
    parameters, the reference's `brightness` or None) to one image's estimate, a dict of
    arrays named by `targets`; `fit_reference` keeps their medians, passed through
    `finish` when the method has one. `apply` takes (the pixels, their brightest channel,
    the counted pixels, the reference) to float32 (3, N) pixels in [0, 255]. Both raise
    `DegenerateStainError` for an image they cannot estimate. `exposure`, mask-aware,
    takes (brightest, counted, parameters) to an image's exposure, whose median over the
    fitted images the reference keeps as `brightness`. A method without `fit` (`none`)
    leaves images as they are.
    """

    name: str
    summary: str  # one line for the README's table
    targets: tuple[str, ...] = ()  # what its reference holds beside `method` and `params`
    mask_aware: bool = False  # whether `mask: true` changes its estimate (background, rim)
    fit: str = ""  # the per-image estimate
    apply: str = ""  # the transform
    exposure: str = ""  # the image's exposure, mask-aware (the reference's `brightness`)
    finish: str = ""  # the reference's targets from the medians of the estimates
    defaults: tuple[tuple[str, float], ...] = ()  # its parameters, without the mask
    masked_defaults: tuple[tuple[str, float], ...] = ()  # with the mask, when they differ

    def function(self, which: str) -> Callable:
        """The function named by `fit` or `apply`, imported."""
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


_MACENKO = (("io", 240), ("alpha", 1.0), ("beta", 0.15))  # torchstain's

STAIN_METHODS = {
    method.name: method
    for method in [
        StainMethod("none", "no normalisation: the cell as it is"),
        StainMethod(
            "reinhard",
            "LAB means and standard deviations of the cell matched to the reference's",
            targets=("lab_means", "lab_stds"),
            mask_aware=True,
            fit="leukoflow.stain.reinhard:fit",
            apply="leukoflow.stain.reinhard:apply",
        ),
        StainMethod(
            "macenko",
            "two stain vectors and their concentrations (Beer-Lambert) put on the reference's",
            targets=("stain_matrix", "max_concentrations"),
            mask_aware=True,
            fit="leukoflow.stain.macenko:fit",
            apply="leukoflow.stain.macenko:apply",
            exposure="leukoflow.stain.macenko:brightness",
            finish="leukoflow.stain.macenko:unit_columns",
            defaults=_MACENKO,
            masked_defaults=(*_MACENKO, ("io_percentile", 99.0)),
        ),
    ]
}
METHOD_NAMES = tuple(STAIN_METHODS)


def methods_markdown() -> str:
    """The README's table of stain methods, one row per registry entry."""
    rows = [
        "| `stain.method` | what it does | its reference holds | mask-aware |",
        "|---|---|---|---|",
    ]
    for method in STAIN_METHODS.values():
        holds = [*method.targets, *(["brightness (mask-aware)"] if method.exposure else [])]
        rows.append(
            f"| `{method.name}` | {method.summary} | {', '.join(holds) or 'nothing'} | "
            f"{'yes' if method.mask_aware else 'no'} |"
        )
    return "\n".join(rows) + "\n"


def get_method(name: str) -> StainMethod:
    """The registry entry of stain method `name`.

    Raises:
        LeukoflowError: listing the known methods when `name` is not one.
    """
    from leukoflow.core.errors import LeukoflowError

    if name not in STAIN_METHODS:
        raise LeukoflowError(f"unknown stain method {name!r}; allowed: {', '.join(STAIN_METHODS)}")
    return STAIN_METHODS[name]
