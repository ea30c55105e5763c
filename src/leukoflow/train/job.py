"""Training of one architecture: phases, AdamW + cosine decay, best epoch by validation F1, resume.

`train(...)` is what `leukoflow train` runs. It writes the files it is given:
- the model (`model.keras`): the best epoch's model (by validation weighted F1 at
  threshold 0.5), in the dtype policy it trained with and without optimizer state;
- the history (`history.csv`): one row per epoch (`HISTORY_COLUMNS`);
- the validation predictions: `row,path,subject,y,probability_all` of the best model;
- the DVCLive folder, when given: every epoch's figures through DVCLive
  (`leukoflow.train.livelog`), rewritten from the checkpoint's history on resume;
- the checkpoint folder while training (`leukoflow.train.checkpoint`): a job started again with
  the same settings and inputs continues after the last completed epoch. It is removed
  once the outputs are written.

Phases, freezing and the optimizer (AdamW with a cosine decay per phase) are
`leukoflow.train.schedule`'s. Early stopping (`patience` epochs without a better validation F1)
acts only in the unfrozen phase.

Speed: one compiled train step and one compiled predict step per phase (all batches full);
precision and XLA as `leukoflow.core.runtime.decide` says. `devices` > 1 trains data-parallel on
that many devices (`leukoflow.train.parallel`): global batches of `batch_size` x `devices` and
learning rates scaled by `lr_scaling`. A checkpoint written on N devices resumes on M (the
cosine schedule continues at the same fraction of its phase, with M's batch and rate).

The saved model keeps the dtype policy it trained with (float32 on a CPU, mixed_bfloat16 on
an A100 or H100), so evaluation, timing and `leukoflow predict` run it in that precision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from leukoflow.core import runtime
from leukoflow.core.atomic import atomic_path
from leukoflow.core.diskspace import require_space, training_bytes
from leukoflow.core.errors import ConfigError, LeukoflowError
from leukoflow.stain.stores import open_store
from leukoflow.train.checkpoint import (
    Checkpoint,
    assign_values,
    fingerprint,
    initial_state,
    variable_values,
)
from leukoflow.train.livelog import TrainingLive
from leukoflow.train.loader import TrainBatches, balanced_class_weights
from leukoflow.train.parallel import Replicas, global_batch_size
from leukoflow.train.schedule import (
    compile_model,
    current_learning_rate,
    phases,
    set_backbone_frozen,
)

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "loss",
    "val_loss",
    "accuracy",
    "val_accuracy",
    "val_weighted_f1",
    "learning_rate",
    "seconds",
]
REQUIRED_KEYS = (
    "input_size",
    "weights",
    "epochs",
    "warmup_epochs",
    "steps_per_epoch",
    "batch_size",
    "learning_rate",
    "fine_tune_learning_rate",
    "weight_decay",
    "dropout",
    "patience",
    "balance",
    "online_augmentation",
    "mixed_precision",
    "jit_compile",
    "devices",
    "lr_scaling",
    "seed",
)


def check_settings(settings: Mapping) -> None:
    """Check that the merged training settings have every key of `REQUIRED_KEYS`.

    Raises:
        ConfigError: naming the missing keys.
    """
    missing = [key for key in REQUIRED_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"training settings lack {', '.join(missing)}")


def validation_metrics(labels: ArrayLike, probabilities: ArrayLike) -> dict[str, float]:
    """`val_loss` (binary cross-entropy), `val_accuracy` and `val_weighted_f1` at threshold 0.5.

    Args:
        labels: (N,) 0/1.
        probabilities: (N,) probabilities of `all` (clipped to [1e-7, 1 - 1e-7] for the loss).
    """
    from sklearn.metrics import f1_score

    labels = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    predicted = (p >= 0.5).astype(int)
    return {
        "val_loss": float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))),
        "val_accuracy": float(np.mean(predicted == labels)),
        "val_weighted_f1": float(
            f1_score(labels.astype(int), predicted, average="weighted", zero_division=0)
        ),
    }


SCRATCH_BN_MOMENTUM = 0.9


def _build(arch, settings, weights_file, load_weights=True):
    """The model of `arch` as configured (augmentation in front when enabled).

    Trained from scratch (weights "none"), every BatchNormalization layer gets momentum
    `SCRATCH_BN_MOMENTUM` (PyTorch's default; Keras' 0.99 leaves the moving statistics
    near their initial values for the first few hundred steps, so a short run predicts
    one class at inference). Pretrained backbones keep their layers' momentum.
    load_weights=False builds the same model with random weights.
    """
    import keras

    from leukoflow.models import build_model

    augmentation = None
    online = settings["online_augmentation"]
    if online.get("enabled"):
        from leukoflow.models.augmentation import build_online_augmentation

        augmentation = build_online_augmentation(
            rotation=online["rotation"],
            flip=online["flip"],
            noise_std=online["noise_std"],
            seed=settings["seed"],
        )
    model = build_model(
        arch,
        settings["input_size"],
        weights=settings["weights"] if load_weights else "none",
        dropout=settings["dropout"],
        augmentation=augmentation,
        weights_file=(weights_file or None) if load_weights else None,
    )
    if settings["weights"] == "none":
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    return model


def _check_space(arch, model, outputs):
    """Stop before the first epoch when the checkpoints and the model will not fit the disk.

    A checkpoint left by a killed run is replaced, so its bytes count as free.
    """
    kept = sum(f.stat().st_size for f in outputs.checkpoint.rglob("*") if f.is_file())
    needed = training_bytes(model.count_params()) - kept
    require_space(outputs.checkpoint.parent, needed, f"training {arch} (checkpoints and model)")


def _check_store(images, name, size):
    """Raise LeukoflowError unless `images` is uint8 (N, size, size, 3)."""
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise LeukoflowError(
            f"{name} store holds {images.dtype} {images.shape}; "
            f"expected uint8 (N, {size}, {size}, 3)"
        )


@dataclass(frozen=True)
class TrainOutputs:
    """The files a training job writes, its checkpoint folder and its DVCLive folder."""

    model: Path
    history: Path
    val_predictions: Path
    checkpoint: Path
    live: Path | None = None

    @classmethod
    def of(
        cls,
        model: str | Path,
        history: str | Path,
        val_predictions: str | Path,
        checkpoint: str | Path,
        live: str | Path | None = None,
    ) -> TrainOutputs:
        """The outputs from four paths (str or Path) and the DVCLive folder (or None)."""
        live = Path(live) if live else None
        return cls(Path(model), Path(history), Path(val_predictions), Path(checkpoint), live)


def train(
    arch: str,
    train_store: str | Path,
    val_store: str | Path,
    settings: dict,
    weights_file: str | Path | None,
    outputs: TrainOutputs,
) -> pd.DataFrame:
    """Train `arch`, resuming from the checkpoint when it fits; write the outputs.

    Args:
        arch: the architecture (a registry name).
        train_store: the training `.npy` image store, its `.csv` index beside it (column `y`).
        val_store: the validation store, likewise.
        settings: the merged training settings (`REQUIRED_KEYS`).
        weights_file: the weights file of "imagenet" or of a path, or None.
        outputs: the model, history and validation-prediction files to write and the
            checkpoint folder.

    Returns:
        The history table (`HISTORY_COLUMNS`).

    Raises:
        ConfigError: when settings are missing, or `mixed_precision` or `jit_compile` has
            a value outside `leukoflow.core.runtime`'s choices.
        LeukoflowError: for a missing or broken store, a store of the wrong shape, or a
            weights file that is missing or does not fit.
    """
    import keras

    check_settings(settings)
    size = settings["input_size"]
    train_images, train_index = open_store(train_store)
    val_images, val_index = open_store(val_store)
    _check_store(train_images, "training", size)
    _check_store(val_images, "validation", size)

    decided = runtime.decide(settings)
    replicas = Replicas(decided)
    log.info("%s: %s on %s", arch, decided.as_dict(), replicas.describe())
    runtime.apply(decided)
    keras.utils.set_random_seed(settings["seed"])

    class_weights = None
    if settings["balance"] == "class_weights":
        class_weights = balanced_class_weights(train_index["y"])
    batches = TrainBatches(
        train_images,
        train_index["y"].to_numpy(),
        global_batch_size(settings),
        settings["seed"],
        class_weights=class_weights,
        steps=settings["steps_per_epoch"],
    )
    with replicas.scope():
        model = _build(arch, settings, weights_file)  # checks the weights file first
        _check_space(arch, model, outputs)
        checkpoint = Checkpoint(
            outputs.checkpoint,
            fingerprint(arch, settings, train_store, val_store, weights_file),
        )
        state = checkpoint.load()
        if state is None:
            state = initial_state()
            best_values = variable_values(model.variables)
        else:
            log.info("resuming %s after epoch %d", arch, state["epochs_done"])
            assign_values(model.variables, checkpoint.arrays("model"), "variables")
            best_values = checkpoint.arrays("best")
        live = TrainingLive(outputs.live, state["history"]) if outputs.live else None
        fit = _Fit(arch, settings, model, replicas, batches, checkpoint, live)
        for phase in phases(settings):
            if not state["stopped"] and state["epochs_done"] < phase.end:
                best_values = fit.phase(phase, decided, state, best_values, val_images, val_index)
        if live:
            live.end()

    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    _write_outputs(arch, settings, best_values, state, val_index, history, outputs)
    checkpoint.remove()
    return history


@dataclass
class _Fit:
    """What every epoch of one training job uses (see `train`)."""

    arch: str
    settings: dict
    model: keras.Model
    replicas: Replicas
    batches: TrainBatches
    checkpoint: Checkpoint
    live: TrainingLive | None

    def phase(self, phase, decided, state, best_values, val_images, val_index):
        """Train the epochs of `phase` not done yet, updating `state`; the best values."""
        model, settings, steps = self.model, self.settings, len(self.batches)
        set_backbone_frozen(model, phase.frozen)
        compile_model(
            model,
            phase.learning_rate,
            (phase.end - phase.start) * steps,
            settings["weight_decay"],
            decided.jit_compile,
        )
        model.optimizer.build(model.trainable_variables)
        if state["epochs_done"] > phase.start:
            assign_values(
                model.optimizer.variables,
                self.checkpoint.arrays("optimizer"),
                "optimizer variables",
            )
            # the schedule's step, in this run's steps per epoch (another device count
            # than the checkpoint's gives another number of steps)
            model.optimizer.iterations.assign((state["epochs_done"] - phase.start) * steps)
        else:
            state["stale"] = 0
        val_labels = val_index["y"].to_numpy()
        for epoch in range(state["epochs_done"], phase.end):
            started = time.perf_counter()
            learning_rate = current_learning_rate(model)
            loss, accuracy = self.replicas.train_epoch(model, self.batches, epoch)
            probabilities = self.replicas.predict_images(model, val_images, self.batches.batch_size)
            metrics = validation_metrics(val_labels, probabilities)
            improved = metrics["val_weighted_f1"] > state["best_score"]
            if improved:
                state.update(best_score=metrics["val_weighted_f1"], best_epoch=epoch, stale=0)
                state["best_val_probabilities"] = probabilities.tolist()
                best_values = variable_values(model.variables)
            else:
                state["stale"] += 1
            row = {"epoch": epoch, "phase": phase.name, "loss": loss, "accuracy": accuracy}
            row.update(metrics, learning_rate=learning_rate)
            row["seconds"] = time.perf_counter() - started
            state["history"].append(row)
            state["epochs_done"] = epoch + 1
            state["stopped"] = not phase.frozen and state["stale"] >= settings["patience"]
            self.checkpoint.save(state, model, improved, best_values)
            if self.live:
                self.live.log_epoch(row)
            log.info(
                "%s epoch %d/%d (%s): loss %.4f, val_loss %.4f, val weighted F1 %.4f, %.1f s",
                self.arch,
                epoch + 1,
                settings["epochs"],
                phase.name,
                loss,
                metrics["val_loss"],
                metrics["val_weighted_f1"],
                row["seconds"],
            )
            if state["stopped"]:
                log.info("%s: early stop after epoch %d (patience)", self.arch, epoch + 1)
                break
        return best_values


def _write_outputs(arch, settings, best_values, state, val_index, history, outputs):
    """The model (in the dtype policy it trained with, no optimizer), the history and the
    validation predictions, atomically."""
    final = _build(arch, settings, None, load_weights=False)
    assign_values(final.variables, best_values, "best weights")
    with atomic_path(outputs.model) as tmp:
        final.save(tmp)
    with atomic_path(outputs.history) as tmp:
        history.to_csv(tmp, index=False)
    predictions = pd.DataFrame(
        {
            "row": val_index["row"] if "row" in val_index else np.arange(len(val_index)),
            "path": val_index["path"] if "path" in val_index else "",
            "subject": val_index["subject"] if "subject" in val_index else "",
            "y": val_index["y"].astype(int),
            "probability_all": state["best_val_probabilities"],
        }
    )
    with atomic_path(outputs.val_predictions) as tmp:
        predictions.to_csv(tmp, index=False)
