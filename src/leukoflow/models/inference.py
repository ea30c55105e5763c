"""Inference: the compiled predict function, test-time rotations and batched prediction.

`compiled_inference` is the one backend dispatch of fast inference (TensorFlow: a
`tf.function` of `model(x, training=False)`; JAX: `jax.jit` of `model.stateless_call`).
Evaluation, timing, saliency and `leukoflow predict` all call it. Evaluation (through
`predict_store`), the stress test and `leukoflow predict` (with the Keras or the ONNX engine)
all predict through `predict_arrays` (the same padding, the same test-time augmentation), so
a bundle gives the probabilities evaluate wrote.

Test-time augmentation (`evaluate.tta`, `tta_views`): `none`; `dihedral`, the mean over the 8
rotations by multiples of 90 degrees and their mirror images (a segmented cell has no
orientation, and these 8 are exact on a pixel grid); or an integer K >= 2, the mean over K
rotations by multiples of 360/K degrees (0 and 1: none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.errors import LeukoflowError
from leukoflow.core.runtime import backend_name

if TYPE_CHECKING:
    import keras

PredictFn = Callable[[np.ndarray], np.ndarray]
View = Callable[[np.ndarray], np.ndarray]
TTA_MODES = ("none", "dihedral")


def compiled_inference(
    model: keras.Model, jit_compile: bool = False, flat: bool = True
) -> PredictFn:
    """A function float32 batch (N, H, W, 3) in [0, 255] -> P(all) float32 (N,) as numpy.

    Args:
        model: a Keras classifier (one input, one probability output), or with `flat`
            False any one-input, one-output model (e.g. the backbone up to `head_pool`).
        jit_compile: XLA on TensorFlow. JAX always compiles with XLA.
        flat: the output flattened to (N,); False: (N, features), float32.

    Returns:
        The function. On TensorFlow it is traced once, for any batch size (the batch
        dimension is left open); JAX compiles it once per input shape.

    Raises:
        LeukoflowError: on a backend other than TensorFlow or JAX.
    """
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)

        @tf.function(jit_compile=bool(jit_compile), input_signature=[spec])
        def call(x):
            return model(x, training=False)

        def predict(x):
            out = np.asarray(call(tf.convert_to_tensor(x, tf.float32)), dtype="float32")
            return out.reshape(-1) if flat else out.reshape(len(out), -1)

        return predict
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def call(trainable, non_trainable, x):
            outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return outputs

        def predict(x):
            out = np.asarray(call(trainable, non_trainable, x), dtype="float32")
            return out.reshape(-1) if flat else out.reshape(len(out), -1)

        return predict
    raise LeukoflowError(
        f"backend {backend!r} is not supported for inference; use tensorflow or jax"
    )


def rotation_transform(angle_deg: float, height: int, width: int) -> np.ndarray:
    """The 8-parameter projective transform (keras.ops.image.affine_transform) of a rotation.

    Args:
        angle_deg: rotation angle about the image centre, degrees.
        height: image height, pixels.
        width: image width, pixels.

    Returns:
        float32 (8,): output pixel (x, y) samples the input at R(x - c) + c.
    """
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return np.array(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0, 0],
        dtype="float32",
    )


def rotate_batch(images: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate a batch of images about their centre; exact for multiples of 90 degrees.

    Other angles use bilinear keras.ops.image.affine_transform with a black fill (the
    background of the cell images), run by the Keras backend on its device.

    Args:
        images: float32 (N, H, W, 3).
        angle_deg: rotation angle, degrees.

    Returns:
        float32 (N, H, W, 3).
    """
    quarter = angle_deg / 90
    if float(quarter).is_integer():
        return np.ascontiguousarray(np.rot90(images, k=int(quarter) % 4, axes=(1, 2)))
    import keras

    transform = rotation_transform(angle_deg, images.shape[1], images.shape[2])
    transform = np.repeat(transform[None], len(images), axis=0)
    rotated = keras.ops.image.affine_transform(
        images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0
    )
    return keras.ops.convert_to_numpy(rotated)


def tta_angles(tta: int) -> list[float]:
    """The rotation angles of `tta` = k test-time rotations (multiples of 360/k; 0 or 1: none).

    Raises:
        LeukoflowError: for a negative `tta`.
    """
    if tta < 0:
        raise LeukoflowError(f"tta must be 0 (off) or a number of rotations, got {tta}")
    return [360 * i / tta for i in range(tta)] if tta >= 2 else [0.0]


