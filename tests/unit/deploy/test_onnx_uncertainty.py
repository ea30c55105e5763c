"""MC dropout and an ensemble's uncertainty in `leukoflow predict`, on both engines: the ONNX
file's features through the head bundle.json records give Keras' `mc_std` for the same seed,
and an ensemble's `member_spread` is the spread of its members' own predictions."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoflow.cli import main
from leukoflow.evaluate.calibration import logit, sigmoid

SIZE = 32


def predicted(bundle, cells, out, engine, *options):
    """`leukoflow predict`'s CSV of the cells with the bundle on `engine`."""
    argv = ["predict", "--model", str(bundle), "--out", str(out), "--engine", engine]
    assert main([*argv, *options, str(cells)]) == 0
    return pd.read_csv(out)


@pytest.fixture(scope="module")
def dropout_bundle(tmp_path_factory):
    """A SimpleNet (32 px, dropout 0.5) bundled with its ONNX file, evaluated with 6 MC
    passes, and five synthetic cells: (bundle, cells folder)."""
    import keras

    from leukoflow.data import synth
    from leukoflow.deploy.bundle_write import write_bundle
    from leukoflow.models import build_model
    from leukoflow.stain.normalize import fit_reference, save_reference

    root = tmp_path_factory.mktemp("dropout_bundle")
    cells, _, _ = synth.cells(5, 64, seed=1, subjects=1)
    (root / "cells").mkdir()
    for i, cell in enumerate(cells):
        Image.fromarray(cell).save(root / "cells" / f"cell{i}.bmp")
    save_reference(fit_reference(cells, "macenko"), root / "reference.json")
    keras.utils.set_random_seed(0)
    model = build_model("SimpleNet", SIZE, weights="none", dropout=0.5)
    model.save(root / "model.keras")
    (root / "metrics.json").write_text(
        json.dumps({"threshold": 0.5, "test": {"f1": 0.5}, "mc_dropout": 6})
    )
    settings = {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"}
    write_bundle(root / "model.keras", root / "metrics.json", root / "reference.json",
                 settings, "h", root / "bundle")  # fmt: skip
    return root / "bundle", root / "cells"


def test_the_onnx_engine_gives_keras_mc_std_for_the_same_seed(dropout_bundle, tmp_path):
    from leukoflow.deploy.bundle import read_meta

    bundle, cells = dropout_bundle
    (entry,) = read_meta(bundle)["members"]
    assert entry["onnx"]["head"]["rate"] == 0.5 and entry["onnx"]["head"]["activation"] == "sigmoid"
    rows = {
        engine: predicted(bundle, cells, tmp_path / f"{engine}.csv", engine, "--batch-size", "2")
        for engine in ("keras", "onnx")
    }
    keras_std, onnx_std = (rows[e]["mc_std"].to_numpy() for e in ("keras", "onnx"))
    assert np.all(keras_std > 1e-4)  # dropout 0.5 moves P(all)
    np.testing.assert_allclose(onnx_std, keras_std, atol=1e-5)  # the same masks


def test_an_ensembles_member_spread_is_the_spread_of_its_members(models_tree, tmp_path):
    """The Duo ensemble (members A and B, dropout 0) evaluated with MC dropout: member_spread
    is the std of A's and B's own (uncalibrated) predictions; mc_std is 0 on both engines; a
    bundle whose ONNX entry predates the head record still runs on ONNX, without mc_std."""
    root = tmp_path / "tree"
    shutil.copytree(models_tree["root"], root)  # the members' files stay beside the ensemble
    models, cells = root / "results" / "models", root / "cells"
    for name in ("Duo", "B"):
        meta = json.loads((models / name / "bundle.json").read_text())
        meta["evaluation"]["mc_dropout"] = 3
        (models / name / "bundle.json").write_text(json.dumps(meta))
    duo = {
        e: predicted(models / "Duo", cells, tmp_path / f"duo_{e}.csv", e) for e in ("onnx", "keras")
    }
    assert list(duo["onnx"].columns[-2:]) == ["mc_std", "member_spread"]
    own = []
    for name in ("A", "B"):
        meta = json.loads((models / name / "bundle.json").read_text())
        calibrated = predicted(models / name, cells, tmp_path / f"{name}.csv", "onnx")
        p = calibrated["calibrated_probability_all"].to_numpy()
        own.append(sigmoid(logit(p) * meta["temperature"]))  # the member's P(all)
    np.testing.assert_allclose(duo["onnx"]["member_spread"], np.std(own, axis=0), atol=1e-6)
    np.testing.assert_allclose(duo["keras"]["member_spread"], duo["onnx"]["member_spread"],
                               atol=1e-4)  # fmt: skip
    for engine in ("onnx", "keras"):
        assert duo[engine]["mc_std"].eq(0).all()  # dropout 0
        assert predicted(models / "B", cells, tmp_path / "b.csv", engine)["mc_std"].eq(0).all()
    meta = json.loads((models / "B" / "bundle.json").read_text())
    del meta["members"][0]["onnx"]["head"]  # as a bundle made before the head record
    (models / "B" / "bundle.json").write_text(json.dumps(meta))
    assert "mc_std" not in predicted(models / "B", cells, tmp_path / "old.csv", "onnx")
    assert "mc_std" in predicted(models / "B", cells, tmp_path / "old_keras.csv", "keras")
