"""Synthetic C-NMC-shaped dataset: single stained cells on black, in the real layout and names.

`generate_dataset` writes the C-NMC 2019 training layout (three subject-disjoint folds) and
the preliminary test set with its labels CSV; the cells come from
`leukoflow.data.synth.render.render_cell`. Every image is drawn from its own random generator,
seeded from (seed, subject, image), so the files are byte-identical for the same arguments
whatever the number of processes.
"""

import concurrent.futures
import csv
import functools
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from leukoflow.core.atomic import atomic_dir
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.synth.render import render_cell, subject_style

log = logging.getLogger(__name__)

ALL_FRACTION = 2.15 / 3.15  # ALL:hem = 2.15:1 in the C-NMC 2019 training set
FULL_SCALE = {"all_subjects": 47, "hem_subjects": 26, "all_images": 7272, "hem_images": 3389}
FULL_SCALE_SIZE = 450
LARGE_SIZE = 600  # a few real images are 600x600: the 450 px cell padded with black
LARGE_FRACTION = 0.01  # share of full-scale images written at LARGE_SIZE
LOWERCASE_HEM_SUBJECT = 3  # real data holds `UID_h3_...`: hem subject 3 is written `h3`
PRELIM_DIR = "validation_data/C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"


def describe_settings(synthetic: Mapping) -> str:
    """The generator's settings in words, as the report and the model cards name them.

    Args:
        synthetic: the config's `dataset.synthetic` block (a missing key reads '?').

    Returns:
        E.g. '24 subjects x 12 images, 128 px, seed 0'.
    """
    get = {
        key: synthetic.get(key, "?") for key in ("subjects", "images_per_subject", "size", "seed")
    }
    return (
        f"{get['subjects']} subjects x {get['images_per_subject']} images, {get['size']} px, "
        f"seed {get['seed']}"
    )


@dataclass(frozen=True)
class Subject:
    """One synthetic subject: its label, name in file names, fold and image count."""

    index: int  # unique over the dataset, seeds the subject's random streams
    label: str  # "all" or "hem"
    name: str  # as written in file names: "11", "H10", "h3"
    fold: str  # "0", "1", "2" or "prelim_test"
    images: int


def _pad(image, size):
    """`image` (h, w, 3) centred on a black (size, size, 3) canvas."""
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out


def _rng(seed, *keys):
    """A generator seeded from the dataset seed and integer keys (subject, image, stream)."""
    return np.random.default_rng([seed, *keys])


