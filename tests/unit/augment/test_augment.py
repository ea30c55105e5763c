"""Offline augmentation: transformations, balance, determinism, traceability, no leakage."""

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from leukoflow.augment.offline import ROWS_PER_PROCESS, augment_store, plan_rows
from leukoflow.augment.transforms import (
    IDENTITY,
    PARAM_COLUMNS,
    RGB_FROM_HED,
    STAIN_ALPHAS,
    STAIN_BETAS,
    AugmentSpec,
    draw_params,
    jitter_stain,
    regenerate,
)
from leukoflow.cli import main as cli_main
from leukoflow.core.errors import ConfigError, LeukoflowError
from leukoflow.data import synth
from leukoflow.stain.normalize import fit_reference, foreground_mask
from leukoflow.stain.stores import build_store, open_store

SIZE = 48


def store_like_cell(rng, size, extent=1 / 1.1, centre=(0.5, 0.5)):
    """Purpose-built geometry: a cell as the stores hold it, an irregular, elongated blob
    whose longer side spans `extent` of the frame (the stores crop the cell with a 5%
    margin) about `centre`, textured colours in [40, 215] on black (no clipping by the
    jitter and noise the tests measure)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    dy, dx = yy - centre[1], xx - centre[0]
    theta = rng.uniform(0, np.pi)
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    aspect = rng.uniform(0.6, 1.0)
    phi = np.arctan2(v, u)
    wobble = 1 + 0.04 * np.sin(3 * phi + rng.uniform(0, 6)) + 0.03 * np.cos(5 * phi)
    r = np.hypot(u / (extent / 2), v / (aspect * extent / 2)) * wobble
    colour = rng.uniform(70, 180, 3) + rng.normal(0, 10, (size, size, 3))
    colour -= 30 * (r < 0.5)[..., None]  # darker nucleus
    cell = np.clip(colour, 40, 215) * (r < 0.97)[..., None]
    return cell.astype(np.uint8)


def make_dataset(root, counts, seed=0):
    """synth's cells as BMP files in `root` and split rows: `counts` maps subset -> (n_all,
    n_hem). Subjects and files are distinct per subset (a subject-disjoint split)."""
    rows = []
    for k, (subset, (n_all, n_hem)) in enumerate(counts.items()):
        labels = [1] * n_all + [0] * n_hem
        images, _, _ = synth.cells(len(labels), 72, seed=seed + k, labels=labels)
        for i, (label, image) in enumerate(zip(["all"] * n_all + ["hem"] * n_hem, images)):
            subject = f"{subset}{i % 3}" if label == "all" else f"H{subset}{i % 2}"
            rel = f"{subset}/UID_{subject}_{i}_1_{label}.bmp"
            (root / subset).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / rel)
            sha = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            rows.append((rel, label, subject, "fold_0", sha, subset))
    return pd.DataFrame(rows, columns=["path", "label", "subject", "fold", "sha256", "subset"])


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Real train/val/test stores at SIZE px, built by `leukoflow.stain.stores` from BMP files."""
    root = tmp_path_factory.mktemp("augment")
    rows = make_dataset(root / "data", {"train": (9, 4), "val": (2, 2), "test": (2, 1)})
    reference = fit_reference([], "none")
    folder = root / "stores" / f"{SIZE}px"
    for subset in ("train", "val", "test"):
        subset_rows = rows[rows["subset"] == subset]
        build_store(subset_rows, root / "data", reference, SIZE, folder / f"{subset}.npy")
    return folder


def augment(stores, out, **options):
    """augment_store on the module's training store with the config defaults."""
    options = {"seed": 7, "balance": True, "copies_per_image": 1, "threads": 1} | options
    spec = options.pop("spec", AugmentSpec())
    return augment_store(stores / "train.npy", out, spec, **options)


@pytest.fixture(scope="module")
def augmented(stores, tmp_path_factory):
    """The augmented store (path) of the module's training store, with stain jitter, and
    the examples PNG beside it."""
    out = tmp_path_factory.mktemp("aug") / "train_aug.npy"
    spec = AugmentSpec(stain_jitter=0.1)
    augment(stores, out, spec=spec, examples=out.with_name("examples.png"))
    return out


def test_rotation_keeps_store_cells_in_frame():
    """Any angle keeps >= 97% of the cell's pixels of store-like cells; black fill."""
    rng = np.random.default_rng(1)
    for _ in range(12):
        cell = store_like_cell(rng, 64)
        before = foreground_mask(cell).sum()
        for angle in rng.uniform(0, 360, 8):
            params = IDENTITY | {"angle": round(angle, 6)}
            out = regenerate(cell, params)
            assert foreground_mask(out).sum() >= 0.97 * before
            assert out.shape == cell.shape and out.dtype == np.uint8
        corners = regenerate(np.full((64, 64, 3), 200, np.uint8), IDENTITY | {"angle": 45.0})
        assert (corners[0, 0] == 0).all() and (corners[-1, -1] == 0).all()


