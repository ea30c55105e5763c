"""Ingest of the C-NMC layout: names, the prelim CSV, every kind of bad file, both modes."""

import shutil

import pandas as pd
import pytest
from cells import GOOD_CELLS, good_and_bad_images, make_cnmc_tree, write_cell

from leukoflow.cli import main
from leukoflow.data.ingest import BadDatasetError, ingest, parse_name, write_ingest


@pytest.mark.parametrize(
    "name, subject, label",
    [
        ("UID_11_10_1_all.bmp", "11", "all"),
        ("UID_H10_43_1_hem.bmp", "H10", "hem"),
        ("UID_h3_4_1_hem.bmp", "H3", "hem"),
    ],
)
def test_parse_real_names(name, subject, label):
    assert parse_name(name) == (subject, label)


@pytest.mark.parametrize("name", ["UID_11_10_all.bmp", "cell_1.bmp", "UID_x3_4_1_hem.bmp"])
def test_names_outside_the_convention_are_rejected(name):
    with pytest.raises(ValueError, match="outside the C-NMC convention"):
        parse_name(name)


def test_manifest_of_a_valid_tree(cnmc_tree):
    result = ingest(cnmc_tree, threads=2)
    manifest = result.manifest
    assert len(manifest) == 27 and result.quarantine.empty
    assert set(manifest["fold"]) == {"0", "1", "2"}
    assert "H2" in set(manifest["subject"]) and "h2" not in set(manifest["subject"])
    assert (manifest["width"] == 32).all() and (manifest["height"] == 32).all()
    assert manifest["sha256"].str.len().eq(64).all()
    assert not manifest["path"].str.startswith("/").any()


def test_prelim_test_set_is_labelled_from_its_csv(cnmc_tree):
    prelim = cnmc_tree / "validation_data" / "C-NMC_test_prelim_phase_data"
    write_cell(prelim / "1.bmp", 101)
    write_cell(prelim / "2.bmp", 102)
    (cnmc_tree / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv").write_text(
        "Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_h42_7_3_hem.bmp,2.bmp,0\n"
    )
    manifest = ingest(cnmc_tree).manifest
    prelim_rows = manifest[manifest["fold"] == "prelim_test"].set_index("path")
    row = prelim_rows.loc["validation_data/C-NMC_test_prelim_phase_data/2.bmp"]
    assert (row["subject"], row["label"]) == ("H42", "hem")
    row = prelim_rows.loc["validation_data/C-NMC_test_prelim_phase_data/1.bmp"]
    assert (row["subject"], row["label"]) == ("57", "all")


def test_plain_all_hem_tree(tmp_path):
    write_cell(tmp_path / "all" / "UID_1_1_1_all.bmp", 1)
    write_cell(tmp_path / "hem" / "UID_H2_1_1_hem.png", 2)
    manifest = ingest(tmp_path).manifest
    assert list(manifest["label"]) == ["all", "hem"]
    assert set(manifest["fold"]) == {"none"}


def spoil(tree):
    """Add one file of every bad kind (and two ignored ones); return {path: reason fragment}."""
    folder = tree / "training_data" / "fold_0"
    (folder / "all" / "UID_7_1_1_all.bmp").write_bytes(
        (folder / "all" / "UID_1_0_1_all.bmp").read_bytes()[:300]
    )
    (folder / "all" / "UID_7_2_1_all.bmp").write_bytes(b"")
    (folder / "all" / "UID_7_3_1_all.bmp").write_text("this is not a picture")
    write_cell(folder / "all" / "UID_7_4_1_all.bmp", 7, mode="L")
    write_cell(folder / "all" / "cell_7.bmp", 8)
    write_cell(folder / "hem" / "UID_7_5_1_all.bmp", 9)
    shutil.copy(folder / "all" / "UID_1_0_1_all.bmp", folder / "all" / "UID_8_1_1_all.bmp")
    (folder / "all" / "Thumbs.db").write_bytes(b"\0" * 10)
    (folder / "hem" / ".DS_Store").write_bytes(b"\0" * 10)
    return {
        "training_data/fold_0/all/UID_7_1_1_all.bmp": "truncated",
        "training_data/fold_0/all/UID_7_2_1_all.bmp": "empty file",
        "training_data/fold_0/all/UID_7_3_1_all.bmp": "not an image",
        "training_data/fold_0/all/UID_7_4_1_all.bmp": "mode is L",
        "training_data/fold_0/all/cell_7.bmp": "outside the C-NMC convention",
        "training_data/fold_0/hem/UID_7_5_1_all.bmp": "'hem' folder",
        "training_data/fold_0/all/UID_8_1_1_all.bmp": "leakage",
        "training_data/fold_0/all/UID_1_0_1_all.bmp": "leakage",
    }


