"""Image stores: prepare_image geometry, store shape/dtype/index, atomic writes, the CLI."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.data.images import read_rgb
from leukoflow.stain import stores
from leukoflow.stain.normalize import fit_reference, foreground_mask, normalize, save_reference
from leukoflow.stain.stores import build_store, open_store, prepare_image, square_crop

NONE = fit_reference([], "none")


def ellipse_image(height=90, width=150, centre=(30, 40), axes=(12, 24), colour=(200, 80, 150)):
    """Purpose-built geometry: a filled ellipse (semi-axes rows, cols) on black, off-centre in
    a non-square image, so the crop's centring, aspect and scale can be measured."""
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - centre[0]) / axes[0]) ** 2 + ((xx - centre[1]) / axes[1]) ** 2 <= 1
    return (inside[..., None] * np.array(colour)).astype(np.uint8)


def extent(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


@pytest.mark.parametrize("size", [32, 64, 300])
def test_prepare_image_centres_the_cell_and_keeps_its_aspect(size):
    out = prepare_image(ellipse_image(), NONE, size)
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    mask = foreground_mask(out, 40)
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - (size - 1) / 2) <= 0.03 * size
    assert abs(cols.mean() - (size - 1) / 2) <= 0.03 * size
    height, width = extent(mask)
    assert height / width == pytest.approx(0.5, rel=0.12)  # semi-axes 12:24
    assert width == pytest.approx(49 * size / 90, rel=0.08)  # the frame is the shorter side
    assert not out[[0, 0, -1, -1], [0, -1, 0, -1]].any(), "black padding around the cell"


def test_prepare_image_keeps_the_cells_size():
    small = prepare_image(ellipse_image(axes=(10, 10)), NONE, 64)
    large = prepare_image(ellipse_image(axes=(20, 20)), NONE, 64)
    ratio = foreground_mask(large, 40).sum() / foreground_mask(small, 40).sum()
    assert ratio == pytest.approx(4, rel=0.15)


def test_a_cell_larger_than_the_frame_is_not_cut():
    image = ellipse_image(height=40, width=100, centre=(20, 50), axes=(19, 45))
    mask = foreground_mask(prepare_image(image, NONE, 64), 40)
    assert not mask[[0, -1]].any() and not mask[:, [0, -1]].any()


def test_square_crop_pads_with_black_where_the_square_leaves_the_image():
    image = ellipse_image(height=40, width=100, centre=(20, 50), axes=(19, 45))
    crop = square_crop(image)
    assert crop.shape[0] == crop.shape[1] > image.shape[0]
    assert not crop[0].any() and not crop[-1].any()
    blank = np.zeros((20, 30, 3), np.uint8)
    assert square_crop(blank).shape == (30, 30, 3)


def synthetic_cells(n=32, subjects=4, size=450):
    """`n` of synth's 450 px cells, cell i of subject i % `subjects`: (images, subjects)."""
    images, _, subject = synth.cells(n, size, seed=3, subjects=subjects)
    return images, subject


def normalise_then_resize(image, reference, size):
    """The costlier order: normalise the whole square frame, then resize it."""
    crop = square_crop(image, background_max=reference["params"]["background_max"])
    return stores.resize_square(normalize(crop, reference), size)


def subject_spread(images, subjects):
    """Mean over channels of the between-subject std of the mean foreground optical density."""

    def mean_od(image):
        cell = image[foreground_mask(image, 40)].astype(float)
        return -np.log((cell + 1) / 256).mean(axis=0)

    per_image = pd.DataFrame([mean_od(image) for image in images]).groupby(subjects).mean()
    return per_image.std(ddof=1).mean()


@pytest.mark.parametrize("size", [64, 128])
def test_normalising_after_resizing_evens_out_subjects_as_the_full_frame_does(size):
    cells, subjects = synthetic_cells()
    reference = fit_reference(cells, "macenko")
    fast = [prepare_image(cell, reference, size) for cell in cells]
    full = [normalise_then_resize(cell, reference, size) for cell in cells]
    raw = [prepare_image(cell, NONE, size) for cell in cells]
    spread = subject_spread(fast, subjects)
    assert spread < 1.25 * subject_spread(full, subjects)
    assert spread < 0.3 * subject_spread(raw, subjects)
    shifts = []  # grey levels, the largest channel of the shift of the cell's mean colour
    for a, b in zip(fast, full, strict=True):
        inside = foreground_mask(b, 40)
        shifts.append(np.abs(a[inside].mean(axis=0) - b[inside].mean(axis=0)).max())
    # three absorbers: the two stains Macenko finds depend a little on the resolution (the
    # extreme hues it takes them from are smoothed by the resize), more for a few cells
    assert np.median(shifts) < 3 and max(shifts) < 15


@pytest.mark.parametrize("size", [24, 32, 456])
def test_small_and_large_inputs_are_normalised_without_fallbacks(size):
    cells, _ = synthetic_cells(8)
    reference = fit_reference(cells, "macenko")
    assert [stores._prepare(cell, reference, size)[1] for cell in cells] == [None] * 8


