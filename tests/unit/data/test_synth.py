"""The synthetic C-NMC generator: layout, names, ratios, folds, determinism, hard properties."""

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.stain.normalize import fit_reference, normalize

NAME = re.compile(r"^UID_(H?\d+|h\d+)_(\d+)_(\d+)_(all|hem)\.bmp$")
SIZE = 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = synth.generate_dataset(
        root, subjects=9, images_per_subject=6, size=SIZE, seed=3, threads=1, prelim_subjects=3
    )
    return root, summary


def training_files(root):
    return sorted((root / "training_data").glob("fold_*/*/*.bmp"))


def read(path):
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.format == "BMP"
        return np.asarray(image)


def subject_of(name):
    return NAME.match(name).group(1).upper()


def test_layout_and_names(dataset):
    root, summary = dataset
    files = training_files(root)
    assert len(files) == summary["training_images"] == 54
    names = [f.name for f in files]
    assert all(NAME.match(n) for n in names), [n for n in names if not NAME.match(n)]
    for f in files:
        label = NAME.match(f.name).group(4)
        subject = NAME.match(f.name).group(1)
        assert f.parent.name == label
        assert subject.isdigit() == (label == "all")
        assert read(f).shape == (SIZE, SIZE, 3)
    assert any(n.startswith("UID_h") for n in names)
    assert any(n.startswith("UID_H") for n in names)
    assert {f.parent.parent.name for f in files} == {"fold_0", "fold_1", "fold_2"}
    assert len(set(names)) == len(names)


def test_class_ratio(dataset):
    root, _ = dataset
    labels = [NAME.match(f.name).group(4) for f in training_files(root)]
    ratio = labels.count("all") / labels.count("hem")
    assert abs(ratio - 2.15) < 0.3


def test_folds_are_subject_disjoint_and_hold_both_classes(dataset):
    root, _ = dataset
    subjects, classes = {}, {}
    for f in training_files(root):
        fold = f.parent.parent.name
        subjects.setdefault(fold, set()).add(subject_of(f.name))
        classes.setdefault(fold, set()).add(f.parent.name)
    folds = sorted(subjects)
    for i, a in enumerate(folds):
        assert classes[a] == {"all", "hem"}
        for b in folds[i + 1 :]:
            assert not subjects[a] & subjects[b]