def test_rotation_turns_about_the_cell_centre():
    """An off-centre cell keeps its bounding-box centre; its pixels move."""
    rng = np.random.default_rng(2)
    cell = store_like_cell(rng, 64, extent=0.4, centre=(0.3, 0.65))
    mask = foreground_mask(cell)
    out = regenerate(cell, IDENTITY | {"angle": 90.0})
    rotated = foreground_mask(out)
    for axis in (0, 1):
        before, after = np.flatnonzero(mask.any(axis)), np.flatnonzero(rotated.any(axis))
        assert abs((before[0] + before[-1]) - (after[0] + after[-1])) / 2 <= 1.0
    assert rotated.sum() >= 0.97 * mask.sum()
    assert not np.array_equal(out, cell)


def test_flips_are_exact_mirrors():
    cell = store_like_cell(np.random.default_rng(3), 32)
    assert np.array_equal(regenerate(cell, IDENTITY | {"flip_h": True}), cell[:, ::-1])
    assert np.array_equal(regenerate(cell, IDENTITY | {"flip_v": True}), cell[::-1])


def test_identity_parameters_return_the_source():
    cell = store_like_cell(np.random.default_rng(4), 32)
    assert np.array_equal(regenerate(cell, IDENTITY), cell)


def test_noise_statistics_on_the_cell_and_background_unchanged():
    """Mean ~0 and std ~ requested on the cell; background pixels stay exactly black."""
    cell = store_like_cell(np.random.default_rng(5), 96)
    mask = foreground_mask(cell)
    out = regenerate(cell, IDENTITY | {"noise_std": 6.0, "noise_seed": 11})
    diff = out.astype(float) - cell
    on_cell = diff[mask]
    assert abs(on_cell.mean()) < 0.15
    assert on_cell.std() == pytest.approx(np.hypot(6.0, np.sqrt(1 / 12)), rel=0.04)
    assert (out[~mask] == cell[~mask]).all() and (out[~mask] == 0).all()
    other = regenerate(cell, IDENTITY | {"noise_std": 6.0, "noise_seed": 12})
    assert not np.array_equal(other, out)


def test_brightness_and_contrast_jitter_the_cell_only():
    cell = store_like_cell(np.random.default_rng(6), 96)
    mask = foreground_mask(cell)
    brighter = regenerate(cell, IDENTITY | {"brightness": 0.04})
    shift = brighter[mask].astype(float).mean(0) - cell[mask].mean(0)
    assert shift == pytest.approx(np.full(3, 0.04 * 255), abs=0.6)
    stronger = regenerate(cell, IDENTITY | {"contrast": 1.1})
    ratio = stronger[mask].astype(float).std(0) / cell[mask].std(0)
    assert ratio == pytest.approx(np.full(3, 1.1), rel=0.02)
    assert (brighter[~mask] == 0).all() and (stronger[~mask] == 0).all()


def hed_concentrations(pixels):
    """Haematoxylin, eosin and DAB concentrations (M, 3) of uint8 pixels (M, 3)."""
    od = -np.log((pixels.astype(float) + 1) / 256)
    return od @ np.linalg.inv(RGB_FROM_HED)


