"""DVCLive's files of a training job: one row per epoch, rewritten from the history on resume."""

import json

import pandas as pd

from leukoflow.train.livelog import LIVE_METRICS, TrainingLive


def row(epoch):
    """A history row of epoch `epoch` (values that tell epochs apart)."""
    return {
        "epoch": epoch,
        "phase": "train",
        "loss": 1.0 / (epoch + 1),
        "accuracy": 0.5 + epoch / 100,
        "val_loss": 2.0 / (epoch + 1),
        "val_accuracy": 0.4 + epoch / 100,
        "val_weighted_f1": 0.3 + epoch / 100,
        "learning_rate": 1e-3 * 0.9**epoch,
        "seconds": 10.0 + epoch,
    }


def series(folder, name):
    return pd.read_csv(folder / "plots" / "metrics" / f"{name}.tsv", sep="\t")


def test_every_epoch_is_a_step_with_the_callbacks_names(tmp_path):
    live = TrainingLive(tmp_path / "dvclive")
    for epoch in range(3):
        live.log_epoch(row(epoch))
    live.end()
    summary = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert summary["step"] == 2
    assert summary["eval"]["weighted_f1"] == row(2)["val_weighted_f1"]
    assert summary["train"] == {
        "loss": row(2)["loss"],
        "accuracy": row(2)["accuracy"],
        "learning_rate": row(2)["learning_rate"],
        "epoch_seconds": row(2)["seconds"],
    }
    for column, name in LIVE_METRICS.items():
        frame = series(tmp_path / "dvclive", name)
        assert frame["step"].tolist() == [0, 1, 2]
        assert frame.iloc[:, 1].tolist() == [row(e)[column] for e in range(3)]
    assert not (tmp_path / "dvclive" / "dvc.yaml").exists()  # dvc.yaml is the project's


def test_resume_rewrites_the_checkpoints_history_whatever_was_left(tmp_path):
    folder = tmp_path / "dvclive"
    killed = TrainingLive(folder)
    for epoch in range(4):  # a run killed after logging an epoch its checkpoint missed
        killed.log_epoch(row(epoch) | {"loss": 99.0})
    history = [row(e) for e in range(3)]  # what the checkpoint holds
    resumed = TrainingLive(folder, history)
    resumed.log_epoch(row(3))
    resumed.end()
    loss = series(folder, "train/loss")
    assert loss["step"].tolist() == [0, 1, 2, 3]
    assert loss["loss"].tolist() == [row(e)["loss"] for e in range(4)]
