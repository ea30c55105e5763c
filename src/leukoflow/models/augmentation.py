"""Online (in-model) augmentation: built-in Keras 3 layers placed in front of the network.

They run where the model runs (on the accelerator), only in training (`training=True`), and
are the identity at inference. Built-in layers only, so a saved `.keras` model needs no
custom objects and the same code runs on the TensorFlow and JAX backends.
"""

import keras

from leukoflow.core.errors import ConfigError

NOISE_SCALE = 256.0  # GaussianNoise takes stddev <= 1: add it on images / 256 (exact, 2**8)


def _seed(seed, offset):
    """A distinct seed for each layer from one base seed (None stays None: unseeded)."""
    return None if seed is None else int(seed) + offset


def build_online_augmentation(
    rotation: bool, flip: bool, noise_std: float, seed: int | None = None
) -> keras.Sequential | None:
    """The online augmentation block, or None when every transformation is off.

    Input and output: float images (batch, H, W, 3) in [0, 255].

    Args:
        rotation: full-circle `RandomRotation` (angle uniform in [-180, 180) degrees,
            bilinear, constant fill 0, so the background stays black).
        flip: `RandomFlip` horizontal and vertical.
        noise_std: Gaussian noise std in grey levels (0 = off, at most 255; applied to the
            whole image): `Rescaling(1/256)`, `GaussianNoise(noise_std/256)`,
            `Rescaling(256)` (scaling by a power of two is exact, so inference returns the
            input bit for bit), then clipping to [0, 255] (`ReLU(max_value=255)`, the
            identity on valid images).
        seed: base seed of the layers' random generators (None: unseeded).

    Returns:
        A `keras.Sequential` of the layers switched on, or None.

    Raises:
        ConfigError: for `noise_std` outside [0, 255].
    """
    if not 0 <= noise_std <= 255:
        raise ConfigError(f"online_augmentation.noise_std: {noise_std} must be in [0, 255]")
    layers = []
    if rotation:
        layers.append(
            keras.layers.RandomRotation(
                factor=(-0.5, 0.5),
                fill_mode="constant",
                fill_value=0.0,
                interpolation="bilinear",
                seed=_seed(seed, 0),
                name="random_rotation",
            )
        )
    if flip:
        layers.append(
            keras.layers.RandomFlip(
                "horizontal_and_vertical", seed=_seed(seed, 1), name="random_flip"
            )
        )
    if noise_std > 0:
        layers += [
            keras.layers.Rescaling(1.0 / NOISE_SCALE, name="noise_scale_down"),
            keras.layers.GaussianNoise(
                float(noise_std) / NOISE_SCALE, seed=_seed(seed, 2), name="gaussian_noise"
            ),
            keras.layers.Rescaling(NOISE_SCALE, name="noise_scale_up"),
            keras.layers.ReLU(max_value=255.0, name="clip_0_255"),
        ]
    if not layers:
        return None
    return keras.Sequential(layers, name="online_augmentation")
