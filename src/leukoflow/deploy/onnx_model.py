"""The ONNX copy of a bundle's model: export, check against Keras, inference with ONNX Runtime.

Export: TensorFlow traces `model(images, training=False)` for a batch of any size, freezes
the trace (variables and captured constants become graph constants) and tf2onnx converts
it (opset `OPSET`). The ONNX model has one input `images`, float32 `(N, size, size, 3)` in
[0, 255], and the output `probability`, float32 `(N, 1)`: the Keras model's contract. A
leukoflow model's file also has the output `features`, float32 `(N, F)`: the `head_pool`
layer's, the input of the head, so that the ONNX engine computes MC dropout as Keras does
(`leukoflow.evaluate.uncertainty`); outputs are selected by name.

Every backend exports through TensorFlow: the `.keras` file does not depend on the backend
that trained it, and tf2onnx converts all six architectures, while Keras' own exporter on
JAX (jax2onnx) writes max-pooling nodes that ONNX Runtime rejects (SimpleNet, VGG16,
Xception and ResNet152V2; README, "Classifying new images"). On the TensorFlow backend the
export runs in this process; on another it runs in a child process with
`KERAS_BACKEND=tensorflow` (`python -m leukoflow.deploy.onnx_model MODEL OUT`).

Check: the exported model and the Keras model (on the backend of this process) classify
`CHECK_IMAGES` random images; an export whose probabilities differ by more than
`TOLERANCE` is not kept. The head's record (`leukoflow.evaluate.uncertainty.Head`: dropout
rate, the `probability` layer's weights) is kept beside it when the numpy head on the ONNX
file's features gives its probabilities within `TOLERANCE`; without it (or in a file exported
before `features`), `mc_std` is computed on the Keras engine only.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core.errors import LeukoflowError

if TYPE_CHECKING:
    import keras

    from leukoflow.models.inference import PredictFn

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "probability"
FEATURES_NAME = "features"
OPSET = 17
TOLERANCE = 1e-4
CHECK_IMAGES = 4


class OnnxExportError(LeukoflowError):
    """The model could not be exported to ONNX, or the export does not match it."""


@contextlib.contextmanager
def _tf2onnx_raises():
    """Let tf2onnx's graph optimizers raise instead of deep-copying the graph before each.

    tf2onnx copies the whole graph before every optimizer pass so that it can skip a pass
    that fails (`TF2ONNX_CATCH_ERRORS`); the copies take a third of an EfficientNet's
    export. A failing pass then fails the export, which the caller reports.
    """
    previous = os.environ.get("TF2ONNX_CATCH_ERRORS")
    os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TF2ONNX_CATCH_ERRORS"]
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = previous


def exporter_name() -> str:
    """The exporter and its versions, e.g. 'tf2onnx 1.17.0, TensorFlow 2.21.0'."""
    versions = []
    packages = (("tf2onnx", ("tf2onnx",)), ("TensorFlow", ("tensorflow-cpu", "tensorflow")))
    for name, dists in packages:
        for dist in dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions.append(f"{name} {metadata.version(dist)}")
                break
    return ", ".join(versions)


def export_tensorflow(model: keras.Model, path: str | Path, opset: int = OPSET) -> None:
    """Export `model` to the ONNX file `path` (TensorFlow backend, this process).

    Args:
        model: a leukoflow classifier (one image input, one probability output); when it
            has the layer `head_pool`, its output is exported too (`FEATURES_NAME`).
        path: the `.onnx` file to write.
        opset: the ONNX opset.

    Raises:
        OnnxExportError: when TensorFlow or tf2onnx is missing or the conversion fails.
    """
    try:
        import keras
        import tensorflow as tf
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )
    except ImportError as error:
        raise OnnxExportError(
            f"the ONNX export needs TensorFlow and tf2onnx ({error}); install them with "
            "`pip install 'leukoflow[tf]'`"
        ) from None
    from leukoflow.evaluate.uncertainty import FEATURE_LAYER

    outputs, output_names = [model.output], [OUTPUT_NAME]
    if FEATURE_LAYER in {layer.name for layer in model.layers}:
        outputs.append(model.get_layer(FEATURE_LAYER).output)
        output_names.append(FEATURES_NAME)
    exported = keras.Model(model.inputs, outputs)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)
    traced = tf.function(
        lambda images: [tf.cast(t, tf.float32) for t in exported(images, training=False)]
    )
    frozen = convert_variables_to_constants_v2(traced.get_concrete_function(spec))
    names = {frozen.inputs[0].name: INPUT_NAME}
    names.update({t.name: name for t, name in zip(frozen.outputs, output_names, strict=True)})
    try:
        with _tf2onnx_raises():
            tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[frozen.inputs[0].name],
                output_names=[t.name for t in frozen.outputs],
                tensors_to_rename=names,
                opset=opset,
                output_path=str(path),
            )
    except Exception as error:  # tf2onnx raises many types; each means "cannot convert"
        raise OnnxExportError(f"tf2onnx could not convert the model: {error}") from None


def _export_in_child(model_path, path, opset):
    """Run the export in a TensorFlow child process (the Keras backend here is another)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    command = [sys.executable, "-m", "leukoflow.deploy.onnx_model", str(model_path), str(path)]
    done = subprocess.run(
        [*command, "--opset", str(opset)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise OnnxExportError(lines[-1] if lines else f"exit status {done.returncode}")


def onnx_inference(
    path: str | Path, threads: int | None = None, output: str = OUTPUT_NAME
) -> PredictFn:
    """The ONNX model at `path` as a predict function (the contract of `compiled_inference`).

    Args:
        path: the `.onnx` file.
        threads: ONNX Runtime's intra-op threads; None: its default (the physical cores).
        output: `OUTPUT_NAME` (P(all)) or `FEATURES_NAME` (the head's input features).

    Returns:
        float32 batch (N, size, size, 3) in [0, 255] -> P(all) float32 (N,), or the
        features float32 (N, F).

    Raises:
        LeukoflowError: when onnxruntime is missing or cannot load the file, or the file
            has no output `output`.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise LeukoflowError(
            "the ONNX engine needs onnxruntime: `pip install onnxruntime`"
        ) from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # idle compute threads sleep instead of spinning: `leukoflow predict` prepares the next
    # batches in threads of its own, and spinning threads would take their cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
    except Exception as error:  # onnxruntime raises its own exception types
        raise LeukoflowError(f"{path}: ONNX Runtime cannot load it ({error})") from None
    name = session.get_inputs()[0].name
    if output not in {o.name for o in session.get_outputs()}:
        raise LeukoflowError(
            f"{path}: the ONNX model has no output {output!r} (exported before it was added; "
            "rebuild the bundle with `leukoflow bundle`)"
        )

    def predict(x):
        out = session.run([output], {name: np.asarray(x, dtype=np.float32)})[0]
        out = np.asarray(out, dtype=np.float32)
        return out.reshape(-1) if output == OUTPUT_NAME else out

    return predict


def check_images(size: int, n: int = CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """`n` random float32 images (n, size, size, 3) in [0, 255]: the export check's input."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def export_checked(
    model: keras.Model, model_path: str | Path, path: str | Path, opset: int = OPSET
) -> dict:
    """Export the model to `path`, then check it against the Keras model; describe the result.

    Args:
        model: the loaded Keras model (on this process's backend).
        model_path: its `.keras` file (read by the child process on other backends).
        path: the `.onnx` file to write; removed again when the export fails the check.
        opset: the ONNX opset.

    Returns:
        For bundle.json: `file` (the file name, or None when there is no ONNX model),
        `reason` (why not, or None), `exporter`, `opset`, `tolerance`, `check_images` and
        `max_abs_diff` (None when the export failed), `head` (`checked_head`: the record
        MC dropout on the ONNX engine needs, or None). Nothing that varies between two runs
        of the same model (the export's time is logged), so a rerun writes the same
        bundle.json.
    """
    from leukoflow.core.runtime import backend_name
    from leukoflow.models.inference import compiled_inference

    path = Path(path)
    started = time.perf_counter()
    result = {
        "file": None,
        "reason": None,
        "exporter": exporter_name(),
        "opset": opset,
        "tolerance": TOLERANCE,
        "check_images": CHECK_IMAGES,
        "max_abs_diff": None,
        "head": None,
    }
    try:
        if backend_name() == "tensorflow":
            export_tensorflow(model, path, opset)
        else:
            _export_in_child(model_path, path, opset)
        images = check_images(int(model.input_shape[1]))
        # the compiled function evaluate and predict use: an eager call of a network with
        # random weights can differ from it by more than the tolerance (EfficientNetV2M)
        expected = compiled_inference(model)(images)
        probabilities = onnx_inference(path)(images)
        diff = float(np.abs(probabilities - expected).max())
        result["max_abs_diff"] = diff
        if not diff <= TOLERANCE:
            raise OnnxExportError(
                f"the ONNX model's probabilities differ from the Keras model's by {diff:.2g} "
                f"(more than {TOLERANCE:g}) on {CHECK_IMAGES} random images"
            )
        result["file"] = path.name
        result["head"] = checked_head(model, path, images, probabilities)
        log.info(
            "ONNX model exported and checked in %.1f s (largest difference %.2g)",
            time.perf_counter() - started,
            diff,
        )
    except LeukoflowError as error:
        path.unlink(missing_ok=True)
        result["reason"] = str(error)
        log.warning("no ONNX model: %s", error)
    return result


def checked_head(
    model: keras.Model, path: str | Path, images: np.ndarray, probabilities: np.ndarray
) -> dict | None:
    """The record of the model's head (`leukoflow.evaluate.uncertainty.Head.record`) when the
    numpy head on the ONNX file's features reproduces its probabilities within `TOLERANCE`;
    None otherwise (the reason logged: MC dropout then runs on the Keras engine only).

    Args:
        model: the Keras model (its `probability` and `head_dropout` layers).
        path: its checked `.onnx` file.
        images: the check's images.
        probabilities: the ONNX file's P(all) of them.
    """
    from leukoflow.evaluate.uncertainty import Head

    try:
        head = Head.of_model(model)
        features = onnx_inference(path, output=FEATURES_NAME)(images)
    except LeukoflowError as error:
        log.warning("no MC-dropout head for the ONNX engine (mc_std on Keras only): %s", error)
        return None
    diff = float(np.abs(head(features) - probabilities).max())
    if not diff <= TOLERANCE:
        log.warning(
            "no MC-dropout head for the ONNX engine (mc_std on Keras only): the head on the "
            "ONNX features differs from the ONNX probabilities by %.2g (more than %g)",
            diff,
            TOLERANCE,
        )
        return None
    return head.record()


def main(argv: list[str] | None = None) -> None:
    """`python -m leukoflow.deploy.onnx_model MODEL OUT [--opset N]`: TensorFlow export."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model", help="the .keras model")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    from leukoflow.models import load_model

    try:
        export_tensorflow(load_model(args.model), args.out, args.opset)
    except LeukoflowError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
