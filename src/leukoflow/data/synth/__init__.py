"""Synthetic cells: the one place they are drawn, and the C-NMC-shaped dataset made of them.

- `leukoflow.data.synth.render`: how one cell is drawn (`subject_style`, `render_cell`);
- `leukoflow.data.synth.samples`: `n` cells as arrays (`cells`), BMP files (`write_cells`) or an
  image store (`write_store`), for benchmarks and tests;
- `leukoflow.data.synth.dataset`: the synthetic C-NMC 2019 layout (`generate_dataset`), what
  `leukoflow synth` and the workflow's `synth` rule write.
"""

from leukoflow.data.synth.dataset import (
    PRELIM_DIR,
    PRELIM_LABELS,
    describe_settings,
    generate_dataset,
    plan_subjects,
    plan_tasks,
)
from leukoflow.data.synth.render import ABSORBERS, MORPHOLOGY, render_cell, subject_style
from leukoflow.data.synth.samples import cells, write_cells, write_store

__all__ = [
    "ABSORBERS",
    "MORPHOLOGY",
    "PRELIM_DIR",
    "PRELIM_LABELS",
    "cells",
    "describe_settings",
    "generate_dataset",
    "plan_subjects",
    "plan_tasks",
    "render_cell",
    "subject_style",
    "write_cells",
    "write_store",
]