def test_stain_jitter_scales_and_shifts_stain_concentrations_on_the_cell_only():
    cell = synth.cells(1, 96, seed=4)[0]
    mask = foreground_mask(cell)
    pixels = cell[mask].astype(np.float32)
    unchanged = jitter_stain(pixels, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(unchanged, pixels, atol=1e-3)
    params = IDENTITY | {"stain_alpha_h": 1.2, "stain_beta_e": 0.05}
    out = regenerate(cell, params)
    assert (out[~mask] == 0).all() and foreground_mask(out).sum() == mask.sum()
    before, after = hed_concentrations(cell[mask]), hed_concentrations(out[mask])
    dark = before[:, 0] > 0.3  # where rounding to 8 bits moves the ratio little
    assert np.median(after[dark, 0] / before[dark, 0]) == pytest.approx(1.2, abs=0.02)
    assert np.median(after[:, 1] - before[:, 1]) == pytest.approx(0.05, abs=0.01)
    assert np.median(np.abs(after[:, 2] - before[:, 2])) < 0.01


def test_draw_params_respect_the_knobs():
    spec = AugmentSpec(rotation=True, flip=True, noise_std=3.0, brightness=0.1, contrast=0.2)
    drawn = pd.DataFrame([draw_params(5, row, 1, spec) for row in range(400)])
    assert drawn["angle"].between(0, 360, inclusive="left").all()
    assert drawn["angle"].std() > 90  # spread over the full circle
    assert 0.35 < drawn["flip_h"].mean() < 0.65 and 0.35 < drawn["flip_v"].mean() < 0.65
    assert drawn["brightness"].abs().max() <= 0.1 and drawn["contrast"].between(0.8, 1.2).all()
    assert drawn["noise_seed"].nunique() == 400
    off = AugmentSpec(rotation=False, flip=False, noise_std=0.0, brightness=0.0, contrast=0.0)
    assert all(draw_params(5, row, 1, off) == IDENTITY for row in range(20))
    no_rotation = AugmentSpec(rotation=False, flip=True, noise_std=3.0)
    same_flips = draw_params(5, 9, 2, no_rotation)["flip_h"] == draw_params(5, 9, 2, spec)["flip_h"]
    assert same_flips and draw_params(5, 9, 2, no_rotation)["angle"] == 0.0
    # stain jitter: off by default; on, within its bounds, the other draws unchanged
    assert all(drawn[list(STAIN_ALPHAS)] == 1.0) and all(drawn[list(STAIN_BETAS)] == 0.0)
    jittered = AugmentSpec(**{**vars(spec), "stain_jitter": 0.2})
    stain = pd.DataFrame([draw_params(5, row, 1, jittered) for row in range(400)])
    assert stain.drop(columns=[*STAIN_ALPHAS, *STAIN_BETAS]).equals(
        drawn.drop(columns=[*STAIN_ALPHAS, *STAIN_BETAS])
    )
    assert stain[list(STAIN_ALPHAS)].stack().between(0.8, 1.2).all()
    assert stain[list(STAIN_BETAS)].abs().max().max() <= 0.2
    assert (stain[list(STAIN_ALPHAS)].std() > 0.1).all()


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    copies=st.integers(0, 3),
    seed=st.integers(0, 2**31),
)
def test_plan_rows_balances_classes(counts, copies, seed):
    """Originals first, then copies; every class ends at the largest one's count; top-ups
    come from their own class, spread evenly, and never repeat a (row, copy) pair."""
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    source, copy = plan_rows(labels, copies, True, seed)
    n = labels.size
    assert np.array_equal(source[:n], np.arange(n)) and (copy[:n] == 0).all()
    assert np.array_equal(source[n : n * (copies + 1)], np.tile(np.arange(n), copies))
    per_class = np.bincount(labels[source], minlength=len(counts))
    assert per_class.min() == per_class.max() == max(counts) * (copies + 1)
    pairs = source * 1000 + copy
    assert np.unique(pairs).size == pairs.size
    for label in range(len(counts)):
        uses = np.bincount(source[labels[source] == label], minlength=n)[labels == label]
        assert uses.max() - uses.min() <= 1
    unbalanced, _ = plan_rows(labels, copies, False, seed)
    assert unbalanced.size == n * (copies + 1)


def test_augmented_store_balanced_traceable_and_training_only(stores, augmented):
    """Originals unchanged first; classes equal; every row regenerates byte-identically
    from its index row; only training images (no val/test path, subject or hash)."""
    train_images, train_index = open_store(stores / "train.npy")
    images, index = open_store(augmented)
    n = len(train_images)
    assert np.array_equal(images[:n], train_images)
    assert list(index.columns[:7]) == list(train_index.columns)
    assert {"source_row", "copy_index", *PARAM_COLUMNS} <= set(index.columns)
    assert np.array_equal(index["row"], np.arange(len(index)))
    counts = index["y"].value_counts()
    assert abs(counts[0] - counts[1]) <= 0.01 * counts.max()
    assert len(index) == 2 * 2 * 9  # one copy each, then hem topped up to 18 rows
    for row, params in index.iterrows():
        source = train_images[params["source_row"]]
        assert np.array_equal(regenerate(source, params), images[row]), row
        for column in ("path", "subject", "sha256", "y"):
            assert params[column] == train_index[column].iloc[params["source_row"]]
    assert (index.loc[n:, "angle"] != 0).all()
    for held_out in ("val", "test"):
        _, other = open_store(stores / f"{held_out}.npy")
        for column in ("path", "subject", "sha256"):
            assert not set(index[column]) & set(other[column])
    assert set(index["path"]) == set(train_index["path"])