def test_shrink_reduces_by_the_largest_whole_factor_that_keeps_the_size():
    image = Image.new("RGB", (450, 400))
    assert stores.shrink(image, 128).size == (150, 134)  # factor 3 (400 // 128)
    assert stores.shrink(image, 96).size == (113, 100)  # factor 4
    assert stores.shrink(image, 300) is image


def write_dataset(root, n=7, size=80):
    """`n` of synth's cells as BMP files under `root`; their split rows (split CSV columns)."""
    images, _, _ = synth.cells(n, size, seed=0, subjects=3)
    rows = []
    for i, image in enumerate(images):
        label = ("all", "hem")[i % 2]
        rel = f"training_data/fold_0/{label}/UID_{i % 3}_{i}_1_{label}.bmp"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        subset = ("train", "train", "val")[i % 3]
        rows.append([rel, label, str(i % 3), "0", size, size, f"{i:064x}", subset, -1])
    columns = ["path", "label", "subject", "fold", "width", "height", "sha256", "subset", "cv_fold"]
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture()
def dataset(tmp_path):
    rows = write_dataset(tmp_path / "data")
    reference = fit_reference([read_rgb(tmp_path / "data" / p) for p in rows["path"]], "macenko")
    return tmp_path / "data", rows, reference


def test_store_matches_its_index_and_prepare_image(dataset, tmp_path, monkeypatch):
    root, rows, reference = dataset
    monkeypatch.setattr(stores, "FLUSH_ROWS", 3)  # exercise the re-mapping of the store
    out = tmp_path / "stores" / "32px" / "train.npy"
    assert build_store(rows, root, reference, 32, out, threads=1, progress=False) == 0
    images, index = open_store(out)
    assert images.dtype == np.uint8 and images.shape == (len(rows), 32, 32, 3)
    assert list(index.columns) == ["row", "path", "label", "subject", "fold", "sha256", "y"]
    assert list(index["row"]) == list(range(len(rows)))
    assert list(index["path"]) == list(rows["path"])
    assert list(index["y"]) == [int(label == "all") for label in rows["label"]]
    for row, rel in enumerate(index["path"]):
        expected = prepare_image(read_rgb(root / rel), reference, 32)
        np.testing.assert_array_equal(images[row], expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.csv", "train.npy"]


@pytest.mark.slow
def test_parallel_store_equals_serial_store(dataset, tmp_path):
    root, rows, reference = dataset
    build_store(rows, root, reference, 24, tmp_path / "serial.npy", threads=1, progress=False)
    build_store(rows, root, reference, 24, tmp_path / "parallel.npy", threads=2, progress=False)
    serial, serial_index = open_store(tmp_path / "serial.npy")
    parallel, parallel_index = open_store(tmp_path / "parallel.npy")
    np.testing.assert_array_equal(parallel, serial)
    pd.testing.assert_frame_equal(parallel_index, serial_index)


def test_a_failed_build_names_the_file_and_leaves_nothing(dataset, tmp_path):
    root, rows, reference = dataset
    bad = rows["path"].iloc[4]
    (root / bad).write_bytes(b"BM not really a bitmap")
    out = tmp_path / "stores" / "train.npy"
    with pytest.raises(LeukoflowError, match=bad.split("/")[-1]):
        build_store(rows, root, reference, 32, out, threads=1, progress=False)
    assert list(out.parent.iterdir()) == []


def test_open_store_rejects_a_store_that_does_not_match_its_index(dataset, tmp_path):
    root, rows, reference = dataset
    out = tmp_path / "val.npy"
    build_store(rows.iloc[:3], root, reference, 16, out, progress=False)
    index = pd.read_csv(out.with_suffix(".csv"))
    index.iloc[:2].to_csv(out.with_suffix(".csv"), index=False)
    with pytest.raises(LeukoflowError, match="does not match"):
        open_store(out)


def test_stores_cli_writes_the_subset_of_the_split(dataset, tmp_path):
    root, rows, reference = dataset
    rows.to_csv(tmp_path / "split.csv", index=False)
    save_reference(reference, tmp_path / "reference.json")
    out = tmp_path / "stores" / "40px" / "val.npy"
    argv = ["stores", str(tmp_path / "split.csv"), "--dataset", str(root)]
    argv += ["--reference", str(tmp_path / "reference.json"), "--split-id", "main"]
    argv += ["--subset", "val", "--size", "40", "--out", str(out), "--threads", "1"]
    assert main([*argv, "--index", str(tmp_path / "elsewhere.csv")]) == 2  # not beside the .npy
    assert not out.exists()
    assert main([*argv, "--index", str(out.with_suffix(".csv"))]) == 0
    images, index = open_store(out)
    assert images.shape == (2, 40, 40, 3)
    assert list(index["path"]) == list(rows.loc[rows["subset"] == "val", "path"])
