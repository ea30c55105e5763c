"""The architecture registry: one entry per architecture.

Importing this module does not import Keras: the Snakefile reads names and native input
sizes from it while planning. `builder` is the dotted path of the function that builds the
backbone; `leukoflow.models.build_model` imports it when a model is built.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """What the workflow needs to know about one architecture."""

    name: str
    native_size: int  # input size of the original network, pixels
    pretrained: bool  # ImageNet weights exist for it
    builder: str  # "module:function" building (inputs -> feature map) for this architecture
    min_size: int = 32  # smallest input size the network accepts, pixels


ARCHITECTURES = {
    spec.name: spec
    for spec in [
        ArchSpec("Xception", 299, True, "leukoflow.models.zoo:xception", min_size=71),
        ArchSpec("VGG16", 224, True, "leukoflow.models.zoo:vgg16"),
        ArchSpec("ResNet152V2", 224, True, "leukoflow.models.zoo:resnet152v2"),
        ArchSpec("EfficientNetB5", 456, True, "leukoflow.models.zoo:efficientnetb5"),
        ArchSpec("EfficientNetV2M", 480, True, "leukoflow.models.zoo:efficientnetv2m"),
        ArchSpec("SimpleNet", 128, False, "leukoflow.models.simplenet:simplenet"),
    ]
}


def get_spec(name: str) -> ArchSpec:
    """The spec of architecture `name`.

    Raises:
        ConfigError: listing the known names when `name` is not one.
    """
    from leukoflow.core.errors import ConfigError

    if name not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {name!r}; known architectures: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]
