"""`leukoflow predict`: same probabilities as evaluate, calibrated, referred, ensembles prepared
once per input size; bad files, folder walk, TTA, exit codes."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from leukoflow.cli import main
from leukoflow.data import synth
from leukoflow.data.images import read_rgb
from leukoflow.deploy.bundle import load_bundle
from leukoflow.deploy.bundle_write import write_bundle
from leukoflow.deploy.predict import COLUMNS, collect_inputs
from leukoflow.stain.normalize import fit_reference, save_reference
from leukoflow.stain.stores import prepare_image

SIZE = 32


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Five synthetic cells (64 px BMP, two subjects' stains) and a SimpleNet bundle for them."""
    from leukoflow.models import build_model

    root = tmp_path_factory.mktemp("predict")
    cells, _, _ = synth.cells(6, 64, seed=0, subjects=2, labels=[1, 1, 1, 0, 0, 0])
    images = root / "images"
    images.mkdir()
    files = []
    for i, cell in enumerate(cells[:5]):
        files.append(images / f"cell{i}.bmp")
        Image.fromarray(cell).save(files[-1])
    # an asymmetric cell: a bright wedge in one quadrant, so rotations change the input
    asym = cells[5].copy()
    asym[8:28, 8:20] = (230, 40, 40)
    files.append(images / "asym.bmp")
    Image.fromarray(asym).save(files[-1])
    save_reference(fit_reference(cells, "macenko"), root / "reference.json")
    build_model("SimpleNet", SIZE, weights="none", dropout=0.0).save(root / "model.keras")
    (root / "metrics.json").write_text(json.dumps({"threshold": 0.5, "test": {"f1": 0.5}}))
    settings = {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"}
    write_bundle(
        root / "model.keras", root / "metrics.json", root / "reference.json", settings, "h",
        root / "bundle",
    )  # fmt: skip
    return {"root": root, "files": files, "bundle": load_bundle(root / "bundle")}


def run_predict(workspace, inputs, tmp_path, *options, bundle="bundle", engine="keras"):
    """`leukoflow predict` on the Keras engine (test_onnx.py compares the engines)."""
    out = tmp_path / "predictions.csv"
    argv = ["predict", "--model", str(workspace["root"] / bundle), "--out", str(out)]
    argv += ["--engine", engine]
    status = main([*argv, *options, *map(str, inputs)])
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return status, rows


def prepared(workspace, files):
    bundle = workspace["bundle"]
    return np.stack([prepare_image(read_rgb(f), bundle.reference, SIZE) for f in files])


def evaluate_probabilities(workspace, images, tta):
    """What evaluate computes for a store of these prepared images."""
    from leukoflow.models.inference import compiled_inference, predict_store

    return predict_store(compiled_inference(workspace["bundle"].model), images, 32, tta)


def probabilities(rows):
    return np.array([float(row["calibrated_probability_all"]) for row in rows])


@pytest.mark.slow
def test_probabilities_are_those_of_the_model_on_prepared_images(workspace, tmp_path):
    files = workspace["files"]
    status, rows = run_predict(workspace, files, tmp_path, "--batch-size", "4", "--threads", "2")
    assert status == 0
    assert list(rows[0]) == list(COLUMNS)
    assert [row["path"] for row in rows] == [str(f) for f in files]
    images = prepared(workspace, files)
    direct = workspace["bundle"].model.predict(images.astype(np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose(probabilities(rows), direct, atol=1e-5)
    np.testing.assert_allclose(
        probabilities(rows), evaluate_probabilities(workspace, images, 0), atol=1e-5
    )
    for row in rows:
        assert float(row["threshold"]) == 0.5 and row["error"] == ""
        assert row["label"] == ("all" if float(row["calibrated_probability_all"]) >= 0.5 else "hem")
        assert row["refer"] == "0"  # the bundle has no referral band


@pytest.mark.slow
def test_tta_is_the_mean_over_evaluates_rotations(workspace, tmp_path):
    files = workspace["files"]
    images = prepared(workspace, files)
    _, plain = run_predict(workspace, files, tmp_path)
    _, four = run_predict(workspace, files, tmp_path, "--tta", "4")
    rotated = np.stack([np.rot90(images, k, axes=(1, 2)) for k in range(4)])
    model = workspace["bundle"].model
    by_hand = np.mean(
        [model.predict(r.astype(np.float32), verbose=0)[:, 0] for r in rotated], axis=0
    )
    np.testing.assert_allclose(probabilities(four), by_hand, atol=1e-5)
    # the asymmetric cell looks different to the model when rotated: TTA is not a no-op
    assert abs(probabilities(four)[-1] - probabilities(plain)[-1]) > 1e-4
    _, three = run_predict(workspace, files, tmp_path, "--tta", "3")  # 120-degree rotations
    np.testing.assert_allclose(
        probabilities(three), evaluate_probabilities(workspace, images, 3), atol=1e-5
    )


def write_bad_files(folder):
    """Bad inputs and the words their error must contain."""
    folder.mkdir(exist_ok=True)
    good = folder / "good.bmp"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(good)
    truncated = folder / "truncated.bmp"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = folder / "notes.png"
    text.write_text("not an image\n")
    grey = folder / "grey.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(grey)
    empty = folder / "empty.tif"
    empty.write_bytes(b"")
    return {
        truncated: "truncated",
        text: "not an image",
        grey: "mode is L",
        empty: "empty file",
        folder / "missing.jpg": "cannot read",
    }


@pytest.mark.slow
def test_bad_files_get_an_error_row_and_do_not_stop_the_run(workspace, tmp_path):
    bad = write_bad_files(tmp_path / "bad")
    good = workspace["files"][:2]
    inputs = [good[0], *bad, good[1]]
    status, rows = run_predict(workspace, inputs, tmp_path)
    assert status == 0
    assert [row["path"] for row in rows] == [str(p) for p in inputs]
    for row, (path, words) in zip(rows[1:-1], bad.items(), strict=True):
        assert words in row["error"], (path, row["error"])
        assert row["calibrated_probability_all"] == "" and row["label"] == ""
        assert row["refer"] == ""
    for row in (rows[0], rows[-1]):
        assert row["error"] == "" and 0 <= float(row["calibrated_probability_all"]) <= 1


@pytest.mark.slow
def test_exit_status_is_one_only_when_nothing_could_be_read(workspace, tmp_path, caplog):
    bad = write_bad_files(tmp_path / "bad")
    status, rows = run_predict(workspace, list(bad), tmp_path)
    assert status == 1
    assert len(rows) == len(bad) and all(row["error"] for row in rows)
    assert "none of the 5 input files could be classified" in caplog.text
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert run_predict(workspace, [empty], tmp_path) == (1, [])


def test_folder_walk_takes_image_extensions_in_any_case_and_nothing_else(tmp_path):
    root = tmp_path / "walk"
    names = ["b.BMP", "a.png", "sub/c.JpG", "sub/deeper/d.jpeg", "e.TIF", "f.tiff"]
    others = ["notes.txt", "table.csv", "noext", "sub/image.bmp.bak", "g.gif"]
    for name in names + others:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    explicit = root / "notes.txt"
    found = collect_inputs([root, explicit])
    expected = ["a.png", "b.BMP", "e.TIF", "f.tiff", "sub/c.JpG", "sub/deeper/d.jpeg"]
    assert found == [root / name for name in expected] + [explicit]


@pytest.mark.slow
def test_a_folder_input_is_predicted(workspace, tmp_path):
    status, rows = run_predict(workspace, [workspace["files"][0].parent], tmp_path)
    assert status == 0
    assert [row["path"] for row in rows] == sorted(str(f) for f in workspace["files"])


def test_missing_bundle_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "p.csv"
    status = main(["predict", "--model", str(tmp_path / "none"), "--out", str(out), "x.bmp"])
    assert status == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not out.exists()


def write_fitted_bundles(workspace):
    """A calibrated model bundle with a referral band, and a stacked ensemble of it and a
    SimpleNet at another input size (the sizes differ: two preparations per image)."""
    from leukoflow.deploy.bundle_write import write_ensemble_bundle
    from leukoflow.models import build_model

    root = workspace["root"]
    if (root / "ensemble").is_dir():
        return
    build_model("SimpleNet", SIZE + 8, weights="none", dropout=0.0).save(root / "model40.keras")
    fitted = {
        "threshold": 0.45,
        "test": {},
        "calibration": {"temperature": 2.0},
        "referral": {"lo": 0.4, "hi": 0.55, "metric": "sensitivity", "target": 0.95},
    }
    (root / "fitted.json").write_text(json.dumps(fitted))
    combiner = {
        "method": "stacked",
        "members": ["A", "B"],
        "weights": [1.2, -0.7],
        "intercept": 0.3,
    }
    (root / "fitted_ensemble.json").write_text(json.dumps({**fitted, "ensemble": combiner}))
    settings = {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"}
    write_bundle(
        root / "model.keras", root / "fitted.json", root / "reference.json", settings, "h",
        root / "calibrated",
    )  # fmt: skip
    write_ensemble_bundle(
        "Duo",
        {"A": root / "model.keras", "B": root / "model40.keras"},
        {"A": settings, "B": {**settings, "input_size": SIZE + 8}},
        root / "fitted_ensemble.json",
        root / "reference.json",
        "e",
        root / "ensemble",
    )


def logit(p):
    return np.log(p) - np.log1p(-p)


@pytest.mark.slow
def test_probabilities_are_calibrated_and_cells_in_the_band_referred(workspace, tmp_path):
    write_fitted_bundles(workspace)
    files = workspace["files"]
    _, plain = run_predict(workspace, files, tmp_path)
    status, rows = run_predict(workspace, files, tmp_path, bundle="calibrated")
    assert status == 0
    p = probabilities(rows)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logit(probabilities(plain)) / 2.0)), atol=1e-6)
    assert [row["refer"] for row in rows] == [str(int(0.4 <= q < 0.55)) for q in p]
    assert [row["label"] for row in rows] == ["all" if q >= 0.45 else "hem" for q in p]


@pytest.mark.slow
def test_an_ensemble_reads_each_image_once_and_prepares_it_once_per_size(
    workspace, tmp_path, monkeypatch
):
    """Two members at two sizes: each file read once, prepared once at each size; the
    probabilities are the stacked combination of the members', then calibrated."""
    from leukoflow.deploy import predict as predict_module
    from leukoflow.models import load_model

    write_fitted_bundles(workspace)
    files = workspace["files"]
    reads, preparations = [], []
    real_open, real_prepare = predict_module.open_rgb, predict_module.prepare_image
    monkeypatch.setattr(
        predict_module, "open_rgb", lambda p, **kw: reads.append(p) or real_open(p, **kw)
    )
    monkeypatch.setattr(
        predict_module,
        "prepare_image",
        lambda image, ref, size: preparations.append(size) or real_prepare(image, ref, size),
    )
    status, rows = run_predict(workspace, files, tmp_path, bundle="ensemble")
    assert status == 0
    assert sorted(map(str, reads)) == sorted(map(str, files))
    assert sorted(preparations) == sorted([SIZE, SIZE + 8] * len(files))
    root = workspace["root"]
    members = []
    for model, size in ((root / "model.keras", SIZE), (root / "model40.keras", SIZE + 8)):
        images = np.stack([real_prepare(read_rgb(f), workspace["bundle"].reference, size)
                           for f in files])  # fmt: skip
        members.append(load_model(model).predict(images.astype(np.float32), verbose=0)[:, 0])
    z = 0.3 + 1.2 * logit(members[0]) - 0.7 * logit(members[1])
    expected = 1 / (1 + np.exp(-z / 2.0))
    np.testing.assert_allclose(probabilities(rows), expected, atol=1e-5)


def test_a_bundle_that_refers_by_uncertainty_refers_the_cells_at_its_cut(workspace, tmp_path):
    """Referral by `tta_spread` (evaluate.referral.by: uncertainty): bundle.json keeps the
    rule, the card states it, and predict refers exactly the cells whose spread reaches the
    cut, on both engines; an engine or TTA that cannot compute the column is refused."""
    root = workspace["root"]
    rule = {"by": "uncertainty", "column": "tta_spread", "cut": None, "metric": "sensitivity",
            "target": 0.9, "met": True, "val_share_referred": 0.0}  # fmt: skip
    metrics = {"threshold": 0.5, "test": {"f1": 0.5}, "tta": "dihedral", "referral": rule}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    settings = {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"}
    write_bundle(root / "model.keras", tmp_path / "metrics.json", root / "reference.json",
                 settings, "h", tmp_path / "bundle")  # fmt: skip
    meta = json.loads((tmp_path / "bundle/bundle.json").read_text())
    assert meta["referral"] == {k: rule[k] for k in ("by", "column", "cut", "metric", "target")}
    assert "No cell is referred (the rule ranks cells by `tta_spread`)" in (
        (tmp_path / "bundle/README.md").read_text()
    )
    workspace = {**workspace, "root": tmp_path}
    _, rows = run_predict(workspace, workspace["files"], tmp_path)
    spread = np.array([float(row["tta_spread"]) for row in rows])
    assert {row["refer"] for row in rows} == {"0"} and len(set(spread)) > 2
    meta["referral"]["cut"] = float(np.median(spread))  # about half the cells reach it
    (tmp_path / "bundle/bundle.json").write_text(json.dumps(meta))
    for engine in ("keras", "onnx"):
        status, rows = run_predict(workspace, workspace["files"], tmp_path, engine=engine)
        assert status == 0
        got = np.array([float(row["tta_spread"]) for row in rows])
        np.testing.assert_allclose(got, spread, atol=1e-5)
        refer = [row["refer"] == "1" for row in rows]
        assert refer == list(spread >= np.median(spread)) and 0 < sum(refer) < len(rows), engine
    status, _ = run_predict(workspace, workspace["files"], tmp_path, "--tta", "none")
    assert status == 2  # no views, no spread: refused before any image is read
