"""`leukoflow predict` on a folder of good cells beside every kind of bad file: one row per
input, an error row with its reason for each bad file, real predictions for the good ones."""

import csv
from pathlib import Path

import pytest
from cells import GOOD_CELLS, good_and_bad_images

from leukoflow.cli import main

pytestmark = pytest.mark.slow  # the shared models tree (conftest.py) costs ~15 s once


def predict_rows(models_tree, inputs, out, *options):
    """Run `leukoflow predict` with model bundle A on ONNX Runtime; (status, {path: row})."""
    argv = ["predict", "--model", str(models_tree["models"] / "A"), "--out", str(out)]
    status = main([*argv, "--engine", "onnx", "--threads", "2", *options, *map(str, inputs)])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows)  # one row per input, none twice
    return status, by_path


def test_bad_files_get_error_rows_and_the_good_ones_real_predictions(models_tree, tmp_path):
    root = tmp_path / "cells"
    bad = good_and_bad_images(root)
    status, rows = predict_rows(models_tree, [root], tmp_path / "all.csv")
    assert status == 0
    assert {Path(path).relative_to(root).as_posix() for path in rows} == {*bad, *GOOD_CELLS}
    for rel, fragment in bad.items():
        row = rows[str(root / rel)]
        assert fragment in row["error"], (rel, row["error"])
        assert row["calibrated_probability_all"] == row["label"] == row["refer"] == ""
    good = [root / rel for rel in GOOD_CELLS]
    _, alone = predict_rows(models_tree, good, tmp_path / "good.csv")
    for path in map(str, good):
        assert rows[path]["error"] == "" and rows[path]["label"] in ("all", "hem")
        assert rows[path]["calibrated_probability_all"] == alone[path]["calibrated_probability_all"]


def test_max_pixels_reaches_the_reader(models_tree, tmp_path):
    good = [tmp_path / "cells" / rel for rel in GOOD_CELLS]
    good_and_bad_images(tmp_path / "cells")
    status, rows = predict_rows(models_tree, good, tmp_path / "p.csv", "--max-pixels", "1000")
    assert status == 1  # none classified: every 32 x 32 cell has more than 1,000 pixels
    assert all("more than max_pixels 1,000" in row["error"] for row in rows.values())
