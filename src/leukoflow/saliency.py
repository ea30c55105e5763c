"""Saliency maps and their measures: vanilla gradient, SmoothGrad, Integrated Gradients, Grad-CAM.

Input gradients go through one backend dispatch, `gradient_function` (TensorFlow
GradientTape / `jax.grad` of `model.stateless_call`). The class score is the logit of the
model's probability, signed by the class of interest (+ for `all`, - for `hem`), so the
maps explain the cell's own class and do not vanish where the sigmoid saturates.

Maps are (N, H, W) non-negative float32. Measures (per method, mean over the cells):
- `mass_in_cell`: share of saliency mass on cell pixels (non-black), against
  `cell_area` (what a uniform map would get);
- `deletion_auc`: mean probability of the true class while the most salient pixels are
  blacked out in 16 steps (lower = the map found what the model uses), against the same
  with a random pixel order;
- model-randomisation sanity check (Adebayo et al. 2018): Spearman rank correlation, on
  cell pixels, between the maps of the trained model and of a copy with re-initialised
  weights; it must be below 0.5 for the map to depend on what the model learned.

`run_saliency` is the `saliency` job: it picks test cells, measures every method and writes
the measures JSON and the figure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.atomic import atomic_path, write_text
from leukoflow.errors import LeukoflowError

if TYPE_CHECKING:
    import keras
    import pandas as pd

    from leukoflow.inference import PredictFn

log = logging.getLogger(__name__)

GradientFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
METHODS = ("vanilla", "smoothgrad", "integrated_gradients", "gradcam")
SANITY_LIMIT = 0.5
DELETION_STEPS = 16
MASK_LEVEL = 10  # a pixel whose brightest channel exceeds this (0-255) belongs to the cell
SMOOTHGRAD_NOISE = 0.15  # noise std as a share of the 0-255 input range
EPS = 1e-7


def _class_score(probability, sign):
    """sum over the batch of sign * logit(probability); keras.ops, so any backend."""
    import keras

    p = keras.ops.reshape(probability, (-1,))
    logit = keras.ops.log(p + EPS) - keras.ops.log(1.0 - p + EPS)
    return keras.ops.sum(keras.ops.convert_to_tensor(sign, dtype=p.dtype) * logit)


def gradient_function(model: keras.Model) -> GradientFn:
    """The input gradient of the signed class score, as a numpy function.

    The one backend dispatch of saliency.

    Args:
        model: any Keras model with a single input and a probability output (the
            classifier, or its head above a feature map).

    Returns:
        fn(x, sign) -> d(sum sign * logit(model(x))) / dx, for a float32 batch x and
        signs (N,) (+1 for `all`, -1 for `hem`); the gradient has the shape of x.

    Raises:
        LeukoflowError: on a backend other than TensorFlow or JAX.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def grad(x, sign):
            with tf.GradientTape() as tape:
                tape.watch(x)
                score = _class_score(model(x, training=False), sign)
            return tape.gradient(score, x)

        return lambda x, sign: grad(
            tf.constant(x, tf.float32), tf.constant(sign, tf.float32)
        ).numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def score(x, sign):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return _class_score(out, sign)

        grad = jax.jit(jax.grad(score))
        return lambda x, sign: np.asarray(
            grad(np.asarray(x, "float32"), np.asarray(sign, "float32"))
        )
    raise LeukoflowError(f"saliency supports the tensorflow and jax backends, not {backend!r}")


def _signs(labels):
    """+1 for label 1 (`all`), -1 otherwise, float32."""
    return np.where(np.asarray(labels) == 1, 1.0, -1.0).astype("float32")


def _channel_abs(grads):
    """|gradient| summed over the channel axis, float32 (N, H, W)."""
    return np.abs(grads).sum(axis=-1).astype("float32")


def vanilla(grad_fn: GradientFn, images: np.ndarray, labels: ArrayLike) -> np.ndarray:
    """|d score / d x| summed over channels: (N, H, W)."""
    return _channel_abs(grad_fn(images, _signs(labels)))


