"""Stain normalisation: round trips on real and synthetic cells, torchstain agreement, mask
handling, degenerate cells, the reference.

Real pixels: scikit-image's immunohistochemistry sample (shipped inside the package) and
four white blood cells cut from BCCD blood-smear photographs (tests/data/bccd, see its
README).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torchstain
from PIL import Image

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.data.synth import ABSORBERS
from leukoflow.stain.normalize import (
    BACKGROUND_MAX,
    DegenerateStainError,
    fit_reference,
    foreground_mask,
    load_reference,
    normalize,
    save_reference,
)
from leukoflow.stain.reference import round_trip

BCCD = Path(__file__).parents[2] / "data" / "bccd"
REAL = ["immunohistochemistry", *sorted(p.stem for p in BCCD.glob("*.png"))]
SYNTHETIC = ["synthetic-0", "synthetic-1", "synthetic-2"]


def cells(n, size=128, seed=0, subjects=3):
    """`n` of synth's cells from `subjects` stain styles, uint8 (n, size, size, 3)."""
    return synth.cells(n, size, seed=seed, subjects=subjects)[0]


def named_image(name):
    """A test image by name: REAL (skimage's sample, a BCCD cell) or SYNTHETIC."""
    if name == "immunohistochemistry":
        return skimage.data.immunohistochemistry()
    if name in SYNTHETIC:
        return cells(3, seed=7)[SYNTHETIC.index(name)]
    return np.asarray(Image.open(BCCD / f"{name}.png").convert("RGB"))


def mean_abs_diff(a, b):
    return np.abs(a.astype(int) - b.astype(int)).mean()


def torchstain_macenko(image):
    """`round_trip`'s fit for torchstain's numpy Macenko."""
    oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    oracle.fit(image)
    return lambda x: oracle.normalize(x, stains=False)[0]


@pytest.fixture(scope="module")
def ihc():
    return skimage.data.immunohistochemistry()


def test_the_real_test_images_are_there():
    assert len(REAL) == 5 and (BCCD / "LICENSE").exists() and (BCCD / "README.md").exists()


@pytest.mark.parametrize("name", REAL + SYNTHETIC)
@pytest.mark.parametrize("method", ["none", "reinhard", "macenko"])
def test_round_trip_on_real_and_synthetic_cells(method, name):
    """Normalised to itself a cell moves <= 5 grey levels; an exposure change cancels to <= 3."""
    figures = round_trip(named_image(name), method)
    assert figures["self"] <= 5.0, figures
    if method != "none":  # `none` leaves a darker copy darker, by design
        assert figures["darker"] <= 3.0, figures
        assert figures["brighter"] is None or figures["brighter"] <= 3.0, figures
        assert figures["brighter"] is not None or name == "immunohistochemistry"


@pytest.mark.parametrize("name", REAL + SYNTHETIC)
def test_macenko_round_trip_at_least_as_good_as_torchstain(name):
    image = named_image(name)
    mine, theirs = round_trip(image, "macenko"), round_trip(image, torchstain_macenko)
    for key in ("self", "darker", "brighter"):
        if theirs[key] is not None and theirs[key] <= (5.0 if key == "self" else 3.0):
            assert mine[key] <= theirs[key], (key, mine, theirs)


def test_macenko_matches_torchstain_on_synthetic_cells():
    source, *targets = cells(4)
    oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    oracle.fit(source)
    reference = fit_reference([source], "macenko", mask=False)
    np.testing.assert_allclose(reference["stain_matrix"], oracle.HERef, atol=1e-4)
    np.testing.assert_allclose(reference["max_concentrations"], oracle.maxCRef, rtol=1e-3)
    for target in targets:
        expected = oracle.normalize(target, stains=False)[0]
        assert mean_abs_diff(normalize(target, reference), expected) <= 1.0


def test_macenko_matches_torchstain_on_immunohistochemistry(ihc):
    top, bottom = ihc[:256], ihc[256:]
    for source, target in ((ihc, ihc), (top, bottom)):
        oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        oracle.fit(source)
        reference = fit_reference([source], "macenko", mask=False)
        expected = oracle.normalize(target, stains=False)[0]
        assert mean_abs_diff(normalize(target, reference), expected) <= 1.0


def test_macenko_matches_torchstain_on_real_blood_cells():
    first, *others = (named_image(name) for name in REAL[1:])
    for source, target in [(first, first), *((first, other) for other in others)]:
        oracle = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        oracle.fit(source)
        reference = fit_reference([source], "macenko", mask=False)
        expected = oracle.normalize(target, stains=False)[0]
        assert mean_abs_diff(normalize(target, reference), expected) <= 1.0


