"""The optimisation of a training job: its phases, freezing the backbone, AdamW with a cosine
decay, and the learning rate it is at.

A pretrained backbone (weights "imagenet" or a file) trains `warmup_epochs` with the
backbone frozen at `learning_rate`, then the whole network at `fine_tune_learning_rate`;
without pretrained weights one phase at `learning_rate`. Each phase has its own AdamW with
a cosine decay over the phase's steps; the rates are scaled for `devices` by `lr_scaling`
(`leukoflow.train.parallel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from leukoflow.train.parallel import scaled_learning_rate

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Phase:
    """Epochs `[start, end)` trained with the backbone frozen or not, at `learning_rate`."""

    name: str
    start: int
    end: int
    learning_rate: float
    frozen: bool


def phases(settings: Mapping) -> list[Phase]:
    """The training phases of the settings, in order (see the module docstring), their
    learning rates scaled for `devices` by `lr_scaling` (`leukoflow.train.parallel`)."""
    epochs = settings["epochs"]
    devices, rule = settings.get("devices", 1), settings.get("lr_scaling", "none")
    rate = scaled_learning_rate(settings["learning_rate"], devices, rule)
    if settings["weights"] == "none":
        return [Phase("train", 0, epochs, rate, frozen=False)]
    warm = min(settings["warmup_epochs"], epochs)
    result = []
    if warm:
        result.append(Phase("warmup", 0, warm, rate, frozen=True))
    if epochs > warm:
        fine = scaled_learning_rate(settings["fine_tune_learning_rate"], devices, rule)
        result.append(Phase("fine_tune", warm, epochs, fine, False))
    return result


def set_backbone_frozen(model: keras.Model, frozen: bool) -> None:
    """Freeze (or unfreeze) every layer but the head. Frozen BatchNorm runs in inference mode."""
    from leukoflow.models import backbone_layers

    for layer in backbone_layers(model):
        layer.trainable = not frozen


def compile_model(
    model: keras.Model,
    learning_rate: float,
    decay_steps: int,
    weight_decay: float,
    jit_compile: bool,
) -> keras.Model:
    """Compile for binary classification: AdamW with cosine decay over `decay_steps` steps.

    Loss binary cross-entropy, metric accuracy.

    Args:
        model: the classifier.
        learning_rate: the initial learning rate.
        decay_steps: steps of the cosine decay (at least 1 is used).
        weight_decay: AdamW's decoupled weight decay.
        jit_compile: compile the train and predict steps with XLA.

    Returns:
        `model`, compiled.
    """
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate, decay_steps=max(1, int(decay_steps))
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's learning rate at its current step, as a float."""
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