def _dihedral_view(k: int, mirror: bool) -> View:
    """The view of a batch (N, H, W, C) turned k quarter turns, then mirrored left-right."""

    def view(batch):
        turned = np.rot90(batch, k=k, axes=(1, 2))
        return np.ascontiguousarray(turned[:, :, ::-1] if mirror else turned)

    return view


def tta_views(tta: str | int) -> list[View]:
    """The views of a batch that test-time augmentation averages the model's output over.

    Args:
        tta: `none`, `dihedral` (8 views: 4 quarter turns, each also mirrored), or an
            integer K (K rotations by multiples of 360/K degrees; 0 or 1: none).

    Returns:
        Functions float32 (N, H, W, 3) -> (N, H, W, 3); the first is the identity.

    Raises:
        LeukoflowError: for another mode or a negative K.
    """
    if isinstance(tta, str) and tta.isdigit():
        tta = int(tta)
    if isinstance(tta, int) and not isinstance(tta, bool):
        return [lambda batch, a=a: rotate_batch(batch, a) for a in tta_angles(tta)]
    if tta == "none":
        return [lambda batch: batch]
    if tta == "dihedral":
        return [_dihedral_view(k, mirror) for mirror in (False, True) for k in range(4)]
    raise LeukoflowError(
        f"tta: {tta!r} is not a test-time augmentation; allowed: {', '.join(TTA_MODES)} or a "
        "number of rotations K"
    )


def predict_views(
    predict_fn: PredictFn, images: np.ndarray, batch_size: int, tta: str | int = "none"
) -> np.ndarray:
    """The probabilities of `all` of one batch of images under each test-time view.

    The batch is padded with black images to `batch_size` rows, so the compiled function
    sees one shape.

    Args:
        predict_fn: from `compiled_inference` (Keras) or `deploy.onnx_model.onnx_inference`.
        images: uint8 or float (n, s, s, 3) in [0, 255], n <= `batch_size`.
        batch_size: rows of every call of `predict_fn`.
        tta: the test-time augmentation (`tta_views`).

    Returns:
        float32 (views, n).

    Raises:
        LeukoflowError: when n > `batch_size`, or as `tta_views`.
    """
    views = tta_views(tta)
    n = len(images)
    if n == 0:
        return np.zeros((len(views), 0), np.float32)
    if n > batch_size:
        raise LeukoflowError(f"{n} images do not fit one batch of {batch_size}")
    batch = np.zeros((batch_size, *images.shape[1:]), np.float32)
    batch[:n] = images
    return np.stack([predict_fn(view(batch))[:n] for view in views])


def predict_arrays(
    predict_fn: PredictFn, images: np.ndarray, batch_size: int, tta: str | int = "none"
) -> np.ndarray:
    """The probabilities of `all` of one batch of images.

    The mean over the views of `predict_views` (the padding, the views).

    Args:
        predict_fn: from `compiled_inference` (Keras) or `deploy.onnx_model.onnx_inference`.
        images: uint8 or float (n, s, s, 3) in [0, 255], n <= `batch_size`.
        batch_size: rows of every call of `predict_fn`.
        tta: the test-time augmentation (`tta_views`).

    Returns:
        float32 (n,).

    Raises:
        LeukoflowError: when n > `batch_size`, or as `tta_views`.
    """
    return predict_views(predict_fn, images, batch_size, tta).mean(axis=0)


def predict_store(
    predict_fn: PredictFn, images: np.ndarray, batch_size: int = 32, tta: str | int = "none"
) -> np.ndarray:
    """The probabilities of `all` of a whole store, in store order, batch by batch.

    Args:
        predict_fn: from `compiled_inference`.
        images: the store, uint8 (N, H, W, 3) (a memmap is fine).
        batch_size: rows per call; the last batch is padded (`predict_arrays`).
        tta: the test-time augmentation (`tta_views`).

    Returns:
        float32 (N,).

    Raises:
        LeukoflowError: as `tta_views`.
    """
    from tqdm import tqdm

    out = np.empty(len(images), dtype="float32")
    for start in tqdm(range(0, len(images), batch_size), desc="predict", leave=False):
        batch = np.asarray(images[start : start + batch_size])
        out[start : start + len(batch)] = predict_arrays(predict_fn, batch, batch_size, tta)
    return out
