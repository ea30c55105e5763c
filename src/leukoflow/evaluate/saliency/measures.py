"""Saliency measured, not just drawn: mass in the cell, deletion, the randomisation check.

Per method, mean over the cells:
- `mass_in_cell`: share of saliency mass on cell pixels (non-black), against
  `cell_area` (what a uniform map would get);
- `deletion_auc`: mean probability of the true class while the most salient pixels are
  blacked out in 16 steps (lower = the map found what the model uses), against the same
  with a random pixel order;
- model-randomisation sanity check (Adebayo et al. 2018): Spearman rank correlation, on
  cell pixels, between the maps of the trained model and of a copy with re-initialised
  weights; it must be below 0.5 for the map to depend on what the model learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.evaluate.saliency.maps import METHODS, saliency_maps

if TYPE_CHECKING:
    import keras

    from leukoflow.models.inference import PredictFn

SANITY_LIMIT = 0.5
DELETION_STEPS = 16
MASK_LEVEL = 10  # a pixel whose brightest channel exceeds this (0-255) belongs to the cell


def cell_masks(images: ArrayLike) -> np.ndarray:
    """Cell pixels (N, H, W) bool: brightest channel above MASK_LEVEL (the background is black)."""
    return np.asarray(images).max(axis=-1) > MASK_LEVEL


def mass_in_cell(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share (N,) of each map's total mass on its cell's pixels."""
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def deletion_images(
    image: np.ndarray, order: np.ndarray, steps: int = DELETION_STEPS
) -> np.ndarray:
    """(steps + 1, H, W, 3): `image` with the first k/steps of pixels in `order` set to black."""
    h, w = image.shape[:2]
    position = np.empty(h * w, int)
    position[order] = np.arange(h * w)
    cut = np.round(np.linspace(0, h * w, steps + 1)).astype(int)
    keep = position[None, :] >= cut[:, None]  # (steps + 1, H*W)
    return image[None] * keep.reshape(steps + 1, h, w, 1)


def deletion_auc(
    predict_fn: PredictFn,
    images: np.ndarray,
    labels: ArrayLike,
    maps: np.ndarray,
    steps: int = DELETION_STEPS,
    seed: int | None = None,
) -> np.ndarray:
    """Area (N,) under the true-class probability as the most salient pixels are deleted.

    The x axis is the deleted share of pixels (0 to 1, trapezoid rule).

    Args:
        predict_fn: float32 batch (M, H, W, 3) -> P(all) (M,).
        images: (N, H, W, 3) in [0, 255].
        labels: (N,) 0/1.
        maps: (N, H, W) saliency maps.
        steps: deletion steps (each calls `predict_fn` on `steps` + 1 images).
        seed: None: delete in order of saliency; set: in a random order drawn with it
            (the baseline a map should beat).

    Returns:
        float (N,), in [0, 1].
    """
    rng = np.random.default_rng(seed)
    out = np.empty(len(images))
    for i, (image, label, saliency) in enumerate(zip(images, labels, maps, strict=True)):
        order = (
            rng.permutation(saliency.size) if seed is not None else np.argsort(-saliency.ravel())
        )
        probability = predict_fn(deletion_images(image, order, steps).astype("float32"))
        curve = probability if label == 1 else 1 - probability
        out[i] = np.trapezoid(curve, dx=1 / steps)
    return out


def rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Spearman correlation (N,) between two sets of maps, on the cell pixels of each image.

    A constant map (no ranking) counts as uncorrelated (0).
    """
    from scipy.stats import spearmanr

    out = np.empty(len(maps_a))
    for i, (a, b, mask) in enumerate(zip(maps_a, maps_b, masks, strict=True)):
        a, b = a[mask], b[mask]
        constant = a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0  # e.g. an all-zero Grad-CAM
        out[i] = 0.0 if constant else spearmanr(a, b).statistic
    return out


def randomised_copy(model: keras.Model, seed: int = 0) -> keras.Model:
    """A copy of `model` with the same architecture and freshly initialised weights."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


def measure(
    model: keras.Model,
    images: ArrayLike,
    labels: ArrayLike,
    methods: Sequence[str] = METHODS,
    samples: int = 16,
    steps: int = 32,
    seed: int = 0,
    layer_name: str | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Maps of the trained and the re-initialised model, and every measure.

    The arguments are those of `saliency_maps`.

    Returns:
        (maps, measures): the trained model's maps and `measures_of` them.
    """
    from leukoflow.models.inference import compiled_inference

    images = np.asarray(images, "float32")
    labels = np.asarray(labels, int)
    kwargs = dict(methods=methods, layer_name=layer_name, samples=samples, steps=steps, seed=seed)
    maps = saliency_maps(model, images, labels, **kwargs)
    random_maps = saliency_maps(randomised_copy(model, seed), images, labels, **kwargs)
    return maps, measures_of(maps, random_maps, images, labels, compiled_inference(model), seed)


def measures_of(
    maps: Mapping[str, np.ndarray],
    random_maps: Mapping[str, np.ndarray],
    images: np.ndarray,
    labels: ArrayLike,
    predict_fn: PredictFn,
    seed: int = 0,
) -> dict:
    """The measures of the maps, against the re-initialised model's maps.

    Args:
        maps: {method: (N, H, W)} of the trained model.
        random_maps: the same methods' maps of the re-initialised model.
        images: float32 (N, H, W, 3) in [0, 255].
        labels: (N,) 0/1.
        predict_fn: float32 batch (M, H, W, 3) -> P(all) (M,).
        seed: seed of the random deletion order.

    Returns:
        The `saliency.json` dict (without the run's identification): per method the
        mean and per-cell measures and the sanity verdict, plus cell area, random
        deletion AUC and the cells' probabilities.
    """
    masks = cell_masks(images)
    random_order = deletion_auc(predict_fn, images, labels, next(iter(maps.values())), seed=seed)
    results = {}
    for method, method_maps in maps.items():
        inside = mass_in_cell(method_maps, masks)
        deletion = deletion_auc(predict_fn, images, labels, method_maps)
        rho = rank_correlation(method_maps, random_maps[method], masks)
        results[method] = {
            "mass_in_cell": float(inside.mean()),
            "deletion_auc": float(deletion.mean()),
            "sanity_spearman": float(rho.mean()),
            "sanity_pass": bool(rho.mean() < SANITY_LIMIT),
            "per_cell": {
                "mass_in_cell": inside.tolist(),
                "deletion_auc": deletion.tolist(),
                "sanity_spearman": rho.tolist(),
            },
        }
    return {
        "methods": results,
        "cell_area": float(masks.mean()),
        "random_deletion_auc": float(random_order.mean()),
        "sanity_limit": SANITY_LIMIT,
        "sanity_pass": all(r["sanity_pass"] for r in results.values()),
        "probability_all": np.asarray(predict_fn(images)).tolist(),
    }
