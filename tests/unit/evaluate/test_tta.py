"""Test-time augmentation: the 8 dihedral views, a rotation-invariant model unchanged by
them, the mean a non-invariant one gets, the bundle that records the mode and `predict`
that applies it, and the timing step that measures its cost."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoflow.core.errors import LeukoflowError
from leukoflow.models import inference


def asymmetric_batch(n=3, size=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_dihedral_views_are_the_8_symmetries_of_the_square():
    batch = asymmetric_batch()
    views = [view(batch) for view in inference.tta_views("dihedral")]
    assert len(views) == 8 and np.array_equal(views[0], batch)
    assert len({v.tobytes() for v in views}) == 8  # all distinct on an asymmetric image
    for v in views:  # each a rearrangement of the same pixels
        assert np.array_equal(np.sort(v, axis=None), np.sort(batch, axis=None))
    assert [v(batch) is batch for v in inference.tta_views("none")] == [True]
    assert len(inference.tta_views(4)) == 4 and len(inference.tta_views("4")) == 4
    with pytest.raises(LeukoflowError, match="allowed: none, dihedral"):
        inference.tta_views("d8")


def test_dihedral_tta_is_the_mean_over_the_views():
    """A 'model' that reads the top-left pixel: over the 8 views each corner comes twice."""
    batch = asymmetric_batch(n=5)

    def top_left(x):
        return x[:, 0, 0, 0] / 255.0

    got = inference.predict_store(top_left, batch, batch_size=2, tta="dihedral")
    corners = batch[:, [0, 0, -1, -1], [0, -1, 0, -1], 0].mean(axis=1) / 255.0
    np.testing.assert_allclose(got, corners, atol=1e-6)


def test_tta_of_a_rotation_invariant_model_changes_nothing():
    """Global average pooling then a dense layer: invariant under every dihedral view."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 1, activation="relu")(inputs)  # 1x1: commutes with the views
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    fn = inference.compiled_inference(model)
    images = asymmetric_batch(n=6, size=16).astype("uint8")
    once = inference.predict_store(fn, images, batch_size=4, tta="none")
    eight = inference.predict_store(fn, images, batch_size=4, tta="dihedral")
    np.testing.assert_allclose(eight, once, atol=1e-6)
    assert once.std() > 0  # the model is not constant


@pytest.mark.slow
def test_the_bundle_records_the_mode_and_predict_applies_it(tmp_path):
    from leukoflow.cli import main
    from leukoflow.data import synth
    from leukoflow.data.images import read_rgb
    from leukoflow.deploy.bundle import load_bundle
    from leukoflow.deploy.bundle_write import write_bundle
    from leukoflow.evaluate.timing import measure_compiled
    from leukoflow.models import build_model
    from leukoflow.stain.normalize import fit_reference, save_reference
    from leukoflow.stain.stores import prepare_image

    cells, _, _ = synth.cells(3, 48, seed=0, subjects=1)
    files = []
    for i, cell in enumerate(cells):
        cell[4:14, 4:10] = (230, 40, 40)  # an asymmetric mark: the views differ
        files.append(tmp_path / f"cell{i}.bmp")
        Image.fromarray(cell).save(files[-1])
    save_reference(fit_reference(cells, "macenko"), tmp_path / "reference.json")
    build_model("SimpleNet", 32, weights="none", dropout=0.0).save(tmp_path / "model.keras")
    metrics = {"threshold": 0.5, "test": {"f1": 0.5}, "tta": "dihedral", "mc_dropout": 3}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    settings = {"architecture": "SimpleNet", "input_size": 32, "jit_compile": "off"}
    write_bundle(tmp_path / "model.keras", tmp_path / "metrics.json",
                 tmp_path / "reference.json", settings, "h", tmp_path / "bundle")  # fmt: skip
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.tta == "dihedral"
    images = np.stack([prepare_image(read_rgb(f), bundle.reference, 32) for f in files])
    fn = inference.compiled_inference(bundle.model)
    expected = {t: inference.predict_store(fn, images, 32, t) for t in ("none", "dihedral")}
    assert np.abs(expected["none"] - expected["dihedral"]).max() > 1e-4
    for options, mode in (((), "dihedral"), (("--tta", "none"), "none")):
        out = tmp_path / f"{mode}.csv"
        argv = ["predict", "--model", str(tmp_path / "bundle"), "--out", str(out)]
        assert main([*argv, "--engine", "keras", *options, *map(str, files)]) == 0
        got = pd.read_csv(out)
        np.testing.assert_allclose(got["calibrated_probability_all"], expected[mode], atol=1e-5)
        assert got["mc_std"].eq(0).all()  # the model's dropout rate is 0
    views = inference.predict_views(fn, images, 32, "dihedral")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "dihedral.csv")["tta_spread"],
                               views.std(axis=0), atol=1e-6)  # fmt: skip
    assert "tta_spread" not in pd.read_csv(tmp_path / "none.csv")
    record = measure_compiled(bundle.model, warmup=1, calls=3, batch_size=4, tta="dihedral")
    assert record["tta"]["views"] == 8 and record["tta"]["throughput_images_per_s"] > 0
    assert measure_compiled(bundle.model, warmup=1, calls=3, batch_size=4)["tta"] is None