def test_background_black_and_cell_centred(dataset):
    root, _ = dataset
    for f in training_files(root)[::5]:
        image = read(f).astype(int)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert not border.any()
        assert image[SIZE // 2, SIZE // 2].sum() > 0
        foreground = image.sum(-1) > 0
        assert 0.05 < foreground.mean() < 0.8


def test_prelim_csv_matches_files_and_subjects(dataset):
    root, summary = dataset
    with open(root / synth.PRELIM_LABELS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["Patient_ID", "new_names", "labels"]
    files = sorted((root / synth.PRELIM_DIR).iterdir(), key=lambda p: int(p.stem))
    assert [f.name for f in files] == [f"{i}.bmp" for i in range(1, len(files) + 1)]
    assert [r["new_names"] for r in rows] == [f.name for f in files]
    assert len(rows) == summary["prelim_images"] == 18
    training_subjects = {subject_of(f.name) for f in training_files(root)}
    prelim_subjects = set()
    for row in rows:
        match = NAME.match(row["Patient_ID"])
        assert match
        assert row["labels"] == ("1" if match.group(4) == "all" else "0")
        prelim_subjects.add(match.group(1).upper())
    assert {r["labels"] for r in rows} == {"0", "1"}
    assert not prelim_subjects & training_subjects
    assert read(files[0]).shape == (SIZE, SIZE, 3)


def test_same_seed_gives_identical_bytes_in_parallel(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    synth.generate_dataset(
        again, subjects=9, images_per_subject=6, size=SIZE, seed=3, threads=2, prelim_subjects=3
    )
    first = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    assert all((root / p).read_bytes() == (again / p).read_bytes() for p in first)
    other = tmp_path / "other"
    synth.generate_dataset(
        other, subjects=9, images_per_subject=6, size=SIZE, seed=4, threads=1, prelim_subjects=3
    )
    common = [p for p in first if (other / p).exists()]
    assert common and any((root / p).read_bytes() != (other / p).read_bytes() for p in common)


def foreground_od(image):
    """Mean optical density (3,) of the non-black pixels."""
    pixels = image[image.sum(-1) > 0].astype(float)
    return -np.log((pixels + 1) / 240.0).mean(0)


def nucleus_hue(image):
    """Direction (unit (3,)) of the mean optical density of the darkest 30% of the cell."""
    pixels = image[image.sum(-1) > 0].astype(float)
    od = -np.log((pixels + 1) / 240.0)
    mean = od[od.sum(1) >= np.percentile(od.sum(1), 70)].mean(0)
    return mean / np.linalg.norm(mean)


def test_stain_varies_more_between_than_within_subjects(dataset):
    """The stain's hue: the mean OD over a whole cell follows its nucleus-to-cytoplasm ratio."""
    root, _ = dataset
    by_subject = {}
    for f in training_files(root):
        if f.parent.name == "all":
            by_subject.setdefault(subject_of(f.name), []).append(nucleus_hue(read(f)))
    means = np.array([np.mean(v, 0) for v in by_subject.values()])
    within = np.mean([np.std(v, 0) for v in by_subject.values()], 0)
    assert len(by_subject) >= 5
    assert np.linalg.norm(means.std(0)) > np.linalg.norm(within)


def test_three_absorbers_in_romanowsky_colours():
    """Nuclei blue-purple, cytoplasm pale blue with a faint pink; no plane holds the ODs.

    Colours are of the light the stain lets through (0-255 of the subject's illumination,
    whose per-subject colour cast is the camera's, not the stain's).
    """
    nuclei, cytoplasm, residuals = [], [], []
    for s in range(6):
        style = synth.subject_style(np.random.default_rng([5, s]))
        image = synth.render_cell(np.random.default_rng([5, s, 0]), "all", style, 96)
        pixels = image[image.sum(-1) > 0] * (255.0 / style["illumination"])
        brightness = pixels.sum(-1)
        nuclei.append(pixels[brightness <= np.percentile(brightness, 20)].mean(0))
        cytoplasm.append(pixels[brightness >= np.percentile(brightness, 95)].mean(0))
        od = -np.log((pixels + 1) / 256.0)
        singular = np.linalg.svd(od, compute_uv=False)
        residuals.append(singular[2] / singular[0])
    for red, green, blue in nuclei:  # blue-purple: blue strongest, green weakest
        assert blue > red + 10 and red > green + 5
    for red, green, blue in cytoplasm:  # pale and bluish
        assert min(red, green, blue) > 170 and blue >= max(red, green) - 3
    # a third absorber: the ODs do not lie in a plane (third singular value over the first
    # ~0.03; ~0.009 with the eosin left out, from sensor noise and rounding)
    assert np.median(residuals) > 0.018


def test_stain_normalisation_undoes_most_of_the_stain_shift():
    """Same cells under 10 subjects' stains: Macenko removes most of the between-subject spread."""
    shape = synth.subject_style(np.random.default_rng(0))
    per_subject = []
    for s in range(10):
        style = synth.subject_style(np.random.default_rng(100 + s))
        style.update({k: shape[k] for k in [*synth.MORPHOLOGY, "aspect"]})
        per_subject.append(
            [synth.render_cell(np.random.default_rng(i), "all", style, 64) for i in range(3)]
        )
    reference = fit_reference(per_subject[0], "macenko")
    raw = [np.mean([foreground_od(im) for im in images], 0) for images in per_subject]
    normalised = [
        np.mean([foreground_od(normalize(im, reference)) for im in images], 0)
        for images in per_subject
    ]
    spread_raw, spread_normalised = (
        np.linalg.norm(np.std(x, 0) / np.mean(x, 0)) for x in (raw, normalised)
    )
    assert spread_normalised < 0.25 * spread_raw


def test_classes_differ_on_average_in_size_and_nucleus_darkness():
    """Over many subjects, blasts are larger and their darkest (nuclear) pixels paler."""
    area, dark = {"all": [], "hem": []}, {"all": [], "hem": []}
    for s in range(40):
        label = "all" if s % 2 else "hem"
        style = synth.subject_style(np.random.default_rng([7, s]))
        for i in range(3):
            image = synth.render_cell(np.random.default_rng([7, s, i]), label, style, 48)
            pixels = image[image.sum(-1) > 0].sum(-1)
            area[label].append(pixels.size)
            dark[label].append(np.percentile(pixels, 10))
    assert np.mean(area["all"]) > 1.1 * np.mean(area["hem"])
    assert np.mean(dark["all"]) > np.mean(dark["hem"]) + 10
    # overlap: many hem cells are larger than the median blast
    assert np.mean(np.array(area["hem"]) > np.median(area["all"])) > 0.15


def test_full_scale_plan_has_the_c_nmc_counts():
    plan = synth.plan_subjects(73, 1, seed=0, prelim_subjects=0, full_scale=True)
    count = {lab: sum(s.images for s in plan if s.label == lab) for lab in ("all", "hem")}
    assert count == {"all": 7272, "hem": 3389}
    assert sum(s.label == "all" for s in plan) == 47
    assert sum(s.label == "hem" for s in plan) == 26
    for fold in "012":
        assert {s.label for s in plan if s.fold == fold} == {"all", "hem"}
    assert sum(s.name == "h3" for s in plan) == 1
    tasks, prelim_rows = synth.plan_tasks(plan, 0, 450, full_scale=True)
    sizes = [task[4] for task in tasks]
    assert len(tasks) == 10661 and not prelim_rows
    assert set(sizes) == {450, 600} and 0 < sizes.count(600) < 0.03 * len(sizes)


def test_cli_writes_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "cli"
    block = json.dumps({"subjects": 6, "images_per_subject": 2, "size": 32})
    assert main(["synth", str(out), "--synthetic", block, "--prelim-subjects", "0"]) == 0
    assert len(training_files(out)) == 12
    assert not (out / "validation_data").exists()
    assert main(["synth", str(tmp_path / "bad"), "--synthetic", '{"subjects": 5}']) == 2
    assert "synthetic.subjects: 5 is less than the minimum of 6" in capsys.readouterr().err
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(LeukoflowError, match="refusing to replace"):
        synth.generate_dataset(tmp_path / "keep", subjects=6, images_per_subject=1, size=32)
    assert (tmp_path / "keep" / "notes.txt").exists()