def test_examples_grid_is_written(augmented):
    with Image.open(augmented.with_name("examples.png")) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 300


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_threads(stores, tmp_path):
    """Byte-identical store and index from two runs, in one and in two worker processes
    (enough rows for two); another seed differs; no temporary file left behind."""
    rows = 2 * ROWS_PER_PROCESS
    outs = {}
    for name, threads, seed in (("one", 1, 7), ("two", 2, 7), ("seed", 1, 8)):
        outs[name] = tmp_path / name / "train_aug.npy"
        index = augment(stores, outs[name], threads=threads, seed=seed, copies_per_image=40)
        assert len(index) > rows
    assert outs["two"].read_bytes() == outs["one"].read_bytes()
    csv = outs["two"].with_suffix(".csv").read_bytes()
    assert csv == outs["one"].with_suffix(".csv").read_bytes()
    assert outs["seed"].read_bytes() != outs["one"].read_bytes()
    assert not list(tmp_path.rglob(".train_aug*"))


def test_refuses_held_out_and_augmented_stores(stores, augmented, tmp_path):
    for name in ("val", "test"):
        with pytest.raises(LeukoflowError, match="only the training store"):
            augment_store(stores / f"{name}.npy", tmp_path / "x.npy", AugmentSpec())
    renamed = tmp_path / "reaugment"
    renamed.mkdir()
    shutil.copy(augmented, renamed / "train.npy")
    shutil.copy(augmented.with_suffix(".csv"), renamed / "train.csv")
    with pytest.raises(LeukoflowError, match="already augmented"):
        augment_store(renamed / "train.npy", tmp_path / "x.npy", AugmentSpec())
    assert not list(tmp_path.glob("x.*"))


def test_refuses_training_store_that_leaks(stores, tmp_path):
    """A `subset` column saying val, or a subject shared with the val store beside it."""
    for name in ("train", "val"):
        shutil.copy(stores / f"{name}.npy", tmp_path / f"{name}.npy")
    index = pd.read_csv(stores / "train.csv")
    val = pd.read_csv(stores / "val.csv")
    index.assign(subset=["train"] * (len(index) - 1) + ["val"]).to_csv(
        tmp_path / "train.csv", index=False
    )
    with pytest.raises(LeukoflowError, match="subset"):
        augment_store(tmp_path / "train.npy", tmp_path / "out.npy", AugmentSpec())
    index.to_csv(tmp_path / "train.csv", index=False)
    val.assign(subject=index["subject"].iloc[0]).to_csv(tmp_path / "val.csv", index=False)
    with pytest.raises(LeukoflowError, match="subject"):
        augment_store(tmp_path / "train.npy", tmp_path / "out.npy", AugmentSpec())
    val.to_csv(tmp_path / "val.csv", index=False)
    augment_store(tmp_path / "train.npy", tmp_path / "out.npy", AugmentSpec(), copies_per_image=0)
    assert (tmp_path / "out.npy").is_file() and (tmp_path / "out.csv").is_file()


def test_invalid_knobs_are_config_errors(stores, tmp_path):
    with pytest.raises(ConfigError, match="contrast"):
        AugmentSpec(contrast=1.5)
    with pytest.raises(ConfigError, match="noise_std"):
        AugmentSpec(noise_std=-1.0)
    with pytest.raises(ConfigError, match="stain_jitter"):
        AugmentSpec(stain_jitter=1.0)
    with pytest.raises(ConfigError, match="seed"):
        augment(stores, tmp_path / "out.npy", seed=-1)


def test_cli_switches(stores, tmp_path, capsys):
    out = tmp_path / "cli" / "train_aug.npy"
    status = cli_main(
        [
            "augment",
            str(stores / "train.npy"),
            "--out",
            str(out),
            "--index",
            str(out.with_suffix(".csv")),
            "--augment",
            json.dumps(
                {
                    "seed": 3,
                    "balance": False,
                    "copies_per_image": 1,
                    "rotation": False,
                    "flip": False,
                    "noise_std": 2,
                    "brightness": 0,
                    "contrast": 0,
                    "stain_jitter": 0.2,
                }
            ),
            "--threads",
            "1",
        ]
    )
    assert status == 0
    index = pd.read_csv(out.with_suffix(".csv"))
    assert len(index) == 2 * 13
    assert (index["angle"] == 0).all() and not index[["flip_h", "flip_v"]].any().any()
    assert (index.loc[13:, "noise_std"] == 2.0).all()
    assert index.loc[13:, list(STAIN_ALPHAS)].stack().between(0.8, 1.2).all()
    assert (index.loc[:12, list(STAIN_ALPHAS)] == 1.0).all().all()
    refused = ["--out", str(tmp_path / "v.npy"), "--index", str(tmp_path / "v.csv")]
    status = cli_main(["augment", str(stores / "val.npy"), *refused])
    assert status == 2
    assert "only the training store" in capsys.readouterr().err
