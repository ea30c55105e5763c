"""Training (train.job, `leukoflow train`): phases, outputs, determinism, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leukoflow.core.errors import ConfigError, LeukoflowError
from leukoflow.core.runtime import decide
from leukoflow.train.checkpoint import Checkpoint, fingerprint
from leukoflow.train.job import HISTORY_COLUMNS, TrainOutputs, validation_metrics
from leukoflow.train.job import train as train_into
from leukoflow.train.schedule import Phase, phases

LEUKOFLOW = str(Path(sys.executable).with_name("leukoflow"))


def settings(**overrides):
    """Complete training settings for tiny, fast runs (SimpleNet, 32 px, from scratch)."""
    base = {
        "architecture": "SimpleNet",
        "input_size": 32,
        "weights": "none",
        "epochs": 3,
        "warmup_epochs": 0,
        "steps_per_epoch": None,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "fine_tune_learning_rate": 1e-4,
        "weight_decay": 1e-4,
        "dropout": 0.2,
        "patience": 5,
        "balance": "none",
        "online_augmentation": {"enabled": False, "rotation": True, "flip": True, "noise_std": 4.0},
        "mixed_precision": "auto",
        "jit_compile": "auto",
        "devices": 1,
        "lr_scaling": "sqrt",
        "seed": 0,
    }
    base.update(overrides)
    return base


def outputs_in(folder):
    """The training outputs in one folder, named as the workflow names them."""
    folder = Path(folder)
    return TrainOutputs.of(
        folder / "model.keras",
        folder / "history.csv",
        folder / "val_predictions.csv",
        folder / "checkpoint",
        folder / "dvclive",
    )


def output_args(folder):
    """The `leukoflow train` options naming the outputs in one folder."""
    out = outputs_in(folder)
    return [
        "--model", str(out.model), "--history", str(out.history),
        "--val-predictions", str(out.val_predictions), "--checkpoint", str(out.checkpoint),
        "--live", str(out.live),
    ]  # fmt: skip


def train(arch, train_store, val_store, config, weights_file, folder):
    """`leukoflow.train.job.train` writing its outputs into `folder`."""
    return train_into(arch, train_store, val_store, config, weights_file, outputs_in(folder))


def easy_store(stem, n, size=32, seed=0):
    """Purpose-built, separable images (synth's cells overlap by design): a disc on black,
    `all` (y=1) large and red, `hem` (y=0) small and blue, so one short fit learns them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    yy, xx = np.mgrid[:size, :size]
    radius = size * np.where(y == 1, 0.35, 0.2) + rng.normal(0, 1, n)
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2)[None] < (radius**2)[:, None, None]
    colour = np.stack([150 + 60 * y, np.full(n, 80), 160 - 60 * y], axis=1)
    images = disc[..., None] * colour[:, None, None, :] + rng.normal(0, 8, (n, size, size, 3))
    np.save(f"{stem}.npy", np.clip(images, 0, 255).astype(np.uint8))
    index = pd.DataFrame(
        {"row": np.arange(n), "path": [f"c{i}.bmp" for i in range(n)], "subject": "s1", "y": y}
    )
    index.to_csv(f"{stem}.csv", index=False)
    return f"{stem}.npy"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    return easy_store(folder / "train", 160, seed=0), easy_store(folder / "val", 48, seed=1)


def test_phases_two_for_pretrained_one_from_scratch():
    assert phases(settings(epochs=4)) == [Phase("train", 0, 4, 3e-3, frozen=False)]
    pretrained = settings(weights="imagenet", epochs=5, warmup_epochs=2)
    assert phases(pretrained) == [
        Phase("warmup", 0, 2, 3e-3, frozen=True),
        Phase("fine_tune", 2, 5, 1e-4, frozen=False),
    ]
    assert phases(settings(weights="w.h5", epochs=2, warmup_epochs=5)) == [
        Phase("warmup", 0, 2, 3e-3, frozen=True)
    ]


def test_runtime_follows_the_device():
    gpu = decide(settings(), gpu=True, backend="tensorflow", compute_capability=(9, 0)).as_dict()
    assert gpu == {
        "backend": "tensorflow",
        "gpu": True,
        "dtype_policy": "mixed_bfloat16",
        "jit_compile": True,
        "graph_optimizer": True,
        "devices": 1,
    }
    cpu = decide(settings(), gpu=False, backend="tensorflow")
    assert (cpu.dtype_policy, cpu.jit_compile, cpu.graph_optimizer) == ("float32", False, False)
    forced = decide(
        settings(mixed_precision="mixed_float16", jit_compile="on"), gpu=False, backend="tensorflow"
    )
    assert forced.dtype_policy == "mixed_float16" and forced.jit_compile
    off = decide(settings(mixed_precision="off"), gpu=True, backend="tensorflow")
    assert off.dtype_policy == "float32"
    assert decide(settings(jit_compile="off"), gpu=False, backend="jax").jit_compile  # always XLA
    with pytest.raises(ConfigError, match="mixed_precision"):
        decide(settings(mixed_precision="fp8"), gpu=False, backend="tensorflow")
    with pytest.raises(ConfigError, match="devices: 0"):
        decide(settings(devices=0), gpu=False, backend="tensorflow")


