"""Model registry, building, preprocessing, weights files and saving (leukoflow.models)."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.models.registry import ARCHITECTURES

SMALL_SIZE = {name: 72 if name == "Xception" else 32 for name in ARCHITECTURES}
PREPROCESS_MODULE = {"Xception": "xception", "VGG16": "vgg16", "ResNet152V2": "resnet_v2"}


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("uint8")


def test_registry_and_models_package_import_without_keras():
    code = (
        "import sys, leukoflow.models, leukoflow.models.registry, leukoflow.core.settings;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_lists_the_six_architectures_with_their_native_sizes():
    sizes = {name: spec.native_size for name, spec in ARCHITECTURES.items()}
    assert sizes == {
        "Xception": 299,
        "VGG16": 224,
        "ResNet152V2": 224,
        "EfficientNetB5": 456,
        "EfficientNetV2M": 480,
        "SimpleNet": 128,
    }
    assert [n for n, s in ARCHITECTURES.items() if not s.pretrained] == ["SimpleNet"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_flat_and_trains_one_step(arch):
    import keras

    from leukoflow.models import build_model, last_conv_layer_name
    from leukoflow.train.schedule import compile_model

    size = SMALL_SIZE[arch]
    keras.utils.set_random_seed(0)
    model = build_model(arch, size, dropout=0.2)
    assert model.input.shape == (None, size, size, 3) and model.input.dtype == "float32"
    assert model.output.shape == (None, 1)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    feature = model.get_layer(last_conv_layer_name(model))
    assert len(feature.output.shape) == 4 and feature.output.shape[-1] >= 256
    assert model.get_layer("probability").dtype_policy.compute_dtype == "float32"
    if arch in PREPROCESS_MODULE:  # keras.applications' preprocess_input, inside the model
        x = _images(2, size).astype("float32")
        module = importlib.import_module(f"keras.applications.{PREPROCESS_MODULE[arch]}")
        preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
        expected = module.preprocess_input(x.copy())
        np.testing.assert_allclose(preprocess.predict_on_batch(x), expected, atol=1e-4)

    compile_model(model, 1e-3, decay_steps=10, weight_decay=1e-4, jit_compile=False)
    model.run_eagerly = True  # one step: tracing the graph would cost up to 100 s
    before = [np.array(w) for w in model.trainable_weights]
    logs = model.train_on_batch(_images(2, size), np.array([0.0, 1.0]), return_dict=True)
    assert np.isfinite(logs["loss"])
    changed = [not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights)]
    assert changed[-2:] == [True, True]  # the head
    assert np.mean(changed) > 0.8  # EfficientNets' stochastic depth skips whole blocks
    p = model.predict_on_batch(_images(2, size, seed=1))
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))


def test_whole_model_weights_file_round_trip(tmp_path):
    import keras

    from leukoflow.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("SimpleNet", 32)
    path = tmp_path / "simplenet.weights.h5"
    model.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_model("SimpleNet", 32, weights=str(path))
    x = _images(4, 32).astype("float32")
    np.testing.assert_array_equal(model.predict_on_batch(x), loaded.predict_on_batch(x))


def test_fetched_backbone_weights_file_loads_into_the_backbone(tmp_path):
    """A file as `fetch-weights` writes it (backbone only, named .h5) fills the backbone."""
    import keras

    from leukoflow.core.atomic import atomic_path
    from leukoflow.models import _builder, build_model, last_conv_layer_name

    backbone = _builder("VGG16")(keras.Input((48, 48, 3)))
    out = tmp_path / "VGG16.imagenet.notop.h5"
    with atomic_path(out, suffix=".weights.h5") as tmp:
        backbone.save_weights(tmp)
    model = build_model("VGG16", 48, weights="imagenet", weights_file=str(out))
    features = keras.Model(model.input, model.get_layer(last_conv_layer_name(model)).output)
    source = keras.Model(backbone.input, backbone.output)
    x = _images(2, 48).astype("float32")
    np.testing.assert_array_equal(features.predict_on_batch(x), source.predict_on_batch(x))
    smaller = build_model("VGG16", 32, weights="imagenet", weights_file=str(out))
    np.testing.assert_array_equal(
        smaller.get_layer("block1_conv1").get_weights()[0],
        backbone.get_layer("block1_conv1").get_weights()[0],
    )


def test_missing_or_wrong_weights_files_give_clear_errors(tmp_path):
    import keras

    from leukoflow.models import _builder, build_model

    with pytest.raises(LeukoflowError, match="fetch_weights"):
        build_model("VGG16", 32, weights="imagenet", weights_file=str(tmp_path / "absent.h5"))
    with pytest.raises(LeukoflowError, match="fetch_weights"):
        build_model("VGG16", 32, weights="imagenet", weights_file=None)
    with pytest.raises(LeukoflowError, match="no ImageNet weights"):
        build_model("SimpleNet", 32, weights="imagenet", weights_file="x.h5")
    with pytest.raises(LeukoflowError, match="does not exist"):
        build_model("SimpleNet", 32, weights=str(tmp_path / "nope.weights.h5"))
    other = tmp_path / "simplenet_backbone.weights.h5"
    _builder("SimpleNet")(keras.Input((32, 32, 3))).save_weights(other)
    with pytest.raises(LeukoflowError, match="does not fit VGG16"):
        build_model("VGG16", 32, weights=str(other))


def test_saved_model_loads_with_safe_mode_and_gives_the_same_outputs(tmp_path):
    from leukoflow.models import build_model, last_conv_layer_name, load_model

    model = build_model("VGG16", 32)  # has the custom CaffePreprocess layer
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    x = _images(3, 32).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(x), loaded.predict_on_batch(x), rtol=1e-6)
    assert last_conv_layer_name(loaded) == "block5_pool"
    with pytest.raises(LeukoflowError, match="does not exist"):
        load_model(tmp_path / "absent.keras")


def test_fetch_weights_refuses_an_architecture_without_imagenet_weights(tmp_path):
    from leukoflow.cli import main

    assert main(["fetch-weights", "--arch", "SimpleNet", "--out", str(tmp_path / "w.h5")]) == 2
    assert main(["fetch-weights", "--arch", "NoSuchNet", "--out", str(tmp_path / "w.h5")]) == 2


JAX_STEP = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    from leukoflow.models import build_model
    from leukoflow.train.schedule import compile_model
    arch, size = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(0)
    model = build_model(arch, size)
    compile_model(model, 1e-3, decay_steps=10, weight_decay=1e-4, jit_compile=True)
    x = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("uint8")
    logs = model.train_on_batch(x, np.array([0.0, 1.0]), return_dict=True)
    print(json.dumps({"backend": keras.backend.backend(), "loss": float(logs["loss"])}))
    """
)


@pytest.mark.slow
@pytest.mark.jax
@pytest.mark.parametrize("arch", ["SimpleNet", "EfficientNetB5"])
def test_one_training_step_on_jax(arch):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", JAX_STEP, arch, "32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and np.isfinite(result["loss"])
