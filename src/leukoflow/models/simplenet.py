"""SimpleNet: the paper's small network trained from scratch, "a plain sequence of a few layers".

What we chose (the paper gives no details): inputs rescaled from [0, 255] to [0, 1], then
four blocks of 3x3 convolution (32, 64, 128, 256 filters, "same" padding, no bias) +
batch normalisation (momentum 0.9, so its moving statistics settle within the few hundred
steps of a short run) + ReLU; the first three blocks end with 2x2 max pooling, the fourth
(`block4_relu`) is the last feature map, at 1/8 of the input size. The classifier head
(global average pooling, dropout, one sigmoid unit) is added by `build_model`, as for
every architecture. About 390k parameters.
"""

import keras
from keras import layers

FILTERS = (32, 64, 128, 256)


def simplenet(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """The SimpleNet feature extractor on `images`.

    Args:
        images: float32 `(None, s, s, 3)` in [0, 255], a symbolic tensor.
        weights: must be None: there are no pretrained weights.

    Returns:
        A functional model from the source inputs of `images` to the last feature map
        `(None, s/8, s/8, 256)`.

    Raises:
        ValueError: when `weights` is not None.
    """
    if weights is not None:
        raise ValueError(f"SimpleNet has no pretrained weights (asked for {weights!r})")
    x = layers.Rescaling(1.0 / 255.0, name="preprocess", dtype="float32")(images)
    for block, filters in enumerate(FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        if block < len(FILTERS):
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(keras.utils.get_source_inputs(images), x, name="simplenet")