@pytest.mark.parametrize(
    ("capability", "policy"),
    [((9, 0), "mixed_bfloat16"), ((8, 0), "mixed_bfloat16"), ((7, 5), "mixed_float16"),
     ((7, 0), "mixed_float16")],
)  # fmt: skip
def test_auto_precision_is_bfloat16_only_where_the_gpu_computes_it_natively(capability, policy):
    """H100 9.0 and A100 8.0 have native bfloat16; T4 7.5 and V100 7.0 get float16 (Keras
    then wraps the optimizer in a LossScaleOptimizer)."""
    decided = decide(settings(), gpu=True, backend="jax", compute_capability=capability)
    assert decided.dtype_policy == policy
    assert decide(settings(), gpu=False, backend="jax").dtype_policy == "float32"


def test_float16_training_scales_the_loss():
    import keras

    from leukoflow.models import build_model
    from leukoflow.train.schedule import compile_model

    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = compile_model(build_model("SimpleNet", 32, weights="none"), 1e-3, 10, 0.0, False)
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_learning_rates_scale_with_the_devices():
    four = settings(weights="imagenet", epochs=3, warmup_epochs=1, devices=4)
    assert [p.learning_rate for p in phases(four)] == pytest.approx([6e-3, 2e-4])  # sqrt(4)
    linear = settings(devices=4, lr_scaling="linear")
    assert phases(linear)[0].learning_rate == pytest.approx(1.2e-2)
    assert phases(settings(devices=4, lr_scaling="none"))[0].learning_rate == 3e-3
    with pytest.raises(ConfigError, match="lr_scaling: 'cubic'"):
        phases(settings(devices=2, lr_scaling="cubic"))


