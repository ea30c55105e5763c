"""Saliency maps: vanilla gradient, SmoothGrad, Integrated Gradients, Grad-CAM.

Input gradients go through one backend dispatch, `gradient_function` (TensorFlow
GradientTape / `jax.grad` of `model.stateless_call`). The class score is the logit of the
model's probability, signed by the class of interest (+ for `all`, - for `hem`), so the
maps explain the cell's own class and do not vanish where the sigmoid saturates. Maps are
(N, H, W) non-negative float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.errors import LeukoflowError

if TYPE_CHECKING:
    import keras

GradientFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
METHODS = ("vanilla", "smoothgrad", "integrated_gradients", "gradcam")
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
