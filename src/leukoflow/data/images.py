"""Reading cell images: one place that turns a file into an RGB uint8 array or says why not.

Every image the package reads goes through `read_image_file` (the bytes, read once and
checked) and `decode_rgb` (or `open_rgb` / `read_rgb`, which do both), so every caller gets
the same checks, each failure a `BadImageError` with its reason: a missing file, a dangling
or looping symbolic link, something that is not a regular file (a folder, a FIFO), an
unreadable, empty or oversized file, a file that changed while it was read, a file PIL
cannot identify or decode, a decompression bomb or an image of an absurd size, and an
image that is not 3-channel RGB.
"""

import errno
import io
import os
import stat
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from leukoflow.core.errors import LeukoflowError

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000  # the schema's ingest.max_pixels and predict's --max-pixels
MIN_SIDE = 8  # pixels: a smaller side is no cell image (nor can the stores frame it)
BYTES_PER_PIXEL = 8  # the most an uncompressed image of one of our formats stores per pixel

_PIL_LIMIT = threading.Lock()  # guards the moment PIL's global pixel limit is lifted


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


def max_file_bytes(max_pixels: int) -> int:
    """The largest file an image of at most `max_pixels` pixels can be (headers included)."""
    return BYTES_PER_PIXEL * max_pixels + 2**20


def _open_problem(path: Path, error: OSError) -> str:
    """Why `path` could not be opened, naming a symbolic link's target."""
    target = os.readlink(path) if path.is_symlink() else None
    if error.errno == errno.ELOOP:
        return f"looping symbolic link (to {target or 'a folder of its path'}, which leads back)"
    if error.errno == errno.ENOENT and target is not None:
        return f"missing: dangling symbolic link to {target}"
    return f"cannot read file ({error.strerror})"


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Read the bytes of an image file once, checking that they are a whole, stable file.

    Symbolic links are followed. The file's size and modification time before the read,
    the number of bytes read, the size and time after it, and the file the path names
    after it must all agree: else the file changed while it was read.

    Args:
        path: the image file.
        max_pixels: the largest image allowed; a file larger than any image of that many
            pixels can be (`max_file_bytes`) is not read.

    Returns:
        The file's contents.

    Raises:
        BadImageError: naming the file when it is missing, a dangling or looping symbolic
            link, not a regular file, unreadable, empty, too large, or changed while read.
    """
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO does not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise BadImageError(path, _open_problem(path, error)) from None
    limit = max_file_bytes(max_pixels)
    before = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(before.st_mode):
        problem = f"not a regular file: {_kind(before.st_mode)}"
    elif before.st_size > limit:
        problem = (
            f"file of {before.st_size:,} bytes is larger than any image of at most "
            f"{max_pixels:,} pixels (max_pixels) can be"
        )
    if problem:
        os.close(fd)
        raise BadImageError(path, problem)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(before.st_size + 1)  # a byte more than stat said: grown?
        except OSError as error:
            raise BadImageError(path, f"cannot read file ({error.strerror})") from None
        after = os.fstat(handle.fileno())
    try:
        named = os.stat(path)
    except OSError:
        named = None
    stamp = (before.st_size, before.st_mtime_ns)
    if (
        len(data) != before.st_size
        or (after.st_size, after.st_mtime_ns) != stamp
        or named is None
        or (named.st_dev, named.st_ino) != (before.st_dev, before.st_ino)
    ):
        raise BadImageError(
            path,
            f"changed while read ({before.st_size:,} bytes when opened, {len(data):,} read, "
            f"{after.st_size:,} after; the file was being written or replaced): "
            "read it again once it is complete",
        )
    if not data:
        raise BadImageError(path, "empty file")
    return data


def _check_size(size, path, max_pixels):
    """Reject an image whose header declares too many pixels or too short a side."""
    width, height = size
    if width * height > max_pixels:
        raise BadImageError(
            path,
            f"image is {width:,} x {height:,} px ({width * height / 1e6:,.0f} megapixels), "
            f"more than max_pixels {max_pixels:,}: a decompression bomb, or no cell image "
            "(raise ingest.max_pixels or --max-pixels if it is real)",
        )
    if min(width, height) < MIN_SIDE:
        raise BadImageError(
            path,
            f"image is {width} x {height} px, an absurd size for a cell image "
            f"(at least {MIN_SIDE} px a side)",
        )


def _load_rgb(source, path, max_pixels):
    """Open and decode `source` (a binary file object) as a loaded PIL RGB image.

    The header is read with PIL's own global pixel limit lifted (under a lock, so threads
    that read images at the same time agree), then this call's `max_pixels` is checked
    before any pixel is decoded. Only true RGB images are accepted (mode RGB; 8-bit
    palette or grey images are not cell images of this dataset and are reported, not
    silently converted).
    """
    try:
        with _PIL_LIMIT:
            pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit
        try:
            _check_size(image.size, path, max_pixels)
            if image.mode != "RGB":
                raise BadImageError(path, f"image mode is {image.mode}, expected 3-channel RGB")
            image.load()
        except BaseException:
            image.close()
            raise
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(path, f"decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImageError(path, f"truncated or corrupt image ({error})") from None
    except Exception as error:  # a hostile file can make a decoder fail in any other way
        raise BadImageError(path, f"corrupt image ({type(error).__name__}: {error})") from None
    return image


def decode_rgb(
    data: bytes, path: str | Path = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode the bytes of an image file to an RGB array.

    Args:
        data: the file's contents.
        path: the name used in error messages.
        max_pixels: the largest image (width x height) allowed.

    Returns:
        uint8 (H, W, 3).

    Raises:
        BadImageError: when `data` is empty, not an image, truncated or corrupt, a
            decompression bomb, of more than `max_pixels` pixels or under `MIN_SIDE` px a
            side, or not 3-channel RGB.
    """
    if not data:
        raise BadImageError(path, "empty file")
    with _load_rgb(io.BytesIO(data), path, max_pixels) as image:
        return np.asarray(image, dtype=np.uint8)


def open_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as a loaded PIL RGB image.

    Cheaper than `read_rgb` where PIL does the next step (no copy into numpy).

    Args:
        path: the image file.
        max_pixels: the largest image (width x height) allowed.

    Returns:
        The decoded image, mode RGB (the caller closes it).

    Raises:
        BadImageError: naming the file, as `read_image_file` and `decode_rgb`.
    """
    return _load_rgb(io.BytesIO(read_image_file(path, max_pixels)), path, max_pixels)


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an RGB array.

    Args:
        path: the image file.
        max_pixels: the largest image (width x height) allowed.

    Returns:
        uint8 (H, W, 3).

    Raises:
        BadImageError: as `open_rgb`.
    """
    with open_rgb(path, max_pixels) as image:
        return np.asarray(image, dtype=np.uint8)