def _split_count(total, parts):
    """`total` split into `parts` integers differing by at most one (larger ones first)."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def _class_counts(n_subjects):
    """(ALL subjects, hem subjects) for n_subjects >= 6, ALL:hem near 2.15:1, >= 3 of each."""
    n_all = int(np.clip(round(n_subjects * ALL_FRACTION), 3, n_subjects - 3))
    return n_all, n_subjects - n_all


def plan_subjects(subjects, images_per_subject, seed, prelim_subjects, full_scale=False):
    """The list of `Subject`s: training subjects in three folds, then preliminary-test ones.

    Image counts per class follow the 2.15:1 ratio of the total (subjects x images per
    subject); in full-scale mode the C-NMC 2019 counts (47/26 subjects, 7,272/3,389 images).
    """
    if full_scale:
        n_all, n_hem = FULL_SCALE["all_subjects"], FULL_SCALE["hem_subjects"]
        all_images, hem_images = FULL_SCALE["all_images"], FULL_SCALE["hem_images"]
        images_per_subject = round((all_images + hem_images) / (n_all + n_hem))
    else:
        n_all, n_hem = _class_counts(subjects)
        total = subjects * images_per_subject
        all_images = max(n_all, round(total * ALL_FRACTION))
        hem_images = max(n_hem, total - all_images)
    rng = _rng(seed, 0)
    plan = []
    for label, count, images in (("all", n_all, all_images), ("hem", n_hem, hem_images)):
        folds = rng.permutation(count) % 3
        for number, (fold, n_img) in enumerate(zip(folds, _split_count(images, count)), 1):
            plan.append((label, number, str(fold), n_img))
    p_all = round(prelim_subjects * ALL_FRACTION)
    if prelim_subjects >= 2:
        p_all = int(np.clip(p_all, 1, prelim_subjects - 1))
    for label, count, first in (("all", p_all, n_all), ("hem", prelim_subjects - p_all, n_hem)):
        for number in range(first + 1, first + count + 1):
            plan.append((label, number, "prelim_test", images_per_subject))
    return [
        Subject(index, label, _subject_name(label, number), fold, n_img)
        for index, (label, number, fold, n_img) in enumerate(plan)
    ]


def _subject_name(label, number):
    if label == "all":
        return str(number)
    return f"h{number}" if number == LOWERCASE_HEM_SUBJECT else f"H{number}"


def cell_file_name(subject, image_index):
    """C-NMC file name `UID_{subject}_{image}_{cell}_{label}.bmp` of a subject's cell.

    `image_index` counts the subject's cells from 0; two cells per microscope image, so
    image numbers run 1, 1, 2, 2, ... and cell numbers 1, 2, 1, 2, ...
    """
    return f"UID_{subject.name}_{image_index // 2 + 1}_{image_index % 2 + 1}_{subject.label}.bmp"


def plan_tasks(plan, seed, size, full_scale):
    """Render tasks and preliminary-test label rows for a plan from `plan_subjects`.

    Tasks: one tuple per image, (path relative to the dataset root, label, subject index,
    image index, canvas size in px), training images first. Rows: (Patient_ID, new_names,
    labels) of the preliminary test set, in `N.bmp` order (shuffled by the seed).
    """
    tasks, prelim = [], []
    for subject in plan:
        for i in range(subject.images):
            name = cell_file_name(subject, i)
            canvas = size
            if full_scale and _rng(seed, subject.index, i, 1).random() < LARGE_FRACTION:
                canvas = LARGE_SIZE
            task = [name, subject.label, subject.index, i, canvas]
            if subject.fold == "prelim_test":
                prelim.append(task)
            else:
                task[0] = f"training_data/fold_{subject.fold}/{subject.label}/{name}"
                tasks.append(task)
    order = _rng(seed, 2).permutation(len(prelim))
    rows = []
    for number, k in enumerate(order, 1):
        task = prelim[k]
        rows.append((task[0], f"{number}.bmp", int(task[1] == "all")))
        task[0] = f"{PRELIM_DIR}/{number}.bmp"
        tasks.append(task)
    return [tuple(t) for t in tasks], rows


def _render_to_file(root, seed, size, styles, task):
    """Render one task's image and write it as a 24-bit BMP under `root`."""
    path, label, subject_index, image_index, canvas = task
    image = render_cell(
        _rng(seed, subject_index, image_index, 0), label, styles[subject_index], size
    )
    if canvas != size:
        image = _pad(image, canvas)
    Image.fromarray(image).save(Path(root) / path, format="BMP")


def _check_arguments(subjects, images_per_subject, size, threads, prelim_subjects):
    problems = []
    if subjects < 6:
        problems.append(f"subjects must be >= 6 (3 per class across 3 folds), got {subjects}")
    if images_per_subject < 1:
        problems.append(f"images per subject must be >= 1, got {images_per_subject}")
    if size < 32:
        problems.append(f"size must be >= 32 px, got {size}")
    if threads < 1:
        problems.append(f"threads must be >= 1, got {threads}")
    if prelim_subjects < 0:
        problems.append(f"prelim subjects must be >= 0, got {prelim_subjects}")
    if problems:
        raise LeukoflowError("synth: " + "; ".join(problems))


def default_prelim_subjects(subjects):
    """Preliminary-test subjects by default: 15% of the training subjects, at least 2."""
    return max(2, round(0.15 * subjects))


