"""Data-parallel training (leukoflow.train.parallel) and the compile cache, on simulated devices.

`leukoflow train` runs on JAX in subprocesses with four simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4): `runtime.compute_devices` lists them as
it lists GPUs, so the real data-parallel code path runs. TensorFlow's MirroredStrategy runs on
two logical CPU devices.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_train import _run_cli, easy_store, settings

from leukoflow.core.errors import ConfigError
from leukoflow.core.runtime import compute_devices, decide

pytestmark = [pytest.mark.jax, pytest.mark.slow]

COMPARED = ["epoch", "loss", "val_loss", "accuracy", "val_accuracy", "val_weighted_f1"]
# 4 devices against 1 with the same global batch: the same steps up to the order of the
# floating-point sums of the gradients (measured: loss 5e-9, val_loss 3e-7 apart).
RTOL, ATOL = 1e-4, 1e-5


def jax_env():
    """JAX on the CPU with four simulated devices; compiles of any length are cached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "LEUKOFLOW_"))}
    env.update(
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    return env


def config(devices, batch_size):
    """Three epochs of ten global batches of `batch_size` x `devices`, unscaled rates."""
    return settings(
        epochs=3, steps_per_epoch=10, batch_size=batch_size, devices=devices, lr_scaling="none"
    )


def train_jax(stores, devices, batch_size, out, cache, kill_after=None):
    """`leukoflow train` on JAX with `devices` simulated devices; its log."""
    options = ("--compile-cache", str(cache))
    return _run_cli(stores, config(devices, batch_size), out, kill_after, jax_env(), options)


def history(folder):
    return pd.read_csv(folder / "history.csv")[COMPARED]


def compile_seconds(log):
    """(seconds, programs from the persistent cache) of a job's 'compile seconds' line."""
    match = re.search(r"compile seconds: ([\d.]+) .* (\d+) from the persistent cache", log)
    assert match, log[-3000:]
    return float(match[1]), int(match[2])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    return easy_store(folder / "train", 160, seed=0), easy_store(folder / "val", 48, seed=1)


@pytest.fixture(scope="module")
def four(stores, tmp_path_factory):
    """One uninterrupted run on four devices (global batch 8), with a fresh compile cache."""
    folder = tmp_path_factory.mktemp("four")
    log = train_jax(stores, 4, 2, folder / "out", folder / "cache")
    return folder, log


def test_four_devices_follow_the_loss_curve_of_one_with_the_same_global_batch(
    stores, four, tmp_path
):
    folder, log = four
    assert "on 4 devices (" in log and "data-parallel" in log
    train_jax(stores, 1, 8, tmp_path / "one", tmp_path / "cache")
    one = history(tmp_path / "one")
    assert one["epoch"].tolist() == [0, 1, 2]
    assert one["loss"].iloc[-1] < one["loss"].iloc[0]
    np.testing.assert_allclose(history(folder / "out"), one, rtol=RTOL, atol=ATOL)


def test_a_second_identical_job_compiles_from_the_cache(stores, four, tmp_path):
    folder, cold_log = four
    cold, cold_hits = compile_seconds(cold_log)
    warm_log = train_jax(stores, 4, 2, tmp_path / "again", folder / "cache")
    warm, warm_hits = compile_seconds(warm_log)
    assert cold_hits == 0 and warm_hits > 0
    assert warm < 0.25 * cold, (cold, warm)
    pd.testing.assert_frame_equal(history(tmp_path / "again"), history(folder / "out"))


def test_killed_on_four_devices_resumes_on_four_or_on_one(stores, four, tmp_path):
    """SIGKILL after the first epoch on four devices. Resumed on four: the uninterrupted run's
    history. Resumed on one (another global batch): the finished epochs kept, the rest run."""
    folder, _ = four
    killed = tmp_path / "four"
    train_jax(stores, 4, 2, killed, tmp_path / "cache", kill_after=1)
    done = json.loads((killed / "checkpoint" / "state.json").read_text())["epochs_done"]
    assert 1 <= done < 3
    shutil.copytree(killed, tmp_path / "one")
    log = train_jax(stores, 4, 2, killed, tmp_path / "cache")
    assert f"resuming SimpleNet after epoch {done}" in log
    pd.testing.assert_frame_equal(history(killed), history(folder / "out"))

    log = train_jax(stores, 1, 2, tmp_path / "one", tmp_path / "cache")
    assert f"resuming SimpleNet after epoch {done}" in log
    resumed = history(tmp_path / "one")
    assert resumed["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(resumed.iloc[:done], history(folder / "out").iloc[:done])
    assert not (tmp_path / "one" / "checkpoint").exists()


def test_more_devices_than_the_job_sees_stop_before_training():
    with pytest.raises(ConfigError, match="training.devices: 2, but this job sees 1 CPU"):
        compute_devices(decide(settings(devices=2), gpu=False, backend="tensorflow"))


MIRRORED = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from leukoflow.train.job import TrainOutputs, train
out = sys.argv[3]
outputs = TrainOutputs.of(out + "/model.keras", out + "/history.csv", out + "/vp.csv", out + "/ck")
history = train("SimpleNet", sys.argv[1], sys.argv[2], json.loads(sys.argv[4]), None, outputs)
print(json.dumps(history["loss"].tolist()))
"""


def test_tensorflow_trains_with_a_mirrored_strategy_on_two_devices(stores, tmp_path):
    """MirroredStrategy on two logical CPU devices: every epoch trains (one `fit` over its
    batches) and validates on all images. BatchNormalization statistics are per replica, so
    the curve is not compared with one device's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "LEUKOFLOW_"))}
    env["KERAS_BACKEND"] = "tensorflow"
    arguments = [*stores, str(tmp_path), json.dumps(config(2, 4))]
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 devices (/device:CPU:0, /device:CPU:1), data-parallel" in result.stderr
    losses = json.loads(result.stdout.splitlines()[-1])
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert len(pd.read_csv(tmp_path / "vp.csv")) == 48
