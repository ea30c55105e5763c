"""The one image reader: every kind of bad file is a `BadImageError` naming it and why."""

import os

import numpy as np
import pandas as pd
import pytest
from cells import write_bad_images, write_bomb, write_cell
from PIL import Image

from leukoflow.cli import build_parser
from leukoflow.core.settings import schema_defaults
from leukoflow.data.images import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    decode_rgb,
    max_file_bytes,
    open_rgb,
    read_image_file,
    read_rgb,
)


def test_every_kind_of_bad_file_is_a_bad_image_naming_it(tmp_path):
    bad = write_bad_images(tmp_path)
    pil_limit = Image.MAX_IMAGE_PIXELS
    for rel, fragment in bad.items():
        with pytest.raises(BadImageError) as error:
            read_rgb(tmp_path / rel)
        assert fragment in error.value.reason, (rel, error.value.reason)
        assert str(tmp_path / rel) in str(error.value)
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global limit is left as it was


def test_good_cells_read_as_rgb(tmp_path):
    path = write_cell(tmp_path / "UID_1_1_1_all.bmp", 1)
    image = read_rgb(path)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(decode_rgb(read_image_file(path)), image)
    with open_rgb(path) as pil_image:
        assert pil_image.mode == "RGB" and pil_image.size == (32, 32)


def test_max_pixels_is_this_calls_limit_not_pils(tmp_path):
    path = write_cell(tmp_path / "cell.png", 1)
    with pytest.raises(BadImageError, match="32 x 32 px .* more than max_pixels 1,000"):
        read_rgb(path, max_pixels=1000)
    bomb = write_bomb(tmp_path / "bomb.png")  # 400 Mpx: beyond twice PIL's default limit
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_rgb(bomb)
    # allowed by this call, the header is read past PIL's own limit: the mode is what is wrong
    with pytest.raises(BadImageError, match="image mode is 1"):
        read_rgb(bomb, max_pixels=500_000_000)


def test_a_file_larger_than_any_allowed_image_is_not_read(tmp_path):
    path = tmp_path / "huge.bmp"
    path.write_bytes(b"BM" + b"\0" * max_file_bytes(64))
    with pytest.raises(BadImageError, match="larger than any image of at most 64 pixels"):
        read_image_file(path, max_pixels=64)


def test_a_folder_named_like_an_image_is_a_bad_image(tmp_path):
    (tmp_path / "UID_1_1_1_all.bmp").mkdir()
    with pytest.raises(BadImageError, match="not a regular file: a folder"):
        read_rgb(tmp_path / "UID_1_1_1_all.bmp")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_a_file_without_read_permission_is_a_bad_image(tmp_path):
    path = write_cell(tmp_path / "cell.bmp", 1)
    path.chmod(0)
    with pytest.raises(BadImageError, match="cannot read file .*Permission denied"):
        read_rgb(path)


def test_the_default_limit_is_the_schemas_and_the_commands(tmp_path):
    assert schema_defaults("ingest")["max_pixels"] == DEFAULT_MAX_PIXELS
    parser = build_parser()
    argv = ["ingest", "d", "--out", "m.csv"]
    assert parser.parse_args(argv).ingest["max_pixels"] == DEFAULT_MAX_PIXELS
    given = parser.parse_args([*argv, "--ingest", '{"max_pixels": 4096}'])
    assert given.ingest == {"max_pixels": 4096, "on_bad": "error"}
    for argv in (
        ["stores", "s", "--dataset", "d", "--reference", "r"],
        ["predict", "--model", "b", "--out", "p", "x"],
    ):
        argv += (
            ["--subset", "test", "--size", "8", "--out", "o", "--index", "i"]
            if argv[0] == "stores"
            else []
        )
        assert parser.parse_args(argv).max_pixels == DEFAULT_MAX_PIXELS
        assert parser.parse_args([*argv, "--max-pixels", "4096"]).max_pixels == 4096


def test_the_stain_reference_and_the_stores_name_a_file_that_went_bad(tmp_path):
    """A manifest file replaced by a bomb after ingest: both steps stop with its name."""
    from leukoflow.core.errors import LeukoflowError
    from leukoflow.stain.normalize import fit_reference
    from leukoflow.stain.reference import build_reference
    from leukoflow.stain.stores import build_store

    names = [f"all/UID_{subject}_1_1_all.bmp" for subject in (1, 2, 3)]
    for seed, name in enumerate(names):
        write_cell(tmp_path / name, seed)
    split = pd.DataFrame({"path": names, "label": "all", "subject": ["1", "2", "3"]})
    split = split.assign(fold="none", sha256="", subset="train", cv_fold=-1)
    reference = fit_reference([read_rgb(tmp_path / name) for name in names], "macenko")
    write_bomb(tmp_path / names[1])
    with pytest.raises(BadImageError, match=f"{names[1]}: image is 20,000 x 20,000 px"):
        build_reference(split, tmp_path, "main", "macenko", images=3)
    out = tmp_path / "stores" / "train.npy"
    with pytest.raises(LeukoflowError, match=f"{names[1]}: image is 20,000 x 20,000 px"):
        build_store(split, tmp_path, reference, 16, out, progress=False)
    assert not out.exists()
