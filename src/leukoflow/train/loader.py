"""Batches for training and prediction from the memory-mapped image stores (no TensorFlow).

Training batches are uint8 `(batch_size, size, size, 3)` images, float32 `(batch_size,)`
labels and float32 `(batch_size,)` sample weights, always full (a partial batch would
make the compiled step trace a second time). The order is a function of (seed, epoch)
only, so a resumed job sees exactly the batches an uninterrupted one would. A background
thread reads ahead while the model computes.
"""

import queue
import threading
import time
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from leukoflow.core.errors import LeukoflowError


def balanced_class_weights(labels: ArrayLike) -> dict[int, float]:
    """Class weights that give both classes the same total weight (scikit-learn "balanced").

    Args:
        labels: (N,) 0/1 labels.

    Returns:
        `{0: w0, 1: w1}` with w_c = N / (2 N_c); both 1.0 when a class is absent.
    """
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if not counts.all():
        return {0: 1.0, 1: 1.0}
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


class TrainBatches:
    """Shuffled, prefetched, always-full training batches from a store.

    Each epoch draws `steps * batch_size` rows from consecutive permutations of a
    generator seeded with (seed, epoch).

    Args:
        images: uint8 (N, s, s, 3); a memmap is fine.
        labels: (N,) 0/1.
        batch_size: rows per batch.
        seed: base seed of the order.
        class_weights: `{0: w0, 1: w1}`, the sample weight of each class; None: all 1.
        steps: batches per epoch; None or 0: `max(1, N // batch_size)`.
        prefetch: batches the background thread reads ahead.

    Raises:
        LeukoflowError: when `images` is empty.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: ArrayLike,
        batch_size: int,
        seed: int,
        class_weights: dict[int, float] | None = None,
        steps: int | None = None,
        prefetch: int = 4,
    ):
        if len(images) == 0:
            raise LeukoflowError("the training store holds no images")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.steps = int(steps) if steps else max(1, len(images) // self.batch_size)
        self.prefetch = int(prefetch)
        weights = class_weights or {0: 1.0, 1: 1.0}
        self.sample_weights = np.where(self.labels > 0.5, weights[1], weights[0]).astype(np.float32)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.steps

    def order(self, epoch: int) -> np.ndarray:
        """Row indices of epoch `epoch`, int (steps, batch_size), each batch sorted."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        needed = self.steps * self.batch_size
        rounds = -(-needed // len(self.images))
        rows = np.concatenate([rng.permutation(len(self.images)) for _ in range(rounds)])
        return np.sort(rows[:needed].reshape(self.steps, self.batch_size), axis=1)

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch of `rows`: images uint8 (B, s, s, 3), labels and weights float32 (B,)."""
        return np.asarray(self.images[rows]), self.labels[rows], self.sample_weights[rows]

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Iterate over the batches (`batch`) of epoch `epoch`, read ahead by a thread."""
        return _prefetched((self.batch(rows) for rows in self.order(epoch)), self.prefetch)


def _prefetched(items, depth):
    """Yield from the iterator `items`, computed `depth` items ahead in a daemon thread."""
    buffer = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            buffer.put(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def ordered_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield the store in order, in batches all padded to `batch_size` rows.

    The padding repeats the last row; callers keep the first `len(images) - start` outputs
    of the final batch. One batch shape means one compiled predict step.

    Args:
        images: uint8 (N, s, s, 3); a memmap is fine.
        batch_size: rows per batch.

    Yields:
        (start, batch): the first row's index and uint8 (batch_size, s, s, 3).
    """
    n = len(images)
    for start in range(0, n, batch_size):
        batch = np.asarray(images[start : start + batch_size])
        if len(batch) < batch_size:
            pad = np.repeat(batch[-1:], batch_size - len(batch), axis=0)
            batch = np.concatenate([batch, pad])
        yield start, batch


def measure_throughput(
    batches: TrainBatches, epoch: int = 0, max_batches: int | None = None
) -> float:
    """Images per second the loader delivers for one epoch (or `max_batches` batches)."""
    count = 0
    start = time.perf_counter()
    for i, (images, _, _) in enumerate(batches.epoch(epoch)):
        count += len(images)
        if max_batches is not None and i + 1 >= max_batches:
            break
    return count / (time.perf_counter() - start)