def generate_dataset(
    out_dir: str | Path,
    subjects: int = 24,
    images_per_subject: int = 12,
    size: int = 128,
    seed: int = 0,
    threads: int = 1,
    prelim_subjects: int | None = None,
    full_scale: bool = False,
) -> dict:
    """Write a synthetic C-NMC 2019-shaped dataset to `out_dir`.

    Layout: `training_data/fold_{0,1,2}/{all,hem}/UID_*.bmp` and the preliminary test set
    `validation_data/C-NMC_test_prelim_phase_data/N.bmp` with its labels CSV. The whole
    folder is built under a temporary name and renamed at the end.

    Args:
        out_dir: the dataset folder (replaced as a whole; it must be new, empty, or a
            dataset this function wrote).
        subjects: training subjects (>= 6), spread over three folds, ALL:hem near 2.15:1.
        images_per_subject: mean images per training subject (>= 1).
        size: image side, px (>= 32).
        seed: seed of every random choice.
        threads: worker processes (the files do not depend on it).
        prelim_subjects: subjects of the preliminary test set (default: 15% of `subjects`,
            at least 2; 0 for none).
        full_scale: write the C-NMC 2019 training set's size (73 subjects, 10,661 images at
            450 px, a few at 600 px), ignoring `subjects`, `images_per_subject` and `size`.

    Returns:
        The summary (`summarise`): counts per fold and class, image sizes, seconds.

    Raises:
        LeukoflowError: an argument out of range, or `out_dir` holds something else.
    """
    if full_scale:
        subjects, size = FULL_SCALE["all_subjects"] + FULL_SCALE["hem_subjects"], FULL_SCALE_SIZE
    if prelim_subjects is None:
        prelim_subjects = default_prelim_subjects(subjects)
    _check_arguments(subjects, images_per_subject, size, threads, prelim_subjects)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "training_data").is_dir():
        raise LeukoflowError(
            f"{out_dir}: exists and is not a dataset written by `leukoflow synth`; "
            "refusing to replace it (choose an empty or new folder)"
        )
    start = time.perf_counter()
    plan = plan_subjects(subjects, images_per_subject, seed, prelim_subjects, full_scale)
    styles = {s.index: subject_style(_rng(seed, s.index, 0, 2)) for s in plan}
    tasks, prelim_rows = plan_tasks(plan, seed, size, full_scale)
    with atomic_dir(out_dir) as tmp:
        for folder in {str(Path(t[0]).parent) for t in tasks}:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        if prelim_rows:
            with open(tmp / PRELIM_LABELS, "w", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(["Patient_ID", "new_names", "labels"])
                writer.writerows(prelim_rows)
        render = functools.partial(_render_to_file, str(tmp), seed, size, styles)
        _run_parallel(render, tasks, threads)
    seconds = time.perf_counter() - start
    summary = summarise(plan, tasks, size, seed, seconds)
    log.info("%s", format_summary(summary, out_dir))
    return summary


def _run_parallel(function, tasks, threads):
    """Call `function(task)` for every task, over `threads` processes, with a progress bar."""
    bar = tqdm(total=len(tasks), desc="synth", unit="img", mininterval=1)
    with bar:
        if threads == 1:
            for task in tasks:
                function(task)
                bar.update()
            return
        chunk = max(1, min(64, len(tasks) // (threads * 8)))
        with concurrent.futures.ProcessPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(function, tasks, chunksize=chunk):
                bar.update()


def summarise(plan, tasks, size, seed, seconds):
    """Counts of subjects and images per fold and class, image sizes and timing, as a dict."""
    folds = {}
    for s in plan:
        cell = folds.setdefault(s.fold, {}).setdefault(s.label, {"subjects": 0, "images": 0})
        cell["subjects"] += 1
        cell["images"] += s.images
    training = [s for s in plan if s.fold != "prelim_test"]
    images = {lab: sum(s.images for s in training if s.label == lab) for lab in ("all", "hem")}
    total = sum(s.images for s in plan)
    return {
        "size": size,
        "seed": seed,
        "training_images": images["all"] + images["hem"],
        "training_all": images["all"],
        "training_hem": images["hem"],
        "all_hem_ratio": images["all"] / images["hem"],
        "prelim_images": total - images["all"] - images["hem"],
        "folds": dict(sorted(folds.items())),
        "image_sizes": dict(sorted(Counter(task[4] for task in tasks).items())),
        "seconds": seconds,
        "files_per_s": total / seconds if seconds > 0 else float("inf"),
    }


def format_summary(summary, out_dir):
    """A few readable lines: subjects and images per class per fold, and time taken."""
    lines = [
        f"synthetic C-NMC dataset in {out_dir} ({summary['size']} px, seed {summary['seed']}):"
    ]
    for fold, classes in summary["folds"].items():
        parts = [
            f"{label} {c['subjects']} subjects / {c['images']} images"
            for label, c in sorted(classes.items())
        ]
        lines.append(f"  fold {fold}: " + ", ".join(parts))
    lines.append(
        f"  training {summary['training_images']} images "
        f"(all {summary['training_all']}, hem {summary['training_hem']}, "
        f"ratio {summary['all_hem_ratio']:.2f}), prelim test {summary['prelim_images']}; "
        f"{summary['seconds']:.1f} s, {summary['files_per_s']:.0f} files/s"
        + "".join(f"; {n} at {px} px" for px, n in summary["image_sizes"].items())
    )
    return "\n".join(lines)
