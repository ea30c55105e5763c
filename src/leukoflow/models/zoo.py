"""Backbones from `keras.applications`, each with its own preprocessing in front.

A builder takes the float32 image tensor in [0, 255], shape `(None, size, size, 3)`, adds
the architecture's preprocessing as serialisable layers and returns the application built
on that tensor (`include_top=False`), so its layers join the caller's functional graph
directly (no nested model) and `builder(images).output` is the last feature map.

`weights` is passed to the application: None (random) or "imagenet" (only
`leukoflow fetch-weights` asks for it; Keras downloads the file).
"""

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="leukoflow")
class CaffePreprocess(layers.Layer):
    """RGB [0, 255] -> BGR minus the ImageNet channel means (`preprocess_input`, mode "caffe")."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        """Flip the channels and subtract the means."""
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The input's shape."""
        return input_shape


def _to_unit_range(images):
    """[0, 255] -> [-1, 1] (`preprocess_input`, mode "tf"), computed in float32."""
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess", dtype="float32")(images)


def xception(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """Xception; needs inputs of at least 71 pixels."""
    x = _to_unit_range(images)
    return keras.applications.Xception(include_top=False, weights=weights, input_tensor=x)


def vgg16(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """VGG16 with Caffe-style preprocessing (BGR, mean subtracted)."""
    x = CaffePreprocess(name="preprocess", dtype="float32")(images)
    return keras.applications.VGG16(include_top=False, weights=weights, input_tensor=x)


def resnet152v2(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """ResNet152V2 (pre-activation); the last feature map is `post_relu`."""
    x = _to_unit_range(images)
    return keras.applications.ResNet152V2(include_top=False, weights=weights, input_tensor=x)


def efficientnetb5(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """EfficientNetB5; takes [0, 255] and rescales/normalises inside (its own layers)."""
    return keras.applications.EfficientNetB5(
        include_top=False, weights=weights, input_tensor=images
    )


def efficientnetv2m(images: keras.KerasTensor, weights: str | None = None) -> keras.Model:
    """EfficientNetV2M with its own preprocessing layers (`include_preprocessing=True`)."""
    return keras.applications.EfficientNetV2M(
        include_top=False, weights=weights, input_tensor=images, include_preprocessing=True
    )
