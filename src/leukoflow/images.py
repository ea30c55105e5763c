"""Reading cell images: one place that turns a file into an RGB uint8 array or says why not."""

import io
import os
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


def _load_rgb(source, path):
    """Open and decode `source` (a path or a binary file object) as a loaded PIL RGB image.

    Only true RGB images are accepted (mode RGB; 8-bit palette or grey images are not cell
    images of this dataset and are reported, not silently converted).
    """
    try:
        image = Image.open(source)
        try:
            image.load()
        except BaseException:
            image.close()
            raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, f"truncated or corrupt image ({error})") from None
    if image.mode != "RGB":
        image.close()
        raise BadImageError(path, f"image mode is {image.mode}, expected 3-channel RGB")
    return image


def decode_rgb(data, path="<bytes>"):
    """Decode image bytes to a uint8 array (H, W, 3); BadImageError if that is not possible."""
    if not data:
        raise BadImageError(path, "empty file")
    with _load_rgb(io.BytesIO(data), path) as image:
        return np.asarray(image, dtype=np.uint8)


def open_rgb(path):
    """Read an image file as a loaded PIL RGB image; BadImageError names the file and why not.

    Cheaper than `read_rgb` where PIL does the next step (no copy into numpy).
    """
    try:
        handle = open(path, "rb")  # closed below, once the image is loaded
        empty = os.fstat(handle.fileno()).st_size == 0
    except OSError as error:
        raise BadImageError(path, f"cannot read file ({error.strerror})") from None
    with handle:
        if empty:
            raise BadImageError(path, "empty file")
        return _load_rgb(handle, path)


def read_rgb(path):
    """Read an image file as a uint8 array (H, W, 3); BadImageError names the file and why not."""
    with open_rgb(path) as image:
        return np.asarray(image, dtype=np.uint8)
