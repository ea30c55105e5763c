"""The model bundle: what `leukoflow bundle` writes and how `load_bundle` checks it."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from leukoflow import synth
from leukoflow.bundle import FORMAT_VERSION, load_bundle, read_meta
from leukoflow.cli import main
from leukoflow.errors import LeukoflowError
from leukoflow.stain import fit_reference, save_reference

SIZE = 32
pytestmark = pytest.mark.slow  # every test needs a Keras model (TensorFlow start, build: ~10 s)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A saved SimpleNet, an evaluate-like metrics.json and a fitted stain reference."""
    from leukoflow.models import build_model

    root = tmp_path_factory.mktemp("bundle_sources")
    cells, _, _ = synth.cells(4, 64, seed=0, subjects=1, labels=[1, 1, 1, 1])
    for i, cell in enumerate(cells):
        Image.fromarray(cell).save(root / f"cell{i}.bmp")
    save_reference(fit_reference(cells, "macenko"), root / "reference.json")
    build_model("SimpleNet", SIZE, weights="none").save(root / "model.keras")
    metrics = {"threshold": 0.42, "test": {"f1": 0.8, "precision": 0.75}, "val": {"f1": 0.7}}
    (root / "metrics.json").write_text(json.dumps(metrics))
    return root


def write(sources, out_dir):
    settings = json.dumps({"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"})
    status = main(
        [
            "bundle",
            "--model", str(sources / "model.keras"),
            "--metrics", str(sources / "metrics.json"),
            "--reference", str(sources / "reference.json"),
            "--settings", settings,
            "--config-hash", "abc123",
            "--out", str(out_dir),
        ]
    )  # fmt: skip
    assert status == 0
    return out_dir


@pytest.fixture(scope="module")
def bundle_dir(sources, tmp_path_factory):
    return write(sources, tmp_path_factory.mktemp("bundles") / "SimpleNet")


def test_bundle_metadata(bundle_dir, sources):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["architecture"] == "SimpleNet"
    assert meta["input_size"] == SIZE
    assert meta["class_names"] == ["hem", "all"] and meta["positive_class"] == "all"
    assert meta["threshold"] == 0.42
    assert meta["test_metrics"] == {"f1": 0.8, "precision": 0.75}
    assert meta["stain_reference"] == json.loads((sources / "reference.json").read_text())
    assert meta["config_hash"] == "abc123"
    assert meta["dtype_policy"] == "float32"
    assert set(meta["versions"]) >= {"leukoflow", "keras", "backend", "numpy"}
    assert meta["created"].endswith("+00:00")
    model = bundle_dir / "model.keras"
    assert model.read_bytes() == (sources / "model.keras").read_bytes()
    # a copy, not a hard link: Snakemake touching the bundle must not touch training's model
    assert model.stat().st_ino != (sources / "model.keras").stat().st_ino


def test_load_bundle_gives_the_trained_model(bundle_dir, sources):
    from leukoflow.models import load_model

    bundle = load_bundle(bundle_dir)
    assert (bundle.architecture, bundle.input_size, bundle.threshold) == ("SimpleNet", SIZE, 0.42)
    assert bundle.reference["method"] == "macenko"
    x = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = load_model(sources / "model.keras").predict(x, verbose=0)
    np.testing.assert_allclose(bundle.model.predict(x, verbose=0), expected, atol=1e-6)


def edited_copy(bundle_dir, tmp_path, edit):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    edit(meta)
    (copy / "bundle.json").write_text(json.dumps(meta))
    return copy


def test_newer_format_is_refused_clearly(bundle_dir, tmp_path):
    copy = edited_copy(bundle_dir, tmp_path, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(
        LeukoflowError, match=r"bundle format 2 is newer .* supports \(1\); upgrade"
    ):
        load_bundle(copy)


def test_bundle_without_reference_is_refused_clearly(bundle_dir, tmp_path):
    copy = edited_copy(bundle_dir, tmp_path, lambda m: m.pop("stain_reference"))
    with pytest.raises(LeukoflowError, match=r"bundle\.json: the bundle has no stain reference"):
        read_meta(copy)


def test_missing_files_are_named(bundle_dir, tmp_path):
    copy = edited_copy(bundle_dir, tmp_path, lambda m: None)
    (copy / "model.keras").unlink()
    with pytest.raises(LeukoflowError, match=r"has no model file .*model\.keras"):
        load_bundle(copy)
    (copy / "bundle.json").unlink()
    with pytest.raises(LeukoflowError, match=r"bundle metadata .*bundle\.json does not exist"):
        load_bundle(copy)
    with pytest.raises(LeukoflowError, match="is not a folder"):
        load_bundle(tmp_path / "nowhere")


def test_bundle_command_names_a_missing_input(sources, tmp_path, capsys):
    status = main(
        [
            "bundle", "--model", str(sources / "model.keras"),
            "--metrics", str(tmp_path / "missing.json"),
            "--reference", str(sources / "reference.json"),
            "--settings", json.dumps({"architecture": "SimpleNet", "input_size": SIZE}),
            "--config-hash", "x", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert status == 2
    assert "missing.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out" / "bundle.json").exists()
