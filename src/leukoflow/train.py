"""Training of one architecture: phases, AdamW + cosine decay, best epoch by validation F1, resume.

`train(...)` is what `leukoflow train` runs. It writes into `out_dir`:
- `model.keras`: the best epoch's model (by validation weighted F1 at threshold 0.5),
  float32 and without optimizer state;
- `history.csv`: one row per epoch (`HISTORY_COLUMNS`), training and validation metrics;
- `val_predictions.csv`: `row,path,subject,y,probability_all` of the best model;
- `checkpoint/` while training: written atomically after every epoch (model and optimizer
  variables with the dropout/augmentation RNG states, epoch, best score and weights,
  history, and a fingerprint of settings and inputs). A job started again with the same
  fingerprint continues after the last completed epoch; another fingerprint discards it.
  It is removed once the outputs are written.

Phases: a pretrained backbone (weights "imagenet" or a file) trains `warmup_epochs` with the
backbone frozen at `learning_rate`, then the whole network at `fine_tune_learning_rate`;
without pretrained weights one phase at `learning_rate`. Each phase has its own AdamW
with a cosine decay over the phase's steps. Early stopping (`patience` epochs without a
better validation F1) acts only in the unfrozen phase.

Speed: one compiled train step and one compiled predict step per phase (all batches full).
`runtime_options` picks mixed precision, XLA and Grappler: on a GPU mixed_bfloat16 and
XLA; on a CPU float32, and on TensorFlow neither XLA nor Grappler (both made the first,
tracing step slower; figures in `runtime_options`).
`compile_model` and `train_one_epoch` are the pieces a throughput benchmark reuses.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leukoflow.atomic import atomic_dir, atomic_path
from leukoflow.errors import ConfigError, LeukoflowError
from leukoflow.loader import TrainBatches, balanced_class_weights, ordered_batches
from leukoflow.stores import open_store

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
    "seed",
)
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Phase:
    """Epochs `[start, end)` trained with the backbone frozen or not, at `learning_rate`."""

    name: str
    start: int
    end: int
    learning_rate: float
    frozen: bool


def check_settings(settings):
    """Raise ConfigError naming the missing training keys."""
    missing = [key for key in REQUIRED_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"training settings lack {', '.join(missing)}")


def has_gpu():
    """Whether the current Keras backend sees a GPU."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    return False


def runtime_options(settings, gpu=None):
    """How to run: `{"dtype_policy": str, "jit_compile": bool, "graph_optimizer": bool}`.

    From the mixed_precision / jit_compile settings; auto: mixed_bfloat16 and XLA on a
    GPU; float32 on a CPU, with XLA only on JAX (where every step is XLA-compiled anyway).
    graph_optimizer: TensorFlow's Grappler, kept where XLA is off only on a GPU. On a CPU
    it is off: it cut the first (tracing) step of EfficientNetV2M at 64 px from 98 to
    72 CPU s with the same per-step time, and XLA on a CPU made it 154 CPU s and each
    step five times slower.
    """
    import keras

    gpu = has_gpu() if gpu is None else gpu
    precision = settings["mixed_precision"]
    if precision == "auto":
        policy = "mixed_bfloat16" if gpu else "float32"
    else:
        policy = "float32" if precision == "off" else precision
    jit = settings["jit_compile"]
    if jit == "auto":
        jit_compile = gpu or keras.backend.backend() == "jax"
    else:
        jit_compile = jit == "on"
    return {"dtype_policy": policy, "jit_compile": jit_compile, "graph_optimizer": gpu}


def apply_runtime_options(options):
    """Set the global dtype policy and, on TensorFlow, Grappler on or off (for this process)."""
    import keras

    keras.config.set_dtype_policy(options["dtype_policy"])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": not options["graph_optimizer"]}
        )


def phases(settings):
    """The training phases (see the module docstring)."""
    epochs = settings["epochs"]
    if settings["weights"] == "none":
        return [Phase("train", 0, epochs, settings["learning_rate"], frozen=False)]
    warm = min(settings["warmup_epochs"], epochs)
    result = []
    if warm:
        result.append(Phase("warmup", 0, warm, settings["learning_rate"], frozen=True))
    if epochs > warm:
        result.append(Phase("fine_tune", warm, epochs, settings["fine_tune_learning_rate"], False))
    return result


def set_backbone_frozen(model, frozen):
    """Freeze (or unfreeze) every layer but the head. Frozen BatchNorm runs in inference mode."""
    from leukoflow.models import backbone_layers

    for layer in backbone_layers(model):
        layer.trainable = not frozen


