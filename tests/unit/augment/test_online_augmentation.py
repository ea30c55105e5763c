"""Online augmentation layers on the TensorFlow and JAX backends.

Each backend runs `check_online` once: in this process when it is the backend Keras has
loaded here, otherwise in a subprocess with `KERAS_BACKEND` set.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SIZE = 48


def disc_cells(n, size, seed=0):
    """Purpose-built geometry, float32 (n, size, size, 3) in [0, 255]: textured discs
    (radius 0.3 x size) on black, centred in the frame, colours in [40, 215], so what a
    rotation must keep black (beyond 0.35 x size) is known."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    disc = np.hypot(yy - size / 2, xx - size / 2) < 0.3 * size
    colours = rng.uniform(40, 215, (n, size, size, 3)).round()
    return (colours * disc[None, :, :, None]).astype(np.float32)


def check_online(folder):
    """Run every check of the online layers on the loaded backend; return a summary dict."""
    import keras

    from leukoflow.models.augmentation import build_online_augmentation

    x = disc_cells(8, SIZE)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    outside = np.hypot(yy - SIZE / 2, xx - SIZE / 2) > 0.35 * SIZE
    black_in = (x.max(-1) == 0).mean()

    full = build_online_augmentation(True, True, 4.0, seed=3)
    assert np.array_equal(keras.ops.convert_to_numpy(full(x, training=False)), x)
    y = keras.ops.convert_to_numpy(full(x, training=True))
    assert y.shape == x.shape and not np.array_equal(y, x)
    assert y.min() >= 0 and y.max() <= 255

    geometric = build_online_augmentation(True, True, 0.0, seed=4)
    assert np.array_equal(keras.ops.convert_to_numpy(geometric(x, training=False)), x)
    turned = keras.ops.convert_to_numpy(geometric(x, training=True))
    assert not np.array_equal(turned, x)
    assert np.abs(turned[:, outside]).max() < 1.0  # far from the cell: still black
    black_out = (turned.max(-1) < 1.0).mean()
    assert black_out >= 0.95 * black_in
    again = keras.ops.convert_to_numpy(
        build_online_augmentation(True, True, 0.0, seed=4)(x, training=True)
    )
    assert np.array_equal(again, turned)  # same seed, same draws

    noisy = build_online_augmentation(False, False, 8.0, seed=5)
    assert np.array_equal(keras.ops.convert_to_numpy(noisy(x, training=False)), x)
    diff = keras.ops.convert_to_numpy(noisy(x, training=True)) - x
    unclipped = (x > 40) & (x < 215)
    assert abs(diff[unclipped].mean()) < 0.5
    assert abs(diff[unclipped].std() - 8.0) < 0.4

    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(full(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(features))
    model.compile(optimizer="sgd", loss="binary_crossentropy")  # compiled step (XLA on JAX)
    history = model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    path = Path(folder) / f"online_{keras.backend.backend()}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    block = loaded.get_layer("online_augmentation")
    names = [layer.__class__.__name__ for layer in block.layers]
    assert names[:2] == ["RandomRotation", "RandomFlip"] and "GaussianNoise" in names
    assert not np.array_equal(keras.ops.convert_to_numpy(block(x, training=True)), x)
    return {"backend": keras.backend.backend(), "black_in": black_in, "black_out": black_out}


def test_nothing_enabled_gives_none():
    from leukoflow.models.augmentation import build_online_augmentation

    assert build_online_augmentation(False, False, 0.0, seed=0) is None


def test_noise_out_of_range_is_a_config_error():
    from leukoflow.core.errors import ConfigError
    from leukoflow.models.augmentation import build_online_augmentation

    with pytest.raises(ConfigError, match="noise_std"):
        build_online_augmentation(True, True, -1.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("tensorflow"), pytest.param("jax", marks=pytest.mark.jax)]
)
def test_online_layers_on_backend(backend, tmp_path):
    """Identity at inference, random in training, black background kept, saves and loads."""
    import keras

    if keras.backend.backend() == backend:
        summary = check_online(tmp_path)
    else:
        code = (
            f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from test_online_augmentation import check_online; "
            f"print(json.dumps(check_online({str(tmp_path)!r})))"
        )
        env = os.environ | {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["backend"] == backend
