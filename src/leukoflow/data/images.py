"""Reading cell images: one place that turns a file into an RGB uint8 array or says why not."""

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leukoflow.core.errors import LeukoflowError

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


class BadImageError(LeukoflowError):
    """A file that is not a readable 3-channel RGB image; the message names it and why.

    Attributes:
        path: the file, as text.
        reason: why it cannot be used, without the path (e.g. "empty file").
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_name(path: str | Path) -> bool:
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


def decode_rgb(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode the bytes of an image file to an RGB array.

    Args:
        data: the file's contents.
        path: the name used in error messages.

    Returns:
        uint8 (H, W, 3).

    Raises:
        BadImageError: when `data` is empty, not an image, truncated or corrupt, or not
            3-channel RGB.
    """
    if not data:
        raise BadImageError(path, "empty file")
    with _load_rgb(io.BytesIO(data), path) as image:
        return np.asarray(image, dtype=np.uint8)


def open_rgb(path: str | Path) -> Image.Image:
    """Read an image file as a loaded PIL RGB image.

    Cheaper than `read_rgb` where PIL does the next step (no copy into numpy).

    Args:
        path: the image file.

    Returns:
        The decoded image, mode RGB (the caller closes it).

    Raises:
        BadImageError: naming the file when it cannot be read, is empty, is not an image,
            is truncated or corrupt, or is not 3-channel RGB.
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


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB array.

    Args:
        path: the image file.

    Returns:
        uint8 (H, W, 3).

    Raises:
        BadImageError: as `open_rgb`.
    """
    with open_rgb(path) as image:
        return np.asarray(image, dtype=np.uint8)
