"""How sure a model is about each cell: the spread over test-time views and MC dropout.

Two per-cell estimates, written beside the probabilities by `evaluate` (columns
`UNCERTAINTY_COLUMNS`):

- `tta_spread`: the standard deviation of P(all) over the views of the test-time augmentation
  (`evaluate.tta`; `leukoflow.models.inference.predict_views`), when it has more than one;
- `mc_std`: the standard deviation of P(all) over T passes of the head with its dropout kept
  on (`evaluate.mc_dropout: T`, Gal and Ghahramani 2016). The backbone's features (the
  output of `head_pool`) are computed once per image; each pass draws a new dropout mask
  (inverted dropout at the `head_dropout` layer's rate, seeded) and applies the
  `probability` layer, so T passes cost T small matrix products, not T full ones. On the
  unaugmented image.

Evaluate's risk-coverage area (`leukoflow.evaluate.referral.risk_coverage`) is computed with
the cells ranked by the distance of the probability from the threshold and by each
uncertainty (`aurc_tta_spread`, `aurc_mc_std`), so the report shows which ranks the errors
better on this data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.errors import LeukoflowError
from leukoflow.models.inference import compiled_inference, predict_views, tta_views

if TYPE_CHECKING:
    import keras

UNCERTAINTY_COLUMNS = ("tta_spread", "mc_std")
FEATURE_LAYER, DROPOUT_LAYER, OUTPUT_LAYER = "head_pool", "head_dropout", "probability"


class MCDropout:
    """The head of a leukoflow model with its dropout on, over the backbone's features.

    Args:
        model: a model of `leukoflow.models.build_model` (layers `head_pool` ->
            `head_dropout` -> `probability`).
        jit_compile: XLA for the backbone's features (TensorFlow).

    Raises:
        LeukoflowError: when the model lacks one of the head's layers.
    """

    def __init__(self, model: keras.Model, jit_compile: bool = False):
        import keras

        try:
            pool = model.get_layer(FEATURE_LAYER)
            self.rate = float(model.get_layer(DROPOUT_LAYER).rate)
            self.output = model.get_layer(OUTPUT_LAYER)
        except ValueError as error:
            raise LeukoflowError(
                f"MC dropout needs the layers {FEATURE_LAYER}, {DROPOUT_LAYER} and "
                f"{OUTPUT_LAYER} of a leukoflow model ({error})"
            ) from None
        features = keras.Model(model.inputs, pool.output)
        self.features = compiled_inference(features, jit_compile=jit_compile, flat=False)
        self.seen: list[np.ndarray] = []  # the features of each `probabilities` call

    def head(self, features: np.ndarray) -> np.ndarray:
        """P(all) float32 (N,) of features (N, F) through the `probability` layer."""
        import keras

        p = self.output(keras.ops.convert_to_tensor(features))
        return keras.ops.convert_to_numpy(p).astype(np.float32).reshape(-1)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The model's P(all) (N,) of a batch, through its features, which are kept in
        `seen` (so MC dropout needs no second pass of the backbone)."""
        features = self.features(x)
        self.seen.append(features)
        return self.head(features)

    def passes(self, features: np.ndarray, passes: int, rng: np.random.Generator) -> np.ndarray:
        """P(all) float32 (passes, N) of features (N, F), a new dropout mask each pass."""
        keep = 1.0 - self.rate
        out = np.empty((passes, len(features)), np.float32)
        for t in range(passes):
            mask = (rng.random(features.shape) < keep).astype(np.float32) / np.float32(keep)
            out[t] = self.head(features * mask)
        return out

    def std(
        self, images: np.ndarray, batch_size: int, passes: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The std of P(all) over `passes` dropout passes, float64 (n,), of one batch of
        images (n <= `batch_size`; padded to it, so the features function sees one shape)."""
        padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
        padded[: len(images)] = images
        features = self.features(padded)[: len(images)]
        return self.passes(features, passes, rng).std(axis=0, dtype=np.float64)


def predict_with_uncertainty(
    model: keras.Model,
    predict_fn,
    images: np.ndarray,
    batch_size: int,
    tta: str | int = "none",
    mc_dropout: int = 0,
    seed: int = 0,
    jit_compile: bool = False,
) -> dict[str, np.ndarray]:
    """The probabilities of `all` of a store and, where asked, their uncertainty.

    Args:
        model: the Keras model (for MC dropout).
        predict_fn: its `compiled_inference` function (with MC dropout, the probabilities
            come from the backbone's features and the head instead, one backbone pass).
        images: the store, uint8 (N, S, S, 3).
        batch_size: rows per call.
        tta: the test-time augmentation (`leukoflow.models.inference.tta_views`).
        mc_dropout: T head passes with dropout on (0: no `mc_std`).
        seed: seed of the dropout masks.
        jit_compile: XLA for the backbone's features.

    Returns:
        {probability_all: (N,), tta_spread: (N,) when `tta` has several views,
        mc_std: (N,) when `mc_dropout` > 0}.

    Raises:
        LeukoflowError: for a negative `mc_dropout`, as `tta_views` or `MCDropout`.
    """
    from tqdm import tqdm

    if mc_dropout < 0:
        raise LeukoflowError(f"evaluate.mc_dropout: {mc_dropout} must be 0 (off) or a pass count")
    spread = len(tta_views(tta)) > 1
    head = MCDropout(model, jit_compile) if mc_dropout else None
    rng = np.random.default_rng(seed)
    out = {"probability_all": np.empty(len(images), np.float32)}
    if spread:
        out["tta_spread"] = np.empty(len(images), np.float32)
    if head:
        out["mc_std"] = np.empty(len(images), np.float32)
    fn = head.probabilities if head else predict_fn
    for start in tqdm(range(0, len(images), batch_size), desc="predict", leave=False):
        batch = np.asarray(images[start : start + batch_size])
        rows = slice(start, start + len(batch))
        if head:
            head.seen.clear()
        views = predict_views(fn, batch, batch_size, tta)
        out["probability_all"][rows] = views.mean(axis=0)
        if spread:
            out["tta_spread"][rows] = views.std(axis=0, dtype=np.float64)
        if head:  # the first view is the image as it is
            passes = head.passes(head.seen[0][: len(batch)], mc_dropout, rng)
            out["mc_std"][rows] = passes.std(axis=0, dtype=np.float64)
    return out


class CellUncertainty:
    """The uncertainty columns `leukoflow predict` writes for a bundle, and their values.

    Like evaluate's, for a one-model bundle: `tta_spread` when its test-time augmentation
    has several views; `mc_std` when the bundle was evaluated with MC dropout
    (`evaluation.mc_dropout` passes) and runs on the Keras engine (the ONNX file holds no
    dropout). An estimate: its value varies with the dropout draws (seeded per run).

    Args:
        bundle: the loaded bundle (`leukoflow.deploy.bundle.Bundle`).
        tta: the test-time augmentation predict applies.
        seed: seed of the dropout masks.
    """

    def __init__(self, bundle, tta: str | int, seed: int = 0):
        single = len(bundle.members) == 1
        self.passes = int(bundle.meta.get("evaluation", {}).get("mc_dropout") or 0)
        self.spread = single and len(tta_views(tta)) > 1
        self.head = None
        if single and self.passes and bundle.engine == "keras":
            self.head = MCDropout(bundle.members[0].model)
        self.columns = [c for c, on in zip(UNCERTAINTY_COLUMNS, (self.spread, self.head)) if on]
        self.rng = np.random.default_rng(seed)

    def __call__(
        self, views: np.ndarray, images: np.ndarray, batch_size: int
    ) -> dict[str, np.ndarray]:
        """{column: (n,)} of one batch.

        Args:
            views: (views, n) P(all) of the bundle's model under each test-time view.
            images: the prepared batch, uint8 (n, size, size, 3).
            batch_size: the rows of each model call (the batch is padded to it).
        """
        out = {}
        if self.spread:
            out["tta_spread"] = views.std(axis=0, dtype=np.float64)
        if self.head is not None:
            out["mc_std"] = self.head.std(images, batch_size, self.passes, self.rng)
        return out