def smoothgrad(
    grad_fn: GradientFn, images: np.ndarray, labels: ArrayLike, samples: int = 16, seed: int = 0
) -> np.ndarray:
    """Mean over `samples` noisy copies (std 15% of 255) of the vanilla map: (N, H, W)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(images.shape[:3], "float32")
    for _ in range(samples):
        noisy = images + rng.normal(0, SMOOTHGRAD_NOISE * 255, images.shape).astype("float32")
        total += _channel_abs(grad_fn(noisy, _signs(labels)))
    return total / samples


def integrated_gradients(
    grad_fn: GradientFn, images: np.ndarray, labels: ArrayLike, steps: int = 32
) -> np.ndarray:
    """|x * mean gradient along the path from the black image to x| (midpoint rule): (N, H, W).

    The black baseline is the background of the cell images.
    """
    total = np.zeros(images.shape, "float32")
    for alpha in (np.arange(steps) + 0.5) / steps:
        total += grad_fn(alpha * images, _signs(labels))
    return _channel_abs(images * total / steps)


def gradcam(
    model: keras.Model, images: np.ndarray, labels: ArrayLike, layer_name: str
) -> np.ndarray:
    """Grad-CAM on layer `layer_name`, bilinearly resized to the input: (N, H, W).

    ReLU of the feature maps weighted by the spatial mean of the class score's gradient.
    """
    import keras

    layer_output = model.get_layer(layer_name).output
    features = keras.Model(model.input, layer_output)
    head = keras.Model(layer_output, model.output)
    acts = keras.ops.convert_to_numpy(features(images, training=False)).astype("float32")
    grads = gradient_function(head)(acts, _signs(labels))
    cam = np.maximum((acts * grads.mean(axis=(1, 2), keepdims=True)).sum(axis=-1), 0)
    resized = keras.ops.image.resize(cam[..., None], images.shape[1:3], interpolation="bilinear")
    return np.maximum(keras.ops.convert_to_numpy(resized)[..., 0], 0).astype("float32")


def saliency_maps(
    model: keras.Model,
    images: ArrayLike,
    labels: ArrayLike,
    methods: Sequence[str] = METHODS,
    layer_name: str | None = None,
    samples: int = 16,
    steps: int = 32,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The saliency maps of `methods` for a batch of cells.

    Args:
        model: the classifier.
        images: float32 (N, H, W, 3) in [0, 255].
        labels: (N,) 0/1; each map explains the cell's own class.
        methods: some of `METHODS`.
        layer_name: Grad-CAM's layer; None: the last feature map.
        samples: SmoothGrad's noisy copies.
        steps: Integrated Gradients' steps.
        seed: seed of SmoothGrad's noise.

    Returns:
        {method: float32 (N, H, W) non-negative map}.

    Raises:
        LeukoflowError: for an unknown method, or on a backend other than TensorFlow or JAX.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise LeukoflowError(f"saliency.methods: unknown {sorted(unknown)}; allowed: {METHODS}")
    images = np.asarray(images, "float32")
    grad_fn = gradient_function(model)
    maps = {}
    for method in methods:
        if method == "vanilla":
            maps[method] = vanilla(grad_fn, images, labels)
        elif method == "smoothgrad":
            maps[method] = smoothgrad(grad_fn, images, labels, samples, seed)
        elif method == "integrated_gradients":
            maps[method] = integrated_gradients(grad_fn, images, labels, steps)
        else:
            if layer_name is None:
                from leukoflow.models import last_conv_layer_name

                layer_name = last_conv_layer_name(model)
            maps[method] = gradcam(model, images, labels, layer_name)
    return maps


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


def select_cells(index: pd.DataFrame, n_cells: int, seed: int = 0) -> np.ndarray:
    """Store rows of `n_cells` test cells, half of each class where possible, drawn with `seed`.

    Args:
        index: the test store's index (column `y`).
        n_cells: cells to pick.
        seed: seed of the draw.

    Returns:
        The rows, sorted.

    Raises:
        LeukoflowError: when the store has only one class.
    """
    rng = np.random.default_rng(seed)
    y = index["y"].to_numpy()
    if len(np.unique(y)) < 2:
        raise LeukoflowError("the test subset has only one class: saliency needs both")
    per_class = {0: n_cells // 2, 1: n_cells - n_cells // 2}
    chosen = []
    for label, n in per_class.items():
        rows = np.flatnonzero(y == label)
        chosen.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen))


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
    from leukoflow.inference import compiled_inference

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


def saliency_figure(
    images: np.ndarray,
    labels: ArrayLike,
    probabilities: ArrayLike,
    maps: Mapping[str, np.ndarray],
    out: str | Path,
    title: str = "",
) -> None:
    """Fig. 1 of the paper, extended: per cell, image and maps on one row, overlays below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(maps)
    n_cols = 1 + len(methods)
    fig, axes = plt.subplots(
        2 * len(images), n_cols, figsize=(2.1 * n_cols, 4.4 * len(images)), squeeze=False
    )
    for i, (image, label, prob) in enumerate(zip(images, labels, probabilities, strict=True)):
        shown = np.clip(image, 0, 255).astype(np.uint8)
        top, bottom = axes[2 * i], axes[2 * i + 1]
        name = "ALL" if label == 1 else "normal (hem)"
        top[0].imshow(shown)
        top[0].set_title(f"{name}\nP(all) = {prob:.2f}", fontsize=9)
        bottom[0].imshow(shown)
        bottom[0].set_title("image", fontsize=9)
        for j, method in enumerate(methods, start=1):
            m = maps[method][i]
            m = m / m.max() if m.max() > 0 else m
            top[j].imshow(m, cmap="inferno", vmin=0, vmax=1)
            top[j].set_title(method.replace("_", " "), fontsize=9)
            bottom[j].imshow(shown)
            bottom[j].imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            bottom[j].set_title("overlay", fontsize=9)
        for ax in (*top, *bottom):
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_saliency(
    model_path: str | Path,
    test_store: str | Path,
    settings: Mapping,
    saliency_config: Mapping,
    measures_out: str | Path,
    figure_out: str | Path,
) -> dict:
    """The `saliency` job: choose test cells, measure every method, write JSON and figure.

    Args:
        model_path: the trained `model.keras`.
        test_store: the test store (`.npy`, index beside).
        settings: the architecture's merged settings (`architecture`).
        saliency_config: the config's `saliency` block (methods, cells,
            smoothgrad_samples, ig_steps, seed).
        measures_out: the measures JSON to write.
        figure_out: the figure PNG to write.

    Returns:
        The measures dict.

    Raises:
        LeukoflowError: for a missing model or store, a test store with one class, an
            unknown method, or a backend other than TensorFlow or JAX.
    """
    from leukoflow.models import load_model
    from leukoflow.runtime import backend_name
    from leukoflow.stores import open_store

    model = load_model(model_path)
    images, index = open_store(test_store)
    seed = int(saliency_config.get("seed", 0))
    methods = tuple(saliency_config.get("methods", METHODS))
    rows = select_cells(index, int(saliency_config.get("cells", 8)), seed)
    cells = np.asarray(images[rows], "float32")
    labels = index["y"].to_numpy(int)[rows]
    maps, measures = measure(
        model,
        cells,
        labels,
        methods=methods,
        samples=int(saliency_config.get("smoothgrad_samples", 16)),
        steps=int(saliency_config.get("ig_steps", 32)),
        seed=seed,
    )
    arch = settings.get("architecture", Path(model_path).parent.name)
    measures.update(
        architecture=arch,
        backend=backend_name(),
        cells=[
            {"row": int(r), "path": str(index["path"].iloc[r]), "label": int(labels[i])}
            for i, r in enumerate(rows)
        ],
        settings={k: saliency_config.get(k) for k in ("smoothgrad_samples", "ig_steps", "seed")},
    )
    write_text(measures_out, json.dumps(measures, indent=2, sort_keys=True) + "\n")
    shown = [int(np.flatnonzero(labels == 0)[0]), int(np.flatnonzero(labels == 1)[0])]
    saliency_figure(
        cells[shown],
        labels[shown],
        np.asarray(measures["probability_all"])[shown],
        {m: maps[m][shown] for m in methods},
        figure_out,
        title=arch,
    )
    for method, result in measures["methods"].items():
        log.info(
            "%s %s: mass in cell %.2f (area %.2f), deletion AUC %.3f (random %.3f), "
            "sanity rho %.2f %s",
            arch,
            method,
            result["mass_in_cell"],
            measures["cell_area"],
            result["deletion_auc"],
            measures["random_deletion_auc"],
            result["sanity_spearman"],
            "pass" if result["sanity_pass"] else "FAIL",
        )
    return measures
