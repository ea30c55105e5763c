"""Saliency: gradients against finite differences, Grad-CAM on a known model, the measures,
the sanity check, the JAX backend (subprocess) and the `saliency` subcommand."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.evaluate import saliency as sal
from leukoflow.evaluate.saliency import maps

SIZE = 32


def cells(n=4, size=SIZE, seed=0):
    """`n` of synth's cells as uint8-valued float32 (n, size, size, 3); labels 1, 0, 1, ..."""
    images, labels, _ = synth.cells(n, size, seed=seed)
    return images.astype("float32"), labels


@pytest.fixture(scope="module")
def model():
    import keras

    from leukoflow.models import build_model

    keras.utils.set_random_seed(0)
    return build_model("SimpleNet", SIZE)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


def logit(model, x):
    p = np.asarray(model(x, training=False), "float64").reshape(-1)
    return np.log(p + sal.EPS) - np.log(1 - p + sal.EPS)


@pytest.mark.slow
def test_input_gradient_matches_finite_differences(model):
    images, labels = cells(2)
    grads = sal.gradient_function(model)(images, maps._signs(labels))
    assert grads.shape == images.shape
    signs = maps._signs(labels)
    # along the gradient of the class score, where float32 finite differences resolve it
    direction = grads * signs[:, None, None, None]
    direction /= np.sqrt((direction**2).sum(axis=(1, 2, 3), keepdims=True))
    step = 1.0
    up, down = logit(model, images + step * direction), logit(model, images - step * direction)
    numeric = (up - down) / (2 * step)
    analytic = (grads * direction).sum(axis=(1, 2, 3)) * signs
    assert np.allclose(analytic, numeric, rtol=0.02)
    assert (analytic > 0).all()


def test_gradcam_finds_the_bright_square():
    """A model whose only feature is channel 0: Grad-CAM must light up where channel 0 is."""
    import keras

    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(1, 1, kernel_initializer="ones", name="features")(
        keras.layers.Lambda(lambda x: x[..., :1] / 255.0)(inputs)
    )
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones")(pooled)
    toy = keras.Model(inputs, outputs)
    image = np.zeros((1, 16, 16, 3), "float32")
    image[0, 2:6, 9:13, 0] = 200
    cam = sal.gradcam(toy, image, np.array([1]), "features")[0]
    assert cam.shape == (16, 16)
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    assert 2 <= peak[0] < 6 and 9 <= peak[1] < 13
    assert cam[10:, :6].max() < 0.05 * cam.max()


def test_maps_and_measures(model):
    images, labels = cells(4)
    maps, measures = sal.measure(model, images, labels, samples=2, steps=4)
    assert set(maps) == set(sal.METHODS)
    for method, m in maps.items():
        assert m.shape == (4, SIZE, SIZE) and np.isfinite(m).all() and (m >= 0).all(), method
        assert m.max() > 0, method
    assert maps["integrated_gradients"][~sal.cell_masks(images)].max() == 0  # black = baseline
    for method, result in measures["methods"].items():
        assert 0 <= result["mass_in_cell"] <= 1
        assert 0 <= result["deletion_auc"] <= 1
        assert len(result["per_cell"]["sanity_spearman"]) == 4
        assert result["sanity_pass"] == (result["sanity_spearman"] < 0.5), method
    assert 0 < measures["cell_area"] < 1
    # the check can fail: a map compared with itself is perfectly rank-correlated
    same = sal.measures_of(maps, maps, images, labels, lambda b: np.full(len(b), 0.5))
    assert all(not r["sanity_pass"] for r in same["methods"].values())
    assert same["methods"]["vanilla"]["sanity_spearman"] == pytest.approx(1.0)


def test_randomised_copy_has_new_weights(model):
    copy = sal.randomised_copy(model, seed=3)
    trained = {v.path: np.asarray(v) for v in model.weights}
    changed = [
        not np.allclose(np.asarray(v), trained[v.path]) for v in copy.weights if "kernel" in v.path
    ]
    assert changed and all(changed)


