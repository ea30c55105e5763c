"""A full disk says so before it happens: stores, augmentation and training on a tiny tmpfs."""

import json
import os
import subprocess

import pandas as pd
import pytest

from leukoflow.cli import main
from leukoflow.core.diskspace import free_bytes, human_bytes, require_space, store_bytes
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.synth import write_cells, write_store
from leukoflow.stain.normalize import fit_reference, save_reference

DISK = 2 * 1024 * 1024  # bytes of the small file system


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted at a folder whose name has a space (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_require_space_names_the_folder_and_both_numbers(tmp_path):
    free = free_bytes(tmp_path / "not yet" / "made")  # asks the nearest existing parent
    assert free > 0
    require_space(tmp_path, 1, "one byte")
    with pytest.raises(LeukoflowError) as caught:
        require_space(tmp_path, free + 10**12, "the store x.npy")
    message = str(caught.value)
    assert str(tmp_path) in message and "the store x.npy" in message
    assert f"{free + 10**12} bytes" in message and "free" in message
    assert human_bytes(3 * 1024**2) == "3.0 MiB" and human_bytes(12) == "12 B"


def refused(capsys, folder, needed=None):
    """The error the command printed, checked for the folder, the bytes needed and free."""
    err = capsys.readouterr().err
    assert "not enough disk space" in err and str(folder) in err, err
    assert "bytes) are free" in err, err
    if needed is not None:
        assert f"({needed} bytes)" in err, err
    return err


def test_a_store_too_large_for_the_disk_is_refused_before_writing(small_disk, tmp_path, capsys):
    dataset = tmp_path / "cells"
    table = write_cells(dataset, 24, 64, seed=0)
    split = table.assign(subset="test", cv_fold=-1, fold="0", sha256="0")
    split.to_csv(tmp_path / "split.csv", index=False)
    save_reference(fit_reference([], "none"), tmp_path / "reference.json")
    base = ["stores", str(tmp_path / "split.csv"), "--dataset", str(dataset)]
    base += ["--reference", str(tmp_path / "reference.json"), "--subset", "test"]
    out = small_disk / "test.npy"
    args = [*base, "--out", str(out), "--index", str(out.with_suffix(".csv"))]
    assert main([*args, "--size", "256"]) == 2
    refused(capsys, small_disk, store_bytes(24, 256))
    assert list(small_disk.iterdir()) == []  # nothing half-written
    assert main([*args, "--size", "32"]) == 0  # a store that fits is written
    assert pd.read_csv(out.with_suffix(".csv"))["path"].tolist() == table["path"].tolist()


def test_an_augmented_store_too_large_is_refused(small_disk, tmp_path, capsys):
    train = write_store(tmp_path / "stores", 40, 160, seed=0)
    out = small_disk / "train_aug.npy"
    argv = ["augment", str(train), "--out", str(out), "--index", str(out.with_suffix(".csv"))]
    assert main([*argv, "--threads", "1"]) == 2
    refused(capsys, small_disk, store_bytes(40, 160))
    assert list(small_disk.iterdir()) == []


def test_training_stops_before_its_first_epoch_when_checkpoints_would_not_fit(
    small_disk, tmp_path, capsys
):
    train = write_store(tmp_path / "stores", 16, 32, seed=0)
    val = write_store(tmp_path / "stores", 8, 32, seed=1, stem="val")
    settings = {
        "input_size": 32, "weights": "none", "epochs": 1, "warmup_epochs": 0,
        "steps_per_epoch": 1, "batch_size": 8, "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-4, "weight_decay": 1e-4, "dropout": 0.0, "patience": 1,
        "balance": "none", "mixed_precision": "auto", "jit_compile": "auto", "seed": 0,
        "devices": 1, "lr_scaling": "sqrt",
        "online_augmentation": {"enabled": False, "rotation": True, "flip": True, "noise_std": 0},
    }  # fmt: skip
    out = small_disk / "SimpleNet"
    argv = ["train", "--arch", "SimpleNet", "--train", str(train), "--val", str(val)]
    argv += ["--settings", json.dumps(settings), "--model", str(out / "model.keras")]
    argv += ["--history", str(out / "history.csv")]
    argv += ["--val-predictions", str(out / "val_predictions.csv")]
    argv += ["--checkpoint", str(out / "checkpoint")]
    assert main(argv) == 2
    assert "training SimpleNet" in refused(capsys, small_disk)
    assert not (out / "checkpoint").exists() and not (out / "model.keras").exists()
