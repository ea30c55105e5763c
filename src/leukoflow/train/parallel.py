"""Data-parallel training of one architecture on several devices (`training.devices`).

N devices train one model in step: each training step takes one global batch of
`batch_size` x N images (the loader's batch, `global_batch_size`), splits it into N equal
parts, each device computes the gradient of its part, and the averaged gradient makes one
update. So N devices follow the loss curve of one device with the global batch, up to the
order of floating-point sums.

- JAX: `keras.distribution.DataParallel` over the job's devices
  (`leukoflow.core.runtime.compute_devices`): variables replicated, batches sharded along their
  first axis; the program is compiled as one, so BatchNormalization sees the statistics of
  the whole global batch.
- TensorFlow: `tf.distribute.MirroredStrategy`; an epoch is one `model.fit` over its
  batches (Keras splits each global batch among the replicas); BatchNormalization uses
  each replica's part; validation predicts on the first device.
- One device: plain `train_on_batch` / `predict_on_batch`, as without this module.

The learning rate follows `lr_scaling` (`scaled_learning_rate`): `sqrt` multiplies the
configured rates by sqrt(N), the rule for Adam-type optimizers (AdamW here) found by
Malladi et al. 2022 ("On the SDEs and scaling rules for adaptive gradient algorithms");
`linear` by N, the rule for SGD (Goyal et al. 2017); `none` keeps them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from leukoflow.core import runtime
from leukoflow.core.errors import ConfigError
from leukoflow.train.loader import TrainBatches, ordered_batches

if TYPE_CHECKING:
    import keras

LR_SCALING = ("sqrt", "linear", "none")


def global_batch_size(settings: Mapping) -> int:
    """Images per training step over all devices: `batch_size` x `devices`."""
    return int(settings["batch_size"]) * int(settings["devices"])


def scaled_learning_rate(learning_rate: float, devices: int, rule: str) -> float:
    """The learning rate for `devices` devices under the `lr_scaling` rule `rule`.

    Raises:
        ConfigError: for a rule outside `LR_SCALING`.
    """
    if rule not in LR_SCALING:
        raise ConfigError(f"lr_scaling: {rule!r}; allowed: {', '.join(LR_SCALING)}")
    factor = {"sqrt": math.sqrt(devices), "linear": float(devices), "none": 1.0}[rule]
    return learning_rate * factor


class Replicas:
    """The devices of one training job and how batches reach them.

    Args:
        decided: the job's runtime (`runtime.decide`); its `devices` are looked up with
            `runtime.compute_devices`.

    Raises:
        ConfigError: when the backend sees fewer devices than the runtime asks for.
    """

    def __init__(self, decided: runtime.Runtime):
        self.backend = decided.backend
        self.devices = runtime.compute_devices(decided) if decided.devices > 1 else []
        self.count = max(1, len(self.devices))
        self.distribution = self.strategy = None
        self._predict = None
        if self.count == 1:
            return
        if self.backend == "jax":
            import keras

            names = [f"{device.platform}:{device.id}" for device in self.devices]
            self.distribution = keras.distribution.DataParallel(devices=names)
        else:
            import tensorflow as tf

            self.strategy = tf.distribute.MirroredStrategy(self.devices)

    def describe(self) -> str:
        """The devices, for the log: e.g. '4 devices (cpu:0, ..., cpu:3), data-parallel'."""
        if self.count == 1:
            return "1 device"
        names = ", ".join(map(str, self.devices))
        return f"{self.count} devices ({names}), data-parallel"

    def scope(self) -> contextlib.AbstractContextManager:
        """The context in which the model is built, compiled, trained and saved."""
        if self.distribution is not None:
            return self.distribution.scope()
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def train_epoch(
        self, model: keras.Model, batches: TrainBatches, epoch: int
    ) -> tuple[float, float]:
        """Train on every global batch of epoch `epoch` of `batches`.

        Returns:
            (loss, accuracy): their means over the batches.
        """
        if self.strategy is not None:  # Keras splits each batch among the replicas
            logs = model.fit(_epoch_dataset(batches, epoch), verbose=0)
            return float(logs.history["loss"][-1]), float(logs.history["accuracy"][-1])
        losses, accuracies = [], []
        for images, labels, weights in batches.epoch(epoch):
            logs = model.train_on_batch(images, labels, sample_weight=weights, return_dict=True)
            losses.append(logs["loss"])
            accuracies.append(logs["accuracy"])
        return float(np.mean(losses)), float(np.mean(accuracies))

    def predict(self, model: keras.Model, batch: np.ndarray) -> np.ndarray:
        """Probabilities of `all`, float32 (B,), for one batch whose size the devices divide."""
        if self.distribution is not None:
            import keras

            layout = self.distribution.get_data_layout(batch.shape)
            batch = keras.distribution.distribute_tensor(batch, layout)
        elif self.strategy is not None:
            if self._predict is None:
                from leukoflow.models.inference import compiled_inference

                self._predict = compiled_inference(model)
            return self._predict(np.asarray(batch, dtype="float32"))
        return np.asarray(model.predict_on_batch(batch), dtype=np.float32).reshape(-1)

    def predict_images(self, model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Probabilities of `all`, float32 (N,), for uint8 images (N, s, s, 3) in store order.

        Every image is predicted: the last batch is padded to `batch_size` (a multiple of
        the devices) and the padding's outputs dropped.
        """
        out = np.empty(len(images), dtype=np.float32)
        for start, batch in ordered_batches(images, batch_size):
            stop = min(start + batch_size, len(images))
            out[start:stop] = self.predict(model, batch)[: stop - start]
        return out


def _epoch_dataset(batches: TrainBatches, epoch: int):
    """Epoch `epoch` of `batches` as a `keras.utils.PyDataset` (what `fit` reads exactly:
    one step per batch, in order)."""
    import keras

    order = batches.order(epoch)

    class Epoch(keras.utils.PyDataset):
        def __len__(self):
            return len(order)

        def __getitem__(self, step):
            return batches.batch(order[step])

    return Epoch()
