"""Model building and loading: one function for every architecture of the registry.

`build_model` makes a flat functional classifier (no nested backbone model, so saliency
reaches the last feature map by name):

    images float32 (None, s, s, 3) in [0, 255]
    -> online augmentation (optional; active only in training)
    -> the architecture's preprocessing and backbone (`registry.ARCHITECTURES[arch].builder`)
    -> head_pool (GlobalAveragePooling2D) -> head_dropout
    -> probability (Dense(1), sigmoid, float32)

Weights (`weights` argument):
- "none": random initialisation.
- "imagenet": the file written by `leukoflow fetch-weights` (rule `fetch_weights`), passed
  as `weights_file`; it holds the backbone's weights.
- a path (.h5 / .weights.h5): either a whole leukoflow model of the same architecture
  (`model.save_weights(...)`, recognised by its Dense head layer) that loads into every
  layer, or backbone weights (a file of `fetch-weights`, or a Keras `..._notop.h5` file)
  that load into the backbone; the head stays randomly initialised.

This module does not import Keras at import time (the Snakefile imports the registry).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from leukoflow.core.errors import LeukoflowError
from leukoflow.models.registry import ARCHITECTURES, get_spec

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

HEAD_LAYERS = ("head_pool", "head_dropout", "probability")
__all__ = [
    "ARCHITECTURES",
    "build_model",
    "load_model",
    "last_conv_layer_name",
    "backbone_layers",
    "fetch_imagenet_weights",
]


def _builder(arch):
    """The builder function of `arch`: `builder(images, weights=None) -> keras.Model`."""
    module, function = get_spec(arch).builder.split(":")
    return getattr(importlib.import_module(module), function)


def build_model(
    arch: str,
    input_size: int,
    weights: str = "none",
    dropout: float = 0.3,
    augmentation: keras.Layer | None = None,
    weights_file: str | Path | None = None,
) -> keras.Model:
    """The classifier of `arch` for square RGB inputs of `input_size` pixels.

    Args:
        arch: a registry name.
        input_size: side of the input, pixels.
        weights: "none", "imagenet" (reads `weights_file`, written by `leukoflow
            fetch-weights`) or the path of a weights file (see the module docstring).
        dropout: rate of the head's dropout.
        augmentation: a Keras layer put in front of the preprocessing, or None.
        weights_file: the file of "imagenet" (or, if set, the file read instead of the
            path in `weights`).

    Returns:
        Input float32 `(None, input_size, input_size, 3)` in [0, 255]; output float32
        `(None, 1)`, the sigmoid probability of class `all`.

    Raises:
        ConfigError: for an unknown architecture.
        LeukoflowError: when a weights file is missing, unreadable, or does not fit the
            architecture, or "imagenet" is asked of an architecture without it.
    """
    import keras
    from keras import layers

    builder = _builder(arch)
    path = _weights_path(arch, weights, weights_file)
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="images")
    x = augmentation(inputs) if augmentation is not None else inputs
    backbone = builder(x)
    x = layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    model = keras.Model(inputs, outputs, name=arch)
    if path is not None:
        _load_weights_file(model, arch, input_size, path)
    return model


def load_model(path: str | Path) -> keras.Model:
    """A model saved by leukoflow (`.keras`), loaded with safe_mode and our custom layers.

    Raises:
        LeukoflowError: when the file does not exist.
    """
    import keras

    importlib.import_module("leukoflow.models.zoo")  # registers CaffePreprocess
    if not Path(path).is_file():
        raise LeukoflowError(f"model file {path} does not exist")
    return keras.saving.load_model(path, safe_mode=True)


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the layer whose output is the last feature map (the input of `head_pool`)."""
    node = model.get_layer("head_pool")._inbound_nodes[0]
    return node.input_tensors[0]._keras_history.operation.name


def backbone_layers(model: keras.Model) -> list[keras.Layer]:
    """All layers but the input and the head: augmentation (weightless), preprocessing, backbone."""
    return [
        layer
        for layer in model.layers
        if type(layer).__name__ != "InputLayer" and layer.name not in HEAD_LAYERS
    ]


