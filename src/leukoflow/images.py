"""Reading cell images: one place that turns a file into an RGB uint8 array or says why not."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leukoflow.errors import LeukoflowError

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


class BadImageError(LeukoflowError):
    """A file that is not a readable 3-channel RGB image; the message names it and why."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_name(path):
    """True when the file name has one of the image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_rgb(data, path="<bytes>"):
    """Decode image bytes to a uint8 array (H, W, 3); BadImageError if that is not possible.

    Only true RGB images are accepted (mode RGB; 8-bit palette or grey images are not cell
    images of this dataset and are reported, not silently converted).
    """
    if not data:
        raise BadImageError(path, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            image.load()
            if mode != "RGB":
                raise BadImageError(path, f"image mode is {mode}, expected 3-channel RGB")
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"truncated or corrupt image ({error})") from None


def read_rgb(path):
    """Read an image file as a uint8 array (H, W, 3); BadImageError names the file and why not."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BadImageError(path, f"cannot read file ({error.strerror})") from None
    return decode_rgb(data, path)