def test_reinhard_matches_torchstain(ihc):
    source, target = cells(2)
    for fit_on, image in ((source, target), (ihc[:256], ihc[256:])):
        oracle = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
        oracle.fit(fit_on)
        reference = fit_reference([fit_on], "reinhard", mask=False)
        assert mean_abs_diff(normalize(image, reference), oracle.normalize(image)) <= 1.0


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_background_stays_black_and_takes_no_part_in_the_fit(method):
    images = cells(3, seed=1)
    background = [~foreground_mask(image) for image in images]
    reference = fit_reference(images, method)
    # other dark background values and a wider black border: the same fit, the same output
    rng = np.random.default_rng(0)
    noisy = []
    for image, bg in zip(images, background, strict=True):
        image = image.copy()
        image[bg] = rng.integers(0, BACKGROUND_MAX + 1, (bg.sum(), 3), dtype=np.uint8)
        noisy.append(np.pad(image, ((20, 20), (5, 30), (0, 0))))
    again = fit_reference(noisy, method)
    for key in ("stain_matrix", "max_concentrations", "lab_means", "lab_stds"):
        if key in reference:
            np.testing.assert_allclose(again[key], reference[key], rtol=1e-5, atol=1e-6)
    for image, padded, bg in zip(images, noisy, background, strict=True):
        out = normalize(image, reference)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert not out[bg].any(), "background must stay exactly black"
        assert out[~bg].any()
        padded_out = normalize(padded, reference)[20:-20, 5:-30]
        np.testing.assert_array_equal(padded_out, out)


def test_background_would_change_an_unmasked_fit():
    image = cells(1, seed=2)[0]
    rows, cols = (
        np.flatnonzero(foreground_mask(image).any(1)),
        np.flatnonzero(foreground_mask(image).any(0)),
    )
    image = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    padded = np.pad(image, ((8, 8), (8, 8), (0, 0)))
    masked = [fit_reference([im], "macenko")["max_concentrations"] for im in (image, padded)]
    plain = [
        fit_reference([im], "macenko", mask=False)["max_concentrations"] for im in (image, padded)
    ]
    np.testing.assert_allclose(masked[0], masked[1], rtol=1e-6)
    assert not np.allclose(plain[0], plain[1], rtol=1e-3)


def disk_image(size=64, radius=25):
    """Purpose-built geometry: a boolean disc of `radius` px centred in a `size` px frame."""
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - size / 2, xx - size / 2) < radius


def one_stain_cell(seed=0):
    """Purpose-built: a disc of azure B alone (one stain vector), for the degenerate fit."""
    disk = disk_image()
    conc = np.where(disk, 0.3 + 1.2 * np.random.default_rng(seed).random(disk.shape), 0)
    image = np.rint(240 * np.exp(-conc[..., None] * ABSORBERS["azure_b"])).astype(np.uint8)
    image[~disk] = 0
    return image


def pale_cell():
    """Purpose-built: a disc of one pale colour (no stain to find), for the degenerate fit."""
    return (disk_image()[..., None] * np.array([232, 228, 236])).astype(np.uint8)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize("make", [pale_cell, lambda: np.zeros((64, 64, 3), np.uint8)])
def test_degenerate_cells_fall_back_without_nan(method, make):
    reference = fit_reference(cells(3), method)
    image = make()
    out = normalize(image, reference)
    assert out.dtype == np.uint8 and out.shape == image.shape
    if method == "macenko" or not foreground_mask(image).any():
        # Macenko cannot estimate these stains: the documented fallback returns the input
        np.testing.assert_array_equal(out, image)
        with pytest.raises(DegenerateStainError):
            normalize(image, reference, on_degenerate="raise")


def test_a_one_stain_cell_is_normalised_not_a_fallback():
    """Mask-aware Macenko has no switch for stain vectors close together (it made the
    estimate bistable): a one-stain cell is normalised, and to itself comes back unchanged."""
    image = one_stain_cell()
    out = normalize(image, fit_reference(cells(3), "macenko"), on_degenerate="raise")
    fg = foreground_mask(image)
    assert not out[~fg].any() and mean_abs_diff(out[fg], image[fg]) > 1.0
    assert round_trip(image, "macenko")["self"] <= 1.0


def test_unmasked_blank_image_is_not_nan():
    reference = fit_reference(cells(2), "macenko", mask=False)
    blank = np.full((32, 32, 3), 250, np.uint8)
    np.testing.assert_array_equal(normalize(blank, reference), blank)


def test_all_degenerate_images_cannot_fit_a_reference():
    with pytest.raises(LeukoflowError, match="degenerate"):
        fit_reference([pale_cell(), np.zeros((64, 64, 3), np.uint8)], "macenko")


