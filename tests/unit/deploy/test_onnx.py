"""The ONNX copy of a model: every architecture exports and agrees with Keras within 1e-4.

Random weights (`build_model`, no training) at the smallest input each architecture takes
(32 px, Xception 71 px), each exported once (the module-scoped `exported` fixture) and checked
by three tests; the agreement is checked on images other than the ones the export check
used. The export time hardly depends on the input size: the deep networks' conversions take
most of this module's time (EfficientNetV2M, ResNet152V2 and EfficientNetB5 most). On JAX
the export is the same TensorFlow one, so SimpleNet stands for all (EfficientNetB5 passes
too, in 260 s on a busy machine).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from leukoflow.deploy.onnx_model import (
    FEATURES_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    TOLERANCE,
    check_images,
    export_checked,
    onnx_inference,
)
from leukoflow.deploy.predict import choose_engine
from leukoflow.models.registry import ARCHITECTURES

pytestmark = pytest.mark.slow


def small_size(arch):
    """The smallest input the architecture takes (at least 32 px)."""
    return max(32, ARCHITECTURES[arch].min_size)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def exported(request, tmp_path_factory):
    """One architecture (random weights, smallest input) exported once, for every test of it:
    (architecture, input size, folder with model.keras and model.onnx, export_checked's
    result, the Keras model's compiled inference function)."""
    import keras

    from leukoflow.models import build_model
    from leukoflow.models.inference import compiled_inference

    arch = request.param
    keras.utils.set_random_seed(0)
    size = small_size(arch)
    folder = tmp_path_factory.mktemp(f"onnx_{arch}")
    model = build_model(arch, size, weights="none")
    model.save(folder / "model.keras")
    result = export_checked(model, folder / "model.keras", folder / "model.onnx")
    return arch, size, folder, result, compiled_inference(model)


def test_every_architecture_exports_within_the_tolerance(exported):
    _, _, _, result, _ = exported
    assert result["file"] == "model.onnx", result["reason"]
    assert result["reason"] is None and result["max_abs_diff"] <= TOLERANCE
    assert "tf2onnx" in result["exporter"] and result["opset"] >= 13
    # the numpy head on the ONNX features gave the ONNX probabilities: MC dropout on ONNX
    assert result["head"]["activation"] == "sigmoid" and result["head"]["rate"] >= 0


def test_every_architectures_onnx_model_has_the_keras_contract(exported):
    import onnxruntime as ort

    _, size, folder, _, _ = exported
    session = ort.InferenceSession(str(folder / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME, FEATURES_NAME]
    assert session.get_inputs()[0].shape[1:] == [size, size, 3]
    features = onnx_inference(folder / "model.onnx", output=FEATURES_NAME)(check_images(size, 2))
    assert features.dtype == np.float32 and features.shape[0] == 2 and features.ndim == 2


def test_every_architecture_agrees_with_keras_on_other_images(exported):
    _, size, folder, _, keras_fn = exported
    images = check_images(size, n=6, seed=1)  # any batch size, other images than the check's
    diff = np.abs(onnx_inference(folder / "model.onnx")(images) - keras_fn(images)).max()
    assert diff <= TOLERANCE


def test_a_model_with_online_augmentation_exports(tmp_path):
    from leukoflow.models import build_model, load_model
    from leukoflow.models.augmentation import build_online_augmentation

    augmentation = build_online_augmentation(rotation=True, flip=True, noise_std=4.0, seed=0)
    build_model("SimpleNet", 32, augmentation=augmentation).save(tmp_path / "model.keras")
    model = load_model(tmp_path / "model.keras")  # as a bundle loads it
    assert model.get_layer("online_augmentation") is not None
    result = export_checked(model, tmp_path / "model.keras", tmp_path / "model.onnx")
    assert result["file"] == "model.onnx" and result["max_abs_diff"] <= TOLERANCE


JAX_EXPORT = textwrap.dedent(
    """
    import json, sys
    import keras
    from leukoflow.models import build_model
    from leukoflow.deploy.onnx_model import export_checked
    assert keras.backend.backend() == "jax"
    arch, size, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    keras.utils.set_random_seed(0)
    model = build_model(arch, size, weights="none")
    model.save(f"{folder}/model.keras")
    print(json.dumps(export_checked(model, f"{folder}/model.keras", f"{folder}/model.onnx")))
    """
)


@pytest.mark.jax
@pytest.mark.parametrize("arch", ["SimpleNet"])
def test_jax_models_export_through_tensorflow_and_agree_with_jax(arch, tmp_path):
    # the child exports with TensorFlow; the check compares with the model on JAX
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", JAX_EXPORT, arch, str(small_size(arch)), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["file"] == "model.onnx", result["reason"]
    assert result["max_abs_diff"] <= TOLERANCE
    assert (tmp_path / "model.onnx").is_file()


def test_auto_engine_is_onnx_on_a_cpu_when_every_member_has_one():
    def bundle(*files):
        return {"members": [{"onnx": {"file": f, "reason": None if f else "X"}} for f in files]}

    with_onnx, without = bundle("model.onnx"), bundle(None)
    assert choose_engine("auto", bundle("members/A.onnx", "members/B.onnx"), gpu=False) == "onnx"
    assert choose_engine("auto", bundle("members/A.onnx", None), gpu=False) == "keras"
    assert choose_engine("auto", with_onnx, gpu=False) == "onnx"
    assert choose_engine("auto", with_onnx, gpu=True) == "keras"
    assert choose_engine("auto", without, gpu=False) == "keras"
    assert choose_engine("auto", {"members": [{}]}, gpu=False) == "keras"  # made before ONNX
    assert choose_engine("onnx", without, gpu=True) == "onnx"  # asked for: load_bundle says why
    assert choose_engine("keras", with_onnx, gpu=False) == "keras"


SIZE = 32
CLI = "import sys; from leukoflow.cli import main; sys.exit(main(sys.argv[1:]))"
NO_TF2ONNX = "import sys; sys.modules['tf2onnx'] = None; " + CLI  # as if it were not installed


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A saved SimpleNet, evaluate-like metrics, a stain reference, a split table, cells."""
    import pandas as pd
    from PIL import Image

    from leukoflow.data import synth
    from leukoflow.models import build_model
    from leukoflow.stain.normalize import fit_reference, save_reference

    root = tmp_path_factory.mktemp("onnx_bundle")
    cells, _, _ = synth.cells(6, 64, seed=0, subjects=2, labels=[1, 1, 1, 0, 0, 0])
    (root / "cells").mkdir()
    for i, cell in enumerate(cells):
        Image.fromarray(cell).save(root / "cells" / f"cell{i}.bmp")
    save_reference(fit_reference(cells, "macenko"), root / "reference.json")
    build_model("SimpleNet", SIZE, weights="none").save(root / "model.keras")
    metrics = {
        "threshold": 0.5,
        "threshold_rule": "max_f1",
        "n_test": 2,
        "n_val": 2,
        "n_test_subjects": 1,
        "bootstrap": {"resamples": 200, "unit": "subject"},
        "ci": {"f1": [0.5, 0.9]},
        "test": {"f1": 0.7, "ece": 0.1, "brier": 0.2},
        "val": {"f1": 0.6},
        "calibration": {
            "temperature": 1.5,
            "before": {"ece": 0.2, "brier": 0.25},
            "after": {"ece": 0.1, "brier": 0.2},
        },
        "referral": {"lo": 0.45, "hi": 0.55, "metric": "sensitivity", "target": 0.9,
                     "met": True, "val_share_referred": 0.1, "test": {"share_referred": 0.2}},
    }  # fmt: skip
    (root / "metrics.json").write_text(json.dumps(metrics))
    combiner = {"method": "mean", "members": ["SimpleNet", "Wide"], "weights": [0.5, 0.5],
                "intercept": 0.0}  # fmt: skip
    (root / "ensemble.json").write_text(json.dumps({**metrics, "ensemble": combiner}))
    build_model("SimpleNet", SIZE + 8, weights="none").save(root / "model40.keras")
    split = pd.DataFrame(
        {
            "path": [f"c{i}.bmp" for i in range(8)],
            "subject": ["1", "1", "2", "2", "H3", "H3", "4", "4"],
            "label": ["all", "all", "all", "all", "hem", "hem", "all", "hem"],
            "subset": ["train", "train", "train", "train", "train", "train", "val", "test"],
            "cv_fold": [-1] * 8,
        }
    )
    split.to_csv(root / "split.csv", index=False)
    return root


def bundle_argv(sources, out):
    settings = {"architecture": "SimpleNet", "input_size": SIZE, "epochs": 3, "seed": 0}
    data = {"dataset": {"source": "synthetic", "synthetic": {"subjects": 4}}, "split": {}}
    return [
        "bundle",
        "--model", str(sources / "model.keras"),
        "--metrics", str(sources / "metrics.json"),
        "--reference", str(sources / "reference.json"),
        "--settings", json.dumps(settings),
        "--config-hash", "h",
        "--split", str(sources / "split.csv"),
        "--data", json.dumps(data),
        "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bundle_dir(sources):
    from leukoflow.cli import main

    assert main(bundle_argv(sources, sources / "bundle")) == 0
    return sources / "bundle"


def predicted(sources, bundle, engine, tmp_path):
    import pandas as pd

    from leukoflow.cli import main

    out = tmp_path / f"{engine}.csv"
    argv = ["predict", "--model", str(bundle), "--out", str(out), "--engine", engine]
    assert main([*argv, str(sources / "cells")]) == 0
    return pd.read_csv(out)


def test_bundle_holds_the_onnx_model_the_card_and_the_data(bundle_dir):
    from leukoflow.deploy.bundle import read_meta
    from leukoflow.deploy.modelcard import render_card

    meta = read_meta(bundle_dir)
    (onnx,) = (member["onnx"] for member in meta["members"])
    assert (bundle_dir / "model.onnx").is_file()
    assert onnx["file"] == "model.onnx" and onnx["max_abs_diff"] <= TOLERANCE
    assert meta["data"]["subsets"]["train"] == {"subjects": 3, "images": 6, "all": 4, "hem": 2}
    assert meta["evaluation"]["ci"] == {"f1": [0.5, 0.9]}
    # the card is made from bundle.json alone: nothing in it can drift from the bundle
    assert (bundle_dir / "README.md").read_text() == render_card(meta)


def onnx_rows_agreeing_with_keras(sources, bundle, tmp_path):
    """The ONNX engine's rows, after checking them against Keras' and auto's."""
    keras_rows = predicted(sources, bundle, "keras", tmp_path)
    onnx_rows = predicted(sources, bundle, "onnx", tmp_path)
    auto_rows = predicted(sources, bundle, "auto", tmp_path)  # a CPU: ONNX Runtime
    assert len(keras_rows) == 6 and keras_rows["error"].isna().all()
    column = "calibrated_probability_all"
    assert np.abs(onnx_rows[column] - keras_rows[column]).max() <= TOLERANCE
    assert auto_rows[column].tolist() == onnx_rows[column].tolist()
    return onnx_rows


def test_onnx_and_keras_engines_give_the_same_predictions(sources, bundle_dir, tmp_path):
    onnx_rows_agreeing_with_keras(sources, bundle_dir, tmp_path)


def test_a_failed_export_leaves_a_bundle_without_onnx_and_says_why(sources, tmp_path):
    from leukoflow.deploy.bundle import read_meta

    out = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "-c", NO_TF2ONNX, *bundle_argv(sources, out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (onnx,) = (member["onnx"] for member in read_meta(out)["members"])
    assert not (out / "model.onnx").exists() and onnx["file"] is None
    assert "tf2onnx" in onnx["reason"]
    assert f"No `model.onnx`: {onnx['reason']}" in (out / "README.md").read_text()

    from leukoflow.cli import main

    argv = ["predict", "--model", str(out), "--out", str(tmp_path / "p.csv"), "--engine", "onnx"]
    done = subprocess.run(
        [sys.executable, "-c", CLI, *argv, str(sources / "cells")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert f"has no ONNX model of SimpleNet: {onnx['reason']}" in done.stderr
    assert main(["predict", "--model", str(out), "--out", str(tmp_path / "k.csv"),
                 str(sources / "cells")]) == 0  # fmt: skip


@pytest.fixture(scope="module")
def ensemble_dir(sources):
    """A mean ensemble of two SimpleNets at two input sizes, bundled with its ONNX files."""
    from leukoflow.cli import main

    settings = {
        "SimpleNet": {"architecture": "SimpleNet", "input_size": SIZE, "epochs": 3},
        "Wide": {"architecture": "SimpleNet", "input_size": SIZE + 8, "epochs": 3},
    }
    data = {"dataset": {"source": "synthetic", "synthetic": {"subjects": 4}}, "split": {}}
    out = sources / "Duo"
    argv = [
        "bundle-ensemble", "--name", "Duo",
        "--models", json.dumps(
            {"SimpleNet": str(sources / "model.keras"), "Wide": str(sources / "model40.keras")}
        ),
        "--settings", json.dumps(settings), "--metrics", str(sources / "ensemble.json"),
        "--reference", str(sources / "reference.json"), "--config-hash", "e",
        "--split", str(sources / "split.csv"), "--data", json.dumps(data), "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_an_ensemble_bundle_holds_each_members_onnx_model_and_a_card(ensemble_dir):
    from leukoflow.deploy.bundle import read_meta
    from leukoflow.deploy.modelcard import render_card

    meta = read_meta(ensemble_dir)
    for member in meta["members"]:
        name = member["architecture"]
        assert member["onnx"]["file"] == f"members/{name}.onnx", member["onnx"]["reason"]
        assert (ensemble_dir / "members" / f"{name}.onnx").is_file()
        assert member["onnx"]["max_abs_diff"] <= TOLERANCE
    assert meta["data"]["subsets"]["test"]["images"] == 1
    card = (ensemble_dir / "README.md").read_text()
    assert card == render_card(meta)
    assert "# leukoflow ensemble Duo" in card and "combined by **mean**" in card
    assert "| SimpleNet | 32 | 0.5000 |" in card and "| Wide | 40 | 0.5000 |" in card
    assert "T = **1.5000**" in card and "[0.4500, 0.5500)" in card
    assert "- Wide: `members/Wide.onnx` (opset 17" in card


def test_an_ensemble_gives_the_same_calibrated_predictions_on_both_engines(
    sources, ensemble_dir, tmp_path
):
    onnx_rows = onnx_rows_agreeing_with_keras(sources, ensemble_dir, tmp_path)
    # combining, temperature, threshold and band are the same code on both engines
    p = onnx_rows["calibrated_probability_all"].to_numpy()
    assert onnx_rows["refer"].tolist() == [int(0.45 <= q < 0.55) for q in p]
    assert onnx_rows["label"].tolist() == ["all" if q >= 0.5 else "hem" for q in p]


def test_an_ensemble_with_a_member_without_onnx_runs_on_keras_only(sources, ensemble_dir, tmp_path):
    import shutil

    from leukoflow.cli import main

    copy = tmp_path / "Duo"
    shutil.copytree(ensemble_dir, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    meta["members"][1]["onnx"] = {"file": None, "reason": "tf2onnx could not convert the model"}
    (copy / "bundle.json").write_text(json.dumps(meta))
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(copy), "--out", str(out), str(sources / "cells")]
    assert main([*argv, "--engine", "onnx"]) == 2
    assert main(argv) == 0  # auto: Keras, since not every member has its ONNX file


def test_bench_predict_times_both_engines_in_one_run(sources, tmp_path):
    from leukoflow.bench.predict import bench_architecture, results_table
    from leukoflow.stain.normalize import load_reference

    files = sorted((sources / "cells").glob("*.bmp"))
    reference = load_reference(sources / "reference.json")
    figures = bench_architecture("SimpleNet", SIZE, files, reference, tmp_path, batch_size=4,
                                 workers=1, repeats=1)  # fmt: skip
    for prefix in ("", "onnx_"):
        assert figures[f"{prefix}bare_model_images_per_s"] > 0
        assert figures[f"{prefix}predict_images_per_s"] > 0
        assert figures[f"{prefix}max_abs_diff_vs_bare"] <= 1e-6  # the same function and images
    assert figures["max_abs_diff_onnx_vs_keras"] <= TOLERANCE
    assert figures["onnx_vs_keras_bare"] == pytest.approx(
        figures["onnx_bare_model_images_per_s"] / figures["bare_model_images_per_s"]
    )
    table = results_table([figures]).splitlines()
    assert [line.split()[:2] for line in table[1:]] == [
        ["SimpleNet", "keras"],
        ["SimpleNet", "onnx"],
    ]


def test_an_ensemble_of_model_bundles_reuses_their_checked_onnx_files(
    sources, bundle_dir, tmp_path
):
    import shutil

    from leukoflow.deploy.bundle import read_meta
    from leukoflow.deploy.bundle_write import write_ensemble_bundle

    settings = {
        "SimpleNet": {"architecture": "SimpleNet", "input_size": SIZE},
        "Wide": {"architecture": "SimpleNet", "input_size": SIZE},
    }
    # a model bundle whose export failed, not beside the ensemble's: its files are copied
    without = tmp_path / "elsewhere" / "without_onnx"
    shutil.copytree(bundle_dir, without)
    meta = json.loads((without / "bundle.json").read_text())
    meta["members"][0]["onnx"] = {"file": None, "reason": "tf2onnx could not convert the model"}
    (without / "bundle.json").write_text(json.dumps(meta))
    (without / "model.onnx").unlink()
    out = tmp_path / "Duo"
    combiner = {"method": "mean", "members": ["SimpleNet", "Wide"], "weights": [0.5, 0.5],
                "intercept": 0.0}  # fmt: skip
    metrics = json.loads((sources / "metrics.json").read_text())
    (tmp_path / "ensemble.json").write_text(json.dumps({**metrics, "ensemble": combiner}))
    write_ensemble_bundle(
        "Duo", {"SimpleNet": bundle_dir, "Wide": without}, settings,
        tmp_path / "ensemble.json", sources / "reference.json", "e", out,
    )  # fmt: skip
    simple, wide = read_meta(out)["members"]
    source_onnx = read_meta(bundle_dir)["members"][0]["onnx"]
    assert simple["onnx"] == {**source_onnx, "file": "members/SimpleNet.onnx"}
    assert (out / "members/SimpleNet.onnx").read_bytes() == (bundle_dir / "model.onnx").read_bytes()
    assert (out / "members/Wide.keras").read_bytes() == (without / "model.keras").read_bytes()
    assert wide["onnx"]["file"] is None and not (out / "members/Wide.onnx").exists()
    assert wide["onnx"]["reason"] == "tf2onnx could not convert the model"