def compile_model(model, learning_rate, decay_steps, weight_decay, jit_compile):
    """Compile for binary classification: AdamW with cosine decay over `decay_steps` steps.

    Loss binary cross-entropy, metric accuracy. Returns the model.
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


def train_one_epoch(model, batches):
    """Train on every `(images, labels, sample_weights)` of `batches`; mean loss and accuracy."""
    losses, accuracies = [], []
    for images, labels, weights in batches:
        logs = model.train_on_batch(images, labels, sample_weight=weights, return_dict=True)
        losses.append(logs["loss"])
        accuracies.append(logs["accuracy"])
    if not losses:
        raise LeukoflowError("an epoch had no batches")
    return float(np.mean(losses)), float(np.mean(accuracies))


def predict_probabilities(model, images, batch_size):
    """Probabilities of `all`, float32 `(N,)`, for uint8 images `(N, s, s, 3)` in store order."""
    out = np.empty(len(images), dtype=np.float32)
    for start, batch in ordered_batches(images, batch_size):
        probabilities = np.asarray(model.predict_on_batch(batch), dtype=np.float32).reshape(-1)
        stop = min(start + batch_size, len(images))
        out[start:stop] = probabilities[: stop - start]
    return out


def validation_metrics(labels, probabilities):
    """`val_loss` (binary cross-entropy), `val_accuracy` and `val_weighted_f1` at threshold 0.5."""
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


def current_learning_rate(model):
    """The optimizer's learning rate at its current step, as a float."""
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _file_identity(path):
    """What identifies an input file cheaply: name, size, modification time."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def fingerprint(arch, settings, train_store, val_store, weights_file):
    """sha256 of the architecture, settings, backend and input files (index contents, sizes)."""
    import keras

    parts = {
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "settings": settings,
        "backend": keras.backend.backend(),
        "inputs": [],
    }
    for store in (train_store, val_store):
        csv = Path(store).with_suffix(".csv")
        digest = hashlib.sha256(csv.read_bytes()).hexdigest() if csv.is_file() else None
        parts["inputs"].append([_file_identity(store), digest])
    if weights_file:
        parts["inputs"].append(_file_identity(weights_file))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _values(variables):
    import keras

    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def _assign(variables, arrays, what):
    """Assign saved arrays to `variables`, in order; LeukoflowError if they do not match."""
    if len(variables) != len(arrays):
        raise LeukoflowError(
            f"checkpoint {what} do not match the model: "
            f"{len(arrays)} saved, {len(variables)} expected"
        )
    for variable, array in zip(variables, arrays, strict=True):
        if array.shape != tuple(variable.shape):
            raise LeukoflowError(f"checkpoint {what} do not match the model ({variable.path})")
        variable.assign(array)


class Checkpoint:
    """The `checkpoint/` folder: `state.json`, `model.npz`, `optimizer.npz`, `best.npz`."""

    def __init__(self, folder, fingerprint_hex):
        self.folder = Path(folder)
        self.fingerprint = fingerprint_hex

    def load(self):
        """The saved state (dict) if the folder exists and has our fingerprint, else None.

        Temporary folders of an interrupted save are removed; if the job died between
        removing the old folder and renaming the new one, the complete new one (its
        `state.json` is written last) takes its place.
        """
        self._recover()
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return None
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError:
            state = {}
        if state.get("fingerprint") != self.fingerprint:
            log.warning("discarding checkpoint %s: other settings or inputs", self.folder)
            shutil.rmtree(self.folder)
            return None
        return state

    def _recover(self):
        partial = sorted(
            self.folder.parent.glob(f".{self.folder.name}.*"), key=lambda p: p.stat().st_mtime
        )
        complete = [p for p in partial if (p / "state.json").is_file()]
        if complete and not self.folder.exists():
            os.replace(complete[-1], self.folder)
            partial.remove(complete[-1])
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)

    def arrays(self, name):
        """The arrays saved in `name`.npz, in order."""
        with np.load(self.folder / f"{name}.npz") as data:
            return [data[f"a{i}"] for i in range(len(data.files))]

    def save(self, state, model, best_changed, best_values):
        """Write the folder atomically; `best.npz` is hard-linked when it did not change."""
        state = dict(state, fingerprint=self.fingerprint)
        with atomic_dir(self.folder) as tmp:
            _save_npz(tmp / "model.npz", _values(model.variables))
            _save_npz(tmp / "optimizer.npz", _values(model.optimizer.variables))
            previous = self.folder / "best.npz"
            if best_changed or not previous.is_file():
                _save_npz(tmp / "best.npz", best_values)
            else:
                os.link(previous, tmp / "best.npz")
            (tmp / "state.json").write_text(json.dumps(state))

    def remove(self):
        if self.folder.exists():
            shutil.rmtree(self.folder)


def _save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})


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


def _check_store(images, name, size):
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise LeukoflowError(
            f"{name} store holds {images.dtype} {images.shape}; "
            f"expected uint8 (N, {size}, {size}, 3)"
        )


def train(arch, train_store, val_store, settings, weights_file, out_dir):
    """Train `arch` (resuming from `out_dir/checkpoint` if it fits); returns the history table.

    train_store / val_store: `.npy` image stores with their `.csv` index (column `y`).
    settings: the merged training settings (`REQUIRED_KEYS`). weights_file: the weights
    file for "imagenet" or a path, or None.
    """
    import keras

    check_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = settings["input_size"]
    train_images, train_index = open_store(train_store)
    val_images, val_index = open_store(val_store)
    _check_store(train_images, "training", size)
    _check_store(val_images, "validation", size)

    options = runtime_options(settings)
    log.info("%s: %s", arch, options)
    apply_runtime_options(options)
    keras.utils.set_random_seed(settings["seed"])

    class_weights = None
    if settings["balance"] == "class_weights":
        class_weights = balanced_class_weights(train_index["y"])
    batches = TrainBatches(
        train_images,
        train_index["y"].to_numpy(),
        settings["batch_size"],
        settings["seed"],
        class_weights=class_weights,
        steps=settings["steps_per_epoch"],
    )
    val_labels = val_index["y"].to_numpy()

    model = _build(arch, settings, weights_file)  # checks the weights file first
    checkpoint = Checkpoint(
        out_dir / "checkpoint",
        fingerprint(arch, settings, train_store, val_store, weights_file),
    )
    state = checkpoint.load()
    if state is None:
        state = {
            "epochs_done": 0,
            "best_score": -1.0,
            "best_epoch": -1,
            "stale": 0,
            "stopped": False,
            "history": [],
            "best_val_probabilities": [],
        }
        best_values = _values(model.variables)
    else:
        log.info("resuming %s after epoch %d", arch, state["epochs_done"])
        _assign(model.variables, checkpoint.arrays("model"), "variables")
        best_values = checkpoint.arrays("best")

    for phase in phases(settings):
        if state["stopped"] or state["epochs_done"] >= phase.end:
            continue
        set_backbone_frozen(model, phase.frozen)
        compile_model(
            model,
            phase.learning_rate,
            (phase.end - phase.start) * len(batches),
            settings["weight_decay"],
            options["jit_compile"],
        )
        model.optimizer.build(model.trainable_variables)
        if state["epochs_done"] > phase.start:
            _assign(
                model.optimizer.variables, checkpoint.arrays("optimizer"), "optimizer variables"
            )
        else:
            state["stale"] = 0
        for epoch in range(state["epochs_done"], phase.end):
            started = time.perf_counter()
            learning_rate = current_learning_rate(model)
            loss, accuracy = train_one_epoch(model, batches.epoch(epoch))
            probabilities = predict_probabilities(model, val_images, settings["batch_size"])
            metrics = validation_metrics(val_labels, probabilities)
            improved = metrics["val_weighted_f1"] > state["best_score"]
            if improved:
                state.update(best_score=metrics["val_weighted_f1"], best_epoch=epoch, stale=0)
                state["best_val_probabilities"] = probabilities.tolist()
                best_values = _values(model.variables)
            else:
                state["stale"] += 1
            row = {"epoch": epoch, "phase": phase.name, "loss": loss, "accuracy": accuracy}
            row.update(metrics, learning_rate=learning_rate)
            row["seconds"] = time.perf_counter() - started
            state["history"].append(row)
            state["epochs_done"] = epoch + 1
            state["stopped"] = not phase.frozen and state["stale"] >= settings["patience"]
            checkpoint.save(state, model, improved, best_values)
            log.info(
                "%s epoch %d/%d (%s): loss %.4f, val_loss %.4f, val weighted F1 %.4f, %.1f s",
                arch,
                epoch + 1,
                settings["epochs"],
                phase.name,
                loss,
                metrics["val_loss"],
                metrics["val_weighted_f1"],
                row["seconds"],
            )
            if state["stopped"]:
                log.info("%s: early stop after epoch %d (patience)", arch, epoch + 1)
                break

    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    _write_outputs(arch, settings, best_values, state, val_index, history, out_dir)
    checkpoint.remove()
    return history


def _write_outputs(arch, settings, best_values, state, val_index, history, out_dir):
    """model.keras (float32, no optimizer), history.csv and val_predictions.csv, atomically."""
    import keras

    keras.config.set_dtype_policy("float32")
    final = _build(arch, settings, None, load_weights=False)
    _assign(final.variables, best_values, "best weights")
    with atomic_path(out_dir / "model.keras") as tmp:
        final.save(tmp)
    with atomic_path(out_dir / "history.csv") as tmp:
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
    with atomic_path(out_dir / "val_predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