def test_validation_metrics_use_weighted_f1_at_one_half():
    from sklearn.metrics import f1_score

    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.5, 0.1])
    metrics = validation_metrics(y, p)
    assert metrics["val_weighted_f1"] == pytest.approx(
        f1_score(y, [1, 1, 0, 1, 0], average="weighted")
    )
    assert metrics["val_accuracy"] == pytest.approx(0.6)
    assert metrics["val_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.4, 0.5, 0.9])))


def test_missing_settings_and_mismatched_stores_are_reported(tmp_path, stores):
    incomplete = settings()
    del incomplete["patience"]
    with pytest.raises(ConfigError, match="patience"):
        train("SimpleNet", *stores, incomplete, None, tmp_path)
    with pytest.raises(LeukoflowError, match=r"expected uint8 \(N, 64, 64, 3\)"):
        train("SimpleNet", *stores, settings(input_size=64), None, tmp_path)


def test_cli_reports_missing_imagenet_weights_and_bad_settings(tmp_path, stores, capsys):
    from leukoflow.cli import main

    config = settings(weights="imagenet", warmup_epochs=1)
    base = ["train", "--arch", "SimpleNet", "--train", stores[0], "--val", stores[1]]
    absent = str(tmp_path / "VGG16.imagenet.notop.h5")
    args = ["--settings", json.dumps(config), "--weights-file", absent, *output_args(tmp_path)]
    assert main([*base[:2], "VGG16", *base[3:], *args]) == 2
    assert "fetch_weights" in capsys.readouterr().err
    assert main([*base, "--settings", "{not json", *output_args(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_models_trained_from_scratch_get_faster_batchnorm_statistics():
    import keras

    from leukoflow.models import build_model
    from leukoflow.train.job import SCRATCH_BN_MOMENTUM, _build

    def momenta(model):
        return {
            layer.momentum
            for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        }

    assert momenta(build_model("Xception", 72)) == {0.99}
    assert momenta(_build("Xception", settings(input_size=72), None)) == {SCRATCH_BN_MOMENTUM}


def test_frozen_backbone_leaves_only_the_head_trainable():
    from leukoflow.models import build_model
    from leukoflow.train.schedule import set_backbone_frozen

    model = build_model("SimpleNet", 32)
    set_backbone_frozen(model, True)
    assert [v.path for v in model.trainable_variables] == ["probability/kernel", "probability/bias"]
    set_backbone_frozen(model, False)
    assert len(model.trainable_variables) == 4 * 3 + 2  # conv kernel, BN gamma and beta; head


@pytest.mark.slow
def test_loss_falls_and_outputs_are_written(tmp_path, stores):
    out = tmp_path / "SimpleNet"
    history = train(
        "SimpleNet",
        *stores,
        settings(epochs=4, steps_per_epoch=20, learning_rate=1e-3, balance="class_weights"),
        None,
        out,
    )
    assert list(history.columns) == HISTORY_COLUMNS and len(history) == 4
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert history["learning_rate"].is_monotonic_decreasing  # cosine decay
    assert history["val_weighted_f1"].max() > 0.9
    assert not (out / "checkpoint").exists()
    saved = pd.read_csv(out / "history.csv")
    pd.testing.assert_frame_equal(saved, history, check_dtype=False)
    predictions = pd.read_csv(out / "val_predictions.csv")
    assert list(predictions.columns) == ["row", "path", "subject", "y", "probability_all"]
    assert len(predictions) == 48
    best = history["val_weighted_f1"].max()
    assert validation_metrics(predictions["y"], predictions["probability_all"])[
        "val_weighted_f1"
    ] == pytest.approx(best)
    from leukoflow.models import load_model

    model = load_model(out / "model.keras")
    images = np.load(stores[1])
    np.testing.assert_allclose(
        model.predict(images, verbose=0).ravel(), predictions["probability_all"], atol=1e-5
    )


@pytest.mark.slow
def test_two_phases_from_a_weights_file_and_same_config_gives_same_weights(tmp_path, stores):
    import keras

    from leukoflow.models import build_model, load_model

    keras.utils.set_random_seed(5)
    weights_file = tmp_path / "start.weights.h5"
    build_model("SimpleNet", 32).save_weights(weights_file)
    config = settings(weights=str(weights_file), epochs=2, warmup_epochs=1, steps_per_epoch=4)
    first = train("SimpleNet", *stores, config, str(weights_file), tmp_path / "a")
    second = train("SimpleNet", *stores, config, str(weights_file), tmp_path / "b")
    assert list(first["phase"]) == ["warmup", "fine_tune"]
    assert first["learning_rate"].tolist() == pytest.approx([3e-3, 1e-4])
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), second.drop(columns="seconds"))
    a = load_model(tmp_path / "a" / "model.keras").get_weights()
    b = load_model(tmp_path / "b" / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _run_cli(stores, config, out, wait_for_epoch=None, env=None, options=()):
    """Run `leukoflow train` (TensorFlow unless `env` says otherwise, extra `options`); with
    `wait_for_epoch`, SIGKILL it once that epoch is checkpointed. Returns its log (stderr)."""
    command = [
        LEUKOFLOW, "train", "--arch", "SimpleNet", "--train", stores[0], "--val", stores[1],
        "--settings", json.dumps(config), "--weights-file", "", *output_args(out), *options,
    ]  # fmt: skip
    env = env or dict(os.environ, KERAS_BACKEND="tensorflow")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    if wait_for_epoch is None:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        return stderr
    state = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epochs_done"] >= wait_for_epoch:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL
    return stderr


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_result(tmp_path, stores):
    """SIGKILL after the first epoch's checkpoint, restart: same epochs, history and weights.

    Online augmentation is on, so the RNG states of its layers and of dropout must resume too.
    """
    from leukoflow.models import load_model

    augmentation = {"enabled": True, "rotation": True, "flip": True, "noise_std": 4.0}
    config = settings(epochs=3, steps_per_epoch=30, batch_size=8, online_augmentation=augmentation)
    train("SimpleNet", *stores, config, None, tmp_path / "whole")
    _run_cli(stores, config, tmp_path / "killed", wait_for_epoch=1)
    assert not (tmp_path / "killed" / "model.keras").exists()
    state = json.loads((tmp_path / "killed" / "checkpoint" / "state.json").read_text())
    done = state["epochs_done"]
    assert 1 <= done < 3
    _run_cli(stores, config, tmp_path / "killed")

    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    resumed = pd.read_csv(tmp_path / "killed" / "history.csv").drop(columns="seconds")
    assert resumed["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(whole, resumed)  # exact: CPU training is deterministic
    whole_model = load_model(tmp_path / "whole" / "model.keras")
    a, b = whole_model.get_weights(), load_model(tmp_path / "killed" / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert whole_model.get_layer("online_augmentation") is not None
    assert not (tmp_path / "killed" / "checkpoint").exists()
    # DVCLive's files: each epoch once, as in the run that was not killed
    for name, column in (("eval/weighted_f1", "val_weighted_f1"), ("train/loss", "loss")):
        series = [
            pd.read_csv(folder / "dvclive" / "plots" / "metrics" / f"{name}.tsv", sep="\t")
            for folder in (tmp_path / "whole", tmp_path / "killed")
        ]
        assert series[1]["step"].tolist() == [0, 1, 2]
        assert series[1][name.split("/")[1]].tolist() == resumed[column].tolist()
        pd.testing.assert_frame_equal(*series)


@pytest.mark.slow
def test_checkpoint_of_other_settings_is_discarded(tmp_path, stores):
    out = tmp_path / "run"
    config = settings(epochs=1, steps_per_epoch=2)
    key = fingerprint("SimpleNet", config, *stores, None)
    stale = Checkpoint(out / "checkpoint", "0" * 64)
    stale.folder.mkdir(parents=True)
    (stale.folder / "state.json").write_text(json.dumps({"fingerprint": "0" * 64}))
    assert Checkpoint(out / "checkpoint", key).load() is None
    assert not stale.folder.exists()
    history = train("SimpleNet", *stores, config, None, out)
    assert len(history) == 1
    assert key != fingerprint("SimpleNet", settings(epochs=2, steps_per_epoch=2), *stores, None)