def _weights_path(arch, weights, weights_file):
    """The weights file to read, or None for random initialisation."""
    spec = get_spec(arch)
    if weights == "none":
        return None
    if weights == "imagenet":
        if not spec.pretrained:
            raise LeukoflowError(f"{arch} has no ImageNet weights; use weights 'none' or a file")
        if not weights_file:
            raise LeukoflowError(
                f"{arch}: weights 'imagenet' need the file written by `leukoflow fetch-weights`; "
                "run the `fetch_weights` rule (`snakemake fetch_weights`) and pass --weights-file"
            )
        if not Path(weights_file).is_file():
            raise LeukoflowError(
                f"{arch}: ImageNet weights file {weights_file} does not exist; run the "
                f"`fetch_weights` rule (e.g. `snakemake {weights_file}`) or "
                f"`leukoflow fetch-weights --arch {arch} --out {weights_file}` with network access"
            )
        return Path(weights_file)
    path = Path(weights_file or weights)
    if not path.is_file():
        raise LeukoflowError(f"{arch}: weights file {path} does not exist")
    if path.suffix != ".h5":
        raise LeukoflowError(f"{arch}: weights file {path} is not a .h5 / .weights.h5 file")
    return path


def _file_kind(path):
    """('keras3' | 'legacy', holds the whole model?) for a .h5 weights file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs or "model_weights" in f:
                return "legacy", False
            # Keras 3 names layers by class here; backbones (include_top=False) have no Dense.
            names = set(f["layers"].keys()) if "layers" in f else set()
            return "keras3", "dense" in names
    except OSError as error:
        raise LeukoflowError(f"weights file {path} is not a readable HDF5 file: {error}") from error


def _load_keras_weights(model, path, kind):
    """`model.load_weights(path)` for either format, whatever the file is called."""
    if kind == "legacy" or str(path).endswith(".weights.h5"):
        model.load_weights(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "weights.weights.h5"
        os.symlink(Path(path).resolve(), link)
        model.load_weights(link)


def _load_weights_file(model, arch, input_size, path):
    """Load a whole-model or backbone weights file into `model`; clear error on a mismatch."""
    import keras

    kind, whole = _file_kind(path)
    try:
        if whole:
            _load_keras_weights(model, path, kind)
            log.info("loaded whole-model weights from %s", path)
            return
        standalone = _builder(arch)(keras.Input((input_size, input_size, 3), dtype="float32"))
        _load_keras_weights(standalone, path, kind)
    except (ValueError, KeyError) as error:
        raise LeukoflowError(f"weights file {path} does not fit {arch}: {error}") from error
    _copy_weighted_layers(standalone.layers, backbone_layers(model), path, arch)
    log.info("loaded backbone weights from %s", path)


def _copy_weighted_layers(source_layers, target_layers, path, arch):
    """Copy weights layer by layer, in build order, from `source_layers` to `target_layers`."""
    source = [layer for layer in source_layers if layer.weights]
    target = [layer for layer in target_layers if layer.weights]
    if len(source) != len(target):
        raise LeukoflowError(
            f"weights file {path} does not fit {arch}: {len(source)} layers with weights, "
            f"the backbone has {len(target)}"
        )
    for src, dst in zip(source, target, strict=True):
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in dst.weights]
        if [v.shape for v in values] != shapes:
            raise LeukoflowError(
                f"weights file {path} does not fit {arch}: layer {dst.name} expects {shapes}"
            )
        dst.set_weights(values)


def fetch_imagenet_weights(arch: str, out: str | Path) -> Path:
    """Download the ImageNet weights of `arch`'s backbone (Keras' own download) to `out`.

    The file holds the backbone as `builder(images)` builds it, in the Keras 3 weights
    format, written atomically.

    Args:
        arch: a registry name with ImageNet weights.
        out: the weights file to write.

    Returns:
        `out`, as a Path.

    Raises:
        ConfigError: for an unknown architecture.
        LeukoflowError: when `arch` has no ImageNet weights or the download fails.
    """
    import keras

    from leukoflow.core.atomic import atomic_path

    spec = get_spec(arch)
    if not spec.pretrained:
        raise LeukoflowError(f"{arch} has no ImageNet weights to fetch")
    size = spec.native_size
    try:
        backbone = _builder(arch)(keras.Input((size, size, 3), dtype="float32"), weights="imagenet")
    except Exception as error:  # urllib/HTTP/OS errors all mean the same here: no download
        raise LeukoflowError(
            f"could not download the ImageNet weights of {arch} ({type(error).__name__}: {error}); "
            "this needs network access: run `snakemake fetch_weights` (or `leukoflow "
            f"fetch-weights --arch {arch} --out {out}`) on a machine with internet, or copy the "
            f"file to {out}"
        ) from error
    with atomic_path(out, suffix=".weights.h5") as tmp:
        backbone.save_weights(tmp)
    return Path(out)
