"""Atomic writes: all or nothing, normal permissions."""

import os
import stat

import pytest

from leukoflow.core.atomic import atomic_dir, atomic_path, write_text


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"


def test_temporary_name_keeps_the_suffix_and_result_is_readable_by_others(tmp_path):
    with atomic_path(tmp_path / "store.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    mode = os.stat(tmp_path / "store.npy").st_mode
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_atomic_dir_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
