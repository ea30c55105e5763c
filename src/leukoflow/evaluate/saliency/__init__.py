"""Saliency maps of test cells (the paper's Fig. 1), measured as well as drawn.

- `leukoflow.evaluate.saliency.maps`: vanilla gradient, SmoothGrad, Integrated Gradients, Grad-CAM,
  through one backend dispatch of input gradients (`gradient_function`);
- `leukoflow.evaluate.saliency.measures`: mass in the cell, deletion AUC, the model-randomisation
  sanity check (`measure`, `measures_of`);
- `leukoflow.evaluate.saliency.job`: the `saliency` job (`run_saliency`).
"""

from leukoflow.evaluate.saliency.job import run_saliency, saliency_figure, select_cells
from leukoflow.evaluate.saliency.maps import (
    EPS,
    METHODS,
    gradcam,
    gradient_function,
    integrated_gradients,
    saliency_maps,
    smoothgrad,
    vanilla,
)
from leukoflow.evaluate.saliency.measures import (
    SANITY_LIMIT,
    cell_masks,
    deletion_auc,
    deletion_images,
    mass_in_cell,
    measure,
    measures_of,
    randomised_copy,
    rank_correlation,
)

__all__ = [
    "EPS",
    "METHODS",
    "SANITY_LIMIT",
    "cell_masks",
    "deletion_auc",
    "deletion_images",
    "gradcam",
    "gradient_function",
    "integrated_gradients",
    "mass_in_cell",
    "measure",
    "measures_of",
    "randomised_copy",
    "rank_correlation",
    "run_saliency",
    "saliency_figure",
    "saliency_maps",
    "select_cells",
    "smoothgrad",
    "vanilla",
]
