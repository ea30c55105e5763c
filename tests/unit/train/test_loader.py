"""The TensorFlow-free batch loader (leukoflow.train.loader) and its throughput."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.stain.stores import open_store
from leukoflow.train.loader import (
    TrainBatches,
    balanced_class_weights,
    measure_throughput,
    ordered_batches,
)


def write_store(stem, n, size, seed=0):
    """A store `stem.npy` + `stem.csv` whose image i is filled with i % 256 (easy to trace)."""
    rng = np.random.default_rng(seed)
    images = np.broadcast_to(
        (np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, size, size, 3)
    ).copy()
    np.save(f"{stem}.npy", images)
    labels = rng.integers(0, 2, n)
    pd.DataFrame(
        {"row": np.arange(n), "path": [f"c{i}.bmp" for i in range(n)], "y": labels}
    ).to_csv(f"{stem}.csv", index=False)
    return f"{stem}.npy"


def test_loader_module_does_not_import_tensorflow_or_keras():
    code = (
        "import sys, leukoflow.train.loader;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_store_memory_maps_and_checks_the_index(tmp_path):
    path = write_store(tmp_path / "train", 10, 8)
    images, index = open_store(path)
    assert isinstance(images, np.memmap) and images.shape == (10, 8, 8, 3)
    assert list(index["y"]) == list(pd.read_csv(tmp_path / "train.csv")["y"])
    with pytest.raises(LeukoflowError, match="absent.npy"):
        open_store(tmp_path / "absent.npy")
    pd.DataFrame({"row": range(10)}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(LeukoflowError, match="no `y` column"):
        open_store(path)


def test_batches_are_full_deterministic_per_epoch_and_cover_the_store(tmp_path):
    images, index = open_store(write_store(tmp_path / "train", 50, 4))
    batches = TrainBatches(images, index["y"], batch_size=8, seed=3)
    assert len(batches) == 6  # 50 // 8, full batches only
    epoch0 = list(batches.epoch(0))
    assert all(x.shape == (8, 4, 4, 3) and x.dtype == np.uint8 for x, _, _ in epoch0)
    rows = np.concatenate([x[:, 0, 0, 0] for x, _, _ in epoch0]).astype(int)
    assert len(set(rows)) == 48  # no row twice within an epoch
    for x, y, w in epoch0:  # labels travel with their images
        np.testing.assert_array_equal(y, index["y"].to_numpy()[x[:, 0, 0, 0]])
        np.testing.assert_array_equal(w, np.ones(8))
    again = [x for x, _, _ in TrainBatches(images, index["y"], 8, seed=3).epoch(0)]
    assert all(np.array_equal(a, b) for a, b in zip(again, (x for x, _, _ in epoch0)))
    epoch1 = np.concatenate([x[:, 0, 0, 0] for x, _, _ in batches.epoch(1)])
    assert not np.array_equal(rows, epoch1)


def test_steps_cap_and_wrap_around(tmp_path):
    images, index = open_store(write_store(tmp_path / "train", 5, 4))
    batches = TrainBatches(images, index["y"], batch_size=4, seed=0, steps=3)
    order = batches.order(0)
    assert order.shape == (3, 4)
    assert np.all(np.diff(order, axis=1) >= 0)  # sorted within a batch (memmap-friendly)
    assert set(order.ravel()) == set(range(5))


def test_class_weights_balance_the_classes(tmp_path):
    weights = balanced_class_weights([1, 1, 1, 0])
    assert weights == {0: 2.0, 1: 4 / 6}
    assert balanced_class_weights([1, 1]) == {0: 1.0, 1: 1.0}
    images = np.zeros((4, 2, 2, 3), np.uint8)
    batches = TrainBatches(images, [1, 1, 1, 0], 4, seed=0, class_weights=weights)
    _, y, w = next(iter(batches.epoch(0)))
    np.testing.assert_allclose(w, np.where(y == 1, 4 / 6, 2.0))
    assert np.sum(w[y == 1]) == pytest.approx(np.sum(w[y == 0]))


def test_ordered_batches_pad_the_last_batch():
    images = np.arange(7, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    got = list(ordered_batches(images, 3))
    assert [start for start, _ in got] == [0, 3, 6]
    assert all(batch.shape == (3, 2, 2, 3) for _, batch in got)
    np.testing.assert_array_equal(got[-1][1][:, 0, 0, 0], [6, 6, 6])


def test_errors_in_the_reader_thread_reach_the_consumer():
    class Broken:
        def __len__(self):
            return 8

        def __getitem__(self, rows):
            raise OSError("disk gone")

    batches = TrainBatches(Broken(), np.zeros(8), 4, seed=0)
    with pytest.raises(OSError, match="disk gone"):
        list(batches.epoch(0))


@pytest.mark.slow
def test_loader_delivers_at_least_ten_times_what_simplenet_consumes(tmp_path):
    """The issue's loader benchmark: loader images/s vs a SimpleNet train step, 64 px."""
    from leukoflow.bench.training import consumption_images_per_second

    size, batch = 64, 32
    images, index = open_store(write_store(tmp_path / "train", 1024, size))
    batches = TrainBatches(images, index["y"], batch_size=batch, seed=0)
    loader_rate = measure_throughput(batches)
    model_rate = consumption_images_per_second("SimpleNet", size, batch, steps=4)
    print(
        f"\nloader {loader_rate:,.0f} images/s; SimpleNet {size} px train step "
        f"{model_rate:,.0f} images/s; ratio {loader_rate / model_rate:.0f}x"
    )
    assert loader_rate >= 10 * model_rate
