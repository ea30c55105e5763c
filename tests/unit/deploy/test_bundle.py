"""The model bundle: what `leukoflow bundle` and `bundle-ensemble` write and how `load_bundle`
checks it."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.deploy.bundle import FORMAT_VERSION, load_bundle, read_meta
from leukoflow.stain.normalize import fit_reference, save_reference

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
    build_model("SimpleNet", SIZE + 8, weights="none").save(root / "model40.keras")
    metrics = {
        "threshold": 0.42,
        "test": {"f1": 0.8, "precision": 0.75},
        "val": {"f1": 0.7},
        "calibration": {"temperature": 1.7},
        "referral": {"lo": 0.3, "hi": 0.6, "metric": "sensitivity", "target": 0.95, "met": True},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    combiner = {
        "method": "stacked",
        "members": ["A", "B"],
        "weights": [1.5, 0.5],
        "intercept": -0.1,
    }
    (root / "ensemble.json").write_text(json.dumps({**metrics, "ensemble": combiner}))
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
    assert meta["threshold"] == 0.42 and meta["temperature"] == 1.7 and meta["kind"] == "model"
    assert meta["referral"] == {
        "by": "probability",
        "lo": 0.3,
        "hi": 0.6,
        "metric": "sensitivity",
        "target": 0.95,
    }
    assert meta["test_metrics"] == {"f1": 0.8, "precision": 0.75}
    assert meta["stain_reference"] == json.loads((sources / "reference.json").read_text())
    assert meta["config_hash"] == "abc123"
    assert meta["dtype_policy"] == "float32"
    (member,) = meta["members"]
    assert member["onnx"]["file"] == "model.onnx" and (bundle_dir / "model.onnx").is_file()
    assert (bundle_dir / "README.md").read_text().count("# leukoflow model SimpleNet") == 1
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
    newer, current = FORMAT_VERSION + 1, FORMAT_VERSION
    with pytest.raises(
        LeukoflowError, match=rf"bundle format {newer} is newer .* supports \({current}\); upgrade"
    ):
        load_bundle(copy)


def test_a_format_1_bundle_is_read_with_temperature_1_and_no_band(bundle_dir, tmp_path):
    def as_format_1(meta):
        for key in ("kind", "members", "combiner", "temperature", "referral"):
            meta.pop(key)
        meta["format_version"] = 1

    bundle = load_bundle(edited_copy(bundle_dir, tmp_path, as_format_1))
    assert bundle.temperature == 1.0 and bundle.referral is None
    assert bundle.input_sizes == [SIZE] and bundle.combiner["weights"] == [1.0]


def test_an_ensemble_bundle_holds_every_member(sources, tmp_path):
    settings = {
        "A": {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"},
        "B": {"architecture": "SimpleNet", "input_size": SIZE + 8, "jit_compile": "off"},
    }
    status = main(
        [
            "bundle-ensemble", "--name", "Duo",
            "--models", json.dumps(
                {"B": str(sources / "model40.keras"), "A": str(sources / "model.keras")}
            ),
            "--settings", json.dumps(settings),
            "--metrics", str(sources / "ensemble.json"),
            "--reference", str(sources / "reference.json"),
            "--config-hash", "e1", "--out", str(tmp_path / "Duo"),
        ]
    )  # fmt: skip
    assert status == 0
    bundle = load_bundle(tmp_path / "Duo")
    assert bundle.meta["kind"] == "ensemble" and bundle.architecture == "Duo"
    assert [m.architecture for m in bundle.members] == ["A", "B"]  # the combiner's order
    assert [m.input_size for m in bundle.members] == [SIZE, SIZE + 8]
    assert bundle.input_sizes == [SIZE, SIZE + 8]
    assert bundle.combiner["weights"] == [1.5, 0.5] and bundle.temperature == 1.7
    assert (tmp_path / "Duo/members/B.keras").read_bytes() == (
        sources / "model40.keras"
    ).read_bytes()
    with pytest.raises(LeukoflowError, match="is an ensemble"):
        bundle.model  # noqa: B018 (the property raises)
    # each member's ONNX file beside its Keras file; the card names members and weights
    assert [m.onnx_file for m in bundle.members] == [
        tmp_path / "Duo/members/A.onnx",
        tmp_path / "Duo/members/B.onnx",
    ]
    assert all(f.is_file() for f in (m.onnx_file for m in bundle.members))
    card = (tmp_path / "Duo/README.md").read_text()
    assert "combined by **stacked**" in card and "| A | 32 | 1.5000 |" in card
    assert "| B | 40 | 0.5000 |" in card and "T = **1.7000**" in card
    bad = {**settings}
    bad.pop("B")
    status = main(
        [
            "bundle-ensemble", "--name", "Duo",
            "--models", json.dumps({"A": str(sources / "model.keras")}),
            "--settings", json.dumps(bad),
            "--metrics", str(sources / "ensemble.json"),
            "--reference", str(sources / "reference.json"),
            "--config-hash", "e1", "--out", str(tmp_path / "Bad"),
        ]
    )  # fmt: skip
    assert status == 2 and not (tmp_path / "Bad").exists()


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
