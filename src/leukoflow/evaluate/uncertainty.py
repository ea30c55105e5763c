"""How sure a model is about each cell: the spread over test-time views, MC dropout, and the
disagreement of an ensemble's members.

Per model, two estimates written beside the probabilities by `evaluate` (`MEMBER_COLUMNS`):

- `tta_spread`: the standard deviation of P(all) over the views of the test-time augmentation
  (`evaluate.tta`; `leukoflow.models.inference.predict_views`), when it has more than one;
- `mc_std`: the standard deviation of P(all) over T passes of the head with its dropout kept
  on (`evaluate.mc_dropout: T`, Gal and Ghahramani 2016). The backbone's features (the
  output of `head_pool`) are computed once per image; each pass draws a new dropout mask
  (inverted dropout at the `head_dropout` layer's rate, seeded) and applies the
  `probability` layer (`Head.passes`, the one definition of a pass: the Keras model's and
  its ONNX file's features go through the same numpy head), so T passes cost T small
  matrix products, not T full ones. On the unaugmented image.

For an ensemble (`ensemble_uncertainty`, the `ensemble` job and `leukoflow predict` alike):

- `member_spread`: the standard deviation over the members of their P(all) (each member's
  mean over its views, before combining and calibration): the members' disagreement
  (Lakshminarayanan et al. 2017);
- `tta_spread` and `mc_std`, each when every member has it: the mean over the members of
  their own.

Evaluate's risk-coverage area (`leukoflow.evaluate.referral.risk_coverage`) is computed with
the cells ranked by the distance of the probability from the threshold and by each
uncertainty (`aurc_tta_spread`, `aurc_mc_std`, `aurc_member_spread`), so the report shows
which ranks the errors better on this data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate.calibration import sigmoid
from leukoflow.models.inference import compiled_inference, predict_views, tta_views

if TYPE_CHECKING:
    import keras

MEMBER_COLUMNS = ("tta_spread", "mc_std")  # a model's; an ensemble's is their mean
UNCERTAINTY_COLUMNS = (*MEMBER_COLUMNS, "member_spread")
FEATURE_LAYER, DROPOUT_LAYER, OUTPUT_LAYER = "head_pool", "head_dropout", "probability"
ACTIVATION = "sigmoid"  # the `probability` layer's, the one the numpy head computes


def _check_unit(activation, units):
    """Raise unless the `probability` layer is one sigmoid unit, the head `Head` computes."""
    if activation != ACTIVATION or units != 1:
        raise LeukoflowError(
            f"MC dropout's head is one {ACTIVATION} unit; the `{OUTPUT_LAYER}` layer has "
            f"{units} {activation!r} unit(s)"
        )


@dataclass(frozen=True, eq=False)  # the kernel is an array
class Head:
    """The head of a leukoflow model after its features, in numpy (float32): inverted dropout
    at `rate`, then P(all) = sigmoid(features @ kernel + bias) (the `probability` layer).

    Attributes:
        rate: the `head_dropout` layer's rate.
        kernel: the `probability` layer's kernel, float32 (F,).
        bias: its bias.
    """

    rate: float
    kernel: np.ndarray
    bias: float

    @classmethod
    def of_model(cls, model: keras.Model) -> Head:
        """The head of a Keras model of `leukoflow.models.build_model`.

        Raises:
            LeukoflowError: when the model lacks one of the head's layers, or its
                `probability` layer is not one sigmoid unit.
        """
        import keras

        try:
            rate = float(model.get_layer(DROPOUT_LAYER).rate)
            output = model.get_layer(OUTPUT_LAYER)
            model.get_layer(FEATURE_LAYER)
        except ValueError as error:
            raise LeukoflowError(
                f"MC dropout needs the layers {FEATURE_LAYER}, {DROPOUT_LAYER} and "
                f"{OUTPUT_LAYER} of a leukoflow model ({error})"
            ) from None
        kernel, bias = (keras.ops.convert_to_numpy(w).astype(np.float32) for w in output.weights)
        _check_unit(output.get_config().get("activation"), kernel.shape[-1])
        return cls(rate, kernel.reshape(-1), float(bias.reshape(-1)[0]))

    @classmethod
    def from_record(cls, record: Mapping) -> Head:
        """The head `record()` describes (the `head` of a member's ONNX entry in bundle.json).

        Raises:
            LeukoflowError: for an activation other than sigmoid, a bias of more than one
                unit, or a rate outside [0, 1).
        """
        _check_unit(record.get("activation"), len(record["bias"]))
        rate = float(record["rate"])
        if not 0 <= rate < 1:
            raise LeukoflowError(f"the head's dropout rate {rate} is outside [0, 1)")
        return cls(rate, np.asarray(record["kernel"], np.float32), float(record["bias"][0]))

    def record(self) -> dict:
        """{rate, kernel, bias, activation}: JSON, exact for float32 weights."""
        return {
            "rate": self.rate,
            "kernel": self.kernel.astype(np.float64).tolist(),
            "bias": [self.bias],
            "activation": ACTIVATION,
        }

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """P(all) float32 (N,) of features (N, F), no dropout."""
        z = np.asarray(features, np.float32) @ self.kernel + np.float32(self.bias)
        return sigmoid(z).astype(np.float32)

    def passes(self, features: np.ndarray, passes: int, rng: np.random.Generator) -> np.ndarray:
        """P(all) float32 (passes, N) of features (N, F), a new dropout mask each pass (drawn
        from `rng` in pass order, one uniform per feature)."""
        keep = np.float32(1.0 - self.rate)
        out = np.empty((passes, len(features)), np.float32)
        for t in range(passes):
            mask = (rng.random(features.shape) < keep).astype(np.float32) / keep
            out[t] = self(features * mask)
        return out


class MCDropout:
    """A model's head with its dropout on, over its backbone's features.

    Args:
        features: float32 batch (N, size, size, 3) in [0, 255] -> the `head_pool` features
            (N, F): the Keras model's (`of_model`) or its ONNX file's
            (`leukoflow.deploy.onnx_model.onnx_inference` of its `features` output).
        head: the model's head.
    """

    def __init__(self, features: Callable[[np.ndarray], np.ndarray], head: Head):
        self.features, self.head = features, head
        self.seen: list[np.ndarray] = []  # the features of each `probabilities` call

    @classmethod
    def of_model(cls, model: keras.Model, jit_compile: bool = False) -> MCDropout:
        """MC dropout of a Keras model (`jit_compile`: XLA for the backbone's features).

        Raises:
            LeukoflowError: as `Head.of_model`.
        """
        import keras

        head = Head.of_model(model)
        features = keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output)
        return cls(compiled_inference(features, jit_compile=jit_compile, flat=False), head)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The model's P(all) (N,) of a batch, through its features, which are kept in
        `seen` (so MC dropout needs no second pass of the backbone)."""
        features = np.asarray(self.features(x), np.float32)
        self.seen.append(features)
        return self.head(features)

    def std(
        self, images: np.ndarray, batch_size: int, passes: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The std of P(all) over `passes` dropout passes, float64 (n,), of one batch of
        images (n <= `batch_size`; padded to it, so the features function sees one shape)."""
        padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
        padded[: len(images)] = images
        features = np.asarray(self.features(padded), np.float32)[: len(images)]
        return self.head.passes(features, passes, rng).std(axis=0, dtype=np.float64)


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
        LeukoflowError: for a negative `mc_dropout`, as `tta_views` or `Head.of_model`.
    """
    from tqdm import tqdm

    if mc_dropout < 0:
        raise LeukoflowError(f"evaluate.mc_dropout: {mc_dropout} must be 0 (off) or a pass count")
    spread = len(tta_views(tta)) > 1
    head = MCDropout.of_model(model, jit_compile) if mc_dropout else None
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
            passes = head.head.passes(head.seen[0][: len(batch)], mc_dropout, rng)
            out["mc_std"][rows] = passes.std(axis=0, dtype=np.float64)
    return out


def ensemble_uncertainty(
    probabilities: ArrayLike, members: Sequence[Mapping[str, ArrayLike]]
) -> dict[str, np.ndarray]:
    """An ensemble's uncertainty columns from its members'.

    Args:
        probabilities: (M, N) the members' P(all) (each its mean over its views,
            uncalibrated).
        members: one {column of `MEMBER_COLUMNS`: (N,)} per member, the columns it has.

    Returns:
        {member_spread: the std over the members of their P(all), float64 (N,); and for
        each column of `MEMBER_COLUMNS` that every member has, its mean over the members}.
    """
    out = {"member_spread": np.asarray(probabilities, float).std(axis=0)}
    for column in MEMBER_COLUMNS:
        if members and all(column in member for member in members):
            out[column] = np.mean([np.asarray(m[column], float) for m in members], axis=0)
    return {column: out[column] for column in UNCERTAINTY_COLUMNS if column in out}