def test_deletion_and_mass_in_cell():
    images, labels = cells(2)
    masks = sal.cell_masks(images)

    def brightness(batch):  # P(all) = mean brightness: deleting bright pixels lowers it fastest
        return batch.mean(axis=(1, 2, 3)) / 255

    ones = np.ones(2, int)
    by_brightness = sal.deletion_auc(brightness, images, ones, images.sum(axis=-1))
    random_order = sal.deletion_auc(brightness, images, ones, images.sum(axis=-1), seed=0)
    assert (by_brightness < 0.6 * random_order).all()
    stack = sal.deletion_images(images[0], np.arange(SIZE * SIZE), steps=4)
    assert stack.shape == (5, SIZE, SIZE, 3)
    assert [int((s.max(axis=-1) == 0).sum()) >= k * SIZE * SIZE // 4 for k, s in enumerate(stack)]
    assert (stack[-1] == 0).all() and np.array_equal(stack[0], images[0])
    assert np.allclose(sal.mass_in_cell(masks.astype("float32"), masks), 1)
    uniform = np.ones(masks.shape, "float32")
    assert np.allclose(sal.mass_in_cell(uniform, masks), masks.mean(axis=(1, 2)))
    rho = sal.rank_correlation(uniform + images[..., 0], images[..., 0] * 2, masks)
    assert np.allclose(rho, 1)


def test_select_cells_takes_both_classes():
    index = pd.DataFrame({"y": [0] * 10 + [1] * 3})
    rows = sal.select_cells(index, 8, seed=0)
    assert len(rows) == 7 and index["y"].iloc[rows].sum() == 3
    with pytest.raises(LeukoflowError, match="one class"):
        sal.select_cells(pd.DataFrame({"y": [1, 1]}), 2)


JAX_SCRIPT = """
import sys, numpy as np
from leukoflow.models import load_model
from leukoflow.evaluate import saliency as sal
from leukoflow.models.inference import compiled_inference
from leukoflow.core.runtime import backend_name
assert backend_name() == "jax"
model = load_model(sys.argv[1])
data = np.load(sys.argv[2])
maps = sal.saliency_maps(model, data["images"], data["labels"],
                         methods=("vanilla", "integrated_gradients", "gradcam"), steps=4)
np.savez(sys.argv[3], probability=compiled_inference(model)(data["images"]), **maps)
"""


@pytest.mark.slow
@pytest.mark.jax
def test_jax_backend_gives_the_same_maps(model, model_file, tmp_path):
    from leukoflow.models.inference import compiled_inference

    images, labels = cells(2)
    np.savez(tmp_path / "cells.npz", images=images, labels=labels)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            JAX_SCRIPT,
            str(model_file),
            str(tmp_path / "cells.npz"),
            str(tmp_path / "jax.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    jax_out = np.load(tmp_path / "jax.npz")
    ours = sal.saliency_maps(
        model, images, labels, methods=("vanilla", "integrated_gradients", "gradcam"), steps=4
    )
    assert np.allclose(jax_out["probability"], compiled_inference(model)(images), atol=1e-5)
    for method, m in ours.items():
        assert np.allclose(jax_out[method], m, rtol=1e-3, atol=1e-4 * m.max()), method


@pytest.mark.slow
def test_saliency_subcommand(model_file, tmp_path):
    from leukoflow.cli import main

    synth.write_store(tmp_path, 6, SIZE, stem="test")
    config = {
        "cells": 4,
        "smoothgrad_samples": 2,
        "ig_steps": 4,
        "seed": 0,
        "methods": list(sal.METHODS),
    }
    args = ["saliency", "--model", str(model_file), "--test", str(tmp_path / "test.npy")]
    args += [
        "--settings",
        json.dumps({"architecture": "SimpleNet"}),
        "--saliency",
        json.dumps(config),
    ]
    outputs = ["--measures", str(tmp_path / "out" / "saliency.json")]
    outputs += ["--figure", str(tmp_path / "out" / "saliency.png")]
    assert main([*args, *outputs]) == 0
    measures = json.loads((tmp_path / "out" / "saliency.json").read_text())
    assert measures["architecture"] == "SimpleNet" and len(measures["cells"]) == 4
    assert {c["label"] for c in measures["cells"]} == {0, 1}
    assert set(measures["methods"]) == set(sal.METHODS)
    from PIL import Image

    with Image.open(tmp_path / "out" / "saliency.png") as figure:
        assert figure.width > 500 and figure.height > 500