def test_reference_round_trip_and_bad_files(tmp_path):
    reference = fit_reference(cells(2), "macenko")
    save_reference(reference, tmp_path / "ref.json")
    loaded = load_reference(tmp_path / "ref.json")
    image = cells(1, seed=5)[0]
    np.testing.assert_array_equal(normalize(image, loaded), normalize(image, reference))
    (tmp_path / "old.json").write_text(json.dumps({**reference, "version": 0}))
    with pytest.raises(LeukoflowError, match="version"):
        load_reference(tmp_path / "old.json")
    without = {k: v for k, v in reference.items() if k != "brightness"}
    (tmp_path / "dim.json").write_text(json.dumps(without))
    with pytest.raises(LeukoflowError, match="lacks brightness"):
        load_reference(tmp_path / "dim.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LeukoflowError, match="bad.json"):
        load_reference(tmp_path / "bad.json")
    with pytest.raises(LeukoflowError, match="unknown stain method"):
        fit_reference([image], "vahadane")


def write_dataset(root, subjects):
    """BMP cells per (subject, subset); the split table of them (split CSV columns)."""
    rows = []
    for k, (subject, subset) in enumerate(subjects):
        for i, image in enumerate(cells(3, size=64, seed=10 + k, subjects=1)):
            rel = f"cells/{subject}_{i}.bmp"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / rel)
            label = "hem" if subject.startswith("H") else "all"
            rows.append([rel, label, subject, "0", 64, 64, f"{k}{i}", subset, -1])
    columns = ["path", "label", "subject", "fold", "width", "height", "sha256", "subset", "cv_fold"]
    return pd.DataFrame(rows, columns=columns)


@pytest.mark.slow
def test_reference_is_fitted_on_training_subjects_only(tmp_path):
    dataset = tmp_path / "data"
    split = write_dataset(
        dataset, [("1", "train"), ("H2", "train"), ("3", "train"), ("4", "val"), ("H5", "test")]
    )
    split.to_csv(tmp_path / "split.csv", index=False)

    def fit(name, outputs=()):
        out = tmp_path / name
        argv = ["stain-reference", str(tmp_path / "split.csv"), "--dataset", str(dataset)]
        argv += ["--split-id", "main", "--stain", '{"method": "macenko", "reference_images": 50}']
        argv += ["--out", str(out / "reference.json")]
        for flag in outputs:
            argv += [f"--{flag}", str(out / {"spread": "spread.json"}.get(flag, "examples.png"))]
        assert main(argv) == 0
        return json.loads((out / "reference.json").read_text()), out

    first, out = fit("a", ["spread", "examples"])
    assert first["images"] == 9 and first["method"] == "macenko"
    spread = json.loads((out / "spread.json").read_text())
    assert spread["subjects"] == 5 and spread["spread_after"] < spread["spread_before"]
    assert (out / "examples.png").stat().st_size > 0
    # a very different test-subset (and validation) image leaves the reference unchanged
    for rel in split.loc[split["subset"] != "train", "path"]:
        image = np.asarray(Image.open(dataset / rel))
        Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(dataset / rel)
    assert fit("b")[0] == first
    # ... while the same change to a training image moves it
    rel = split.loc[split["subset"] == "train", "path"].iloc[0]
    image = np.asarray(Image.open(dataset / rel))
    Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(dataset / rel)
    assert fit("c")[0] != first


def test_bench_stain_prints_and_writes_its_figures(tmp_path, capsys):
    argv = ["bench", "stain", "--out", str(tmp_path), "--images", "2", "--size", "96"]
    argv += ["--sweep-size", "0"]  # the sweep: tests/unit/stain/test_continuity.py
    assert main(argv + ["--stores-images", "4", "--store-size", "32", "--threads", "1"]) == 0
    figures = json.loads((tmp_path / "stain.json").read_text())
    printed = capsys.readouterr().out
    for key in ("macenko_ms_per_image", "torchstain_macenko_ms_per_image", "stores_images_per_s"):
        assert figures[key] > 0 and key in printed
    ratio = figures["torchstain_macenko_ms_per_image"] / figures["macenko_ms_per_image"]
    assert figures["speedup_vs_torchstain"] == pytest.approx(ratio)
    assert 0 <= figures["mean_abs_diff_vs_torchstain"] <= 1.0
    for image in ("synthetic", "ihc"):
        for method in ("macenko", "reinhard"):
            assert figures[f"round_trip_{method}_{image}_self"] <= 5.0
            assert figures[f"round_trip_{method}_{image}_exposure"] <= 3.0
        assert f"round_trip_torchstain_macenko_{image}_self" in printed