def test_error_mode_names_every_bad_file(cnmc_tree, tmp_path):
    expected = spoil(cnmc_tree)
    result = ingest(cnmc_tree, threads=2)
    with pytest.raises(BadDatasetError) as error:
        write_ingest(result, tmp_path / "m.csv", tmp_path / "q.csv", "error")
    for path in expected:
        assert path in str(error.value)
    assert not (tmp_path / "m.csv").exists()


def test_quarantine_mode_keeps_good_lists_bad_and_reconciles(cnmc_tree, tmp_path, caplog):
    expected = spoil(cnmc_tree)
    caplog.set_level("INFO")
    status = main(
        [
            "ingest",
            str(cnmc_tree),
            "--out",
            str(tmp_path / "m.csv"),
            "--quarantine",
            str(tmp_path / "q.csv"),
            "--ingest",
            '{"on_bad": "quarantine"}',
        ]
    )
    assert status == 0
    manifest = pd.read_csv(tmp_path / "m.csv")
    quarantine = pd.read_csv(tmp_path / "q.csv").set_index("path")["reason"]
    assert set(quarantine.index) == set(expected)
    for path, fragment in expected.items():
        assert fragment in quarantine[path]
    assert len(manifest) == 27 - 1  # the original of the leaked pair is quarantined too
    assert (
        f"found {len(manifest) + len(quarantine)} image files = {len(manifest)} used + "
        f"{len(quarantine)} quarantined; 2 non-image files ignored" in caplog.text
    )


def test_no_bad_file_stops_ingest_or_vanishes(tmp_path, caplog):
    """Every kind of bad image is one quarantine row with its reason, the good ones are used,
    and a dangling link with a C-NMC name is a missing image, not an ignored file."""
    root = tmp_path / "cells"
    bad = good_and_bad_images(root)
    caplog.set_level("INFO")
    argv = ["ingest", str(root), "--out", str(tmp_path / "m.csv"), "--threads", "2"]
    status = main(
        [*argv, "--quarantine", str(tmp_path / "q.csv"), "--ingest", '{"on_bad": "quarantine"}']
    )
    assert status == 0
    manifest = pd.read_csv(tmp_path / "m.csv")
    quarantine = pd.read_csv(tmp_path / "q.csv").set_index("path")["reason"]
    assert sorted(manifest["path"]) == list(GOOD_CELLS)
    assert set(quarantine.index) == set(bad)
    for path, fragment in bad.items():
        assert fragment in quarantine[path], (path, quarantine[path])
    assert "found 11 image files = 3 used + 8 quarantined; 1 non-image files ignored" in caplog.text


def test_cli_error_mode_exits_non_zero(cnmc_tree, tmp_path, capsys):
    spoil(cnmc_tree)
    status = main(["ingest", str(cnmc_tree), "--out", str(tmp_path / "m.csv")])
    assert status == 2
    assert "UID_7_3_1_all.bmp: not an image file" in capsys.readouterr().err


def test_missing_dataset_folder_is_a_clear_error(tmp_path, capsys):
    status = main(["ingest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.csv")])
    assert status == 2
    assert "dataset folder does not exist" in capsys.readouterr().err


def test_make_cnmc_tree_is_deterministic(tmp_path):
    a = ingest(make_cnmc_tree(tmp_path / "a")).manifest
    b = ingest(make_cnmc_tree(tmp_path / "b")).manifest
    pd.testing.assert_frame_equal(a, b)
