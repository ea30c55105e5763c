"""Synthetic C-NMC-shaped dataset: single stained cells on black, in the real layout and names.

The generator carries the properties that make the real problem hard:

- per-subject stain shifts: colours follow a Beer-Lambert optical-density (OD) model,
  ``I = I0 * exp(-(c_H * v_H + c_E * v_E))``, with haematoxylin/eosin-like stain vectors
  ``v_H``, ``v_E`` and concentration scales perturbed per subject (so Macenko-type stain
  normalisation can undo most of the shift);
- per-subject morphology offsets (cell size, nucleus-to-cytoplasm ratio, elongation,
  chromatin density and texture, contour irregularity), so a split that leaks subjects
  scores better than a subject-disjoint one;
- overlapping class morphology: blasts (``all``) are larger on average, with a larger
  nucleus-to-cytoplasm ratio, finer and paler chromatin, mostly 1-3 nucleoli and more irregular
  nuclei; normal cells (``hem``) are smaller with condensed, darker, coarser chromatin.

Every image is drawn from its own random generator, seeded from (seed, subject, image), so
the files are byte-identical for the same arguments whatever the number of processes.
"""

import concurrent.futures
import csv
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from leukoflow.atomic import atomic_dir
from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

ALL_FRACTION = 2.15 / 3.15  # ALL:hem = 2.15:1 in the C-NMC 2019 training set
FULL_SCALE = {"all_subjects": 47, "hem_subjects": 26, "all_images": 7272, "hem_images": 3389}
FULL_SCALE_SIZE = 450
LARGE_SIZE = 600  # a few real images are 600x600: the 450 px cell padded with black
LARGE_FRACTION = 0.01  # share of full-scale images written at LARGE_SIZE
LOWERCASE_HEM_SUBJECT = 3  # real data holds `UID_h3_...`: hem subject 3 is written `h3`
PRELIM_DIR = "validation_data/C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"

# Macenko's reference H&E stain vectors (unit vectors in RGB optical-density space).
STAIN_H = np.array([0.5626, 0.7201, 0.4062])
STAIN_E = np.array([0.2159, 0.8012, 0.5581])

# Class means of the per-image morphology (units: fractions of the canvas half-width, or
# relative concentrations), the per-image spread, and the per-subject spread of the offset.
MORPHOLOGY = {
    #                  all    hem   image sd  subject sd
    "cell_radius": (0.56, 0.49, 0.065, 0.04),
    "nc_ratio": (0.80, 0.74, 0.05, 0.03),
    "chromatin": (0.98, 1.16, 0.15, 0.08),
    "texture_grid": (24.0, 16.0, 6.0, 3.0),
    "texture_contrast": (0.17, 0.26, 0.07, 0.03),
    "rim": (0.12, 0.28, 0.12, 0.06),
    "irregularity": (0.05, 0.033, 0.015, 0.01),
    "cyto_h": (0.13, 0.08, 0.04, 0.02),
}
NUCLEUS_E = 0.05  # eosin-like concentration in the nucleus
CYTOPLASM_E = 0.8  # eosin-like concentration in the cytoplasm
NUCLEOLI_P = {"all": (0.25, 0.35, 0.25, 0.15), "hem": (0.60, 0.30, 0.10, 0.0)}


@dataclass(frozen=True)
class Subject:
    """One synthetic subject: its label, name in file names, fold and image count."""

    index: int  # unique over the dataset, seeds the subject's random streams
    label: str  # "all" or "hem"
    name: str  # as written in file names: "11", "H10", "h3"
    fold: str  # "0", "1", "2" or "prelim_test"
    images: int


def subject_style(rng):
    """Draw one subject's stain and morphology offsets; a dict of floats and (3,) arrays.

    The morphology offsets are centred on zero for both classes: they shift a subject's
    cells away from its class mean without carrying the class.
    """
    style = {
        "stain_h": _perturb_vector(rng, STAIN_H, 0.05),
        "stain_e": _perturb_vector(rng, STAIN_E, 0.05),
        "scale_h": float(np.exp(rng.normal(0.0, 0.18))),
        "scale_e": float(np.exp(rng.normal(0.0, 0.22))),
        "illumination": np.clip(245.0 + rng.normal(0.0, 3.0, 3), 235.0, 255.0),
        "aspect": float(rng.uniform(0.80, 0.97)),
    }
    for key, (_, _, _, subject_sd) in MORPHOLOGY.items():
        style[key] = float(rng.normal(0.0, subject_sd))
    return style


def _perturb_vector(rng, vector, sd):
    """A unit vector near `vector` (3,) with every component moved by N(0, sd), kept positive."""
    moved = np.abs(vector + rng.normal(0.0, sd, 3)) + 1e-3
    return moved / np.linalg.norm(moved)


def _morphology(rng, label, style):
    """Per-image morphology: class mean + subject offset + image noise, for each MORPHOLOGY key."""
    column = 0 if label == "all" else 1
    return {
        key: float(values[column] + style[key] + rng.normal(0.0, values[2]))
        for key, values in MORPHOLOGY.items()
    }


@functools.lru_cache(maxsize=8)
def _axis(size):
    """Pixel-centre coordinates (size,) in units of the canvas half-width, from -1 to 1."""
    return ((np.arange(size, dtype=np.float32) + 0.5) - size / 2) / (size / 2)


def smooth_noise(rng, grid, size, crop=0):
    """Smooth noise (n, n) float32, n = size - 2 * crop, with about zero mean and unit sd.

    A (grid, grid) field of standard normals upsampled bicubically to (size, size): `grid`
    sets the feature size (about size / grid pixels); only the centre square without a
    `crop`-pixel margin is computed.
    """
    grid = int(np.clip(round(grid), 2, size))
    coarse = rng.standard_normal((grid, grid), dtype=np.float32)
    n, lo, hi = size - 2 * crop, crop * grid / size, (size - crop) * grid / size
    field = np.array(
        Image.fromarray(coarse).resize((n, n), Image.Resampling.BICUBIC, box=(lo, lo, hi, hi)),
        dtype=np.float32,
    )
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _shape_alpha(x, y, semi_a, semi_b, harmonics, pixel):
    """Soft mask (anti-aliased, 0..1) of a rotated ellipse whose contour wobbles.

    x, y: coordinates already centred and rotated into the ellipse frame (broadcastable);
    harmonics: (k, 2) amplitudes of cos/sin terms of order 2, 3, ...; pixel: pixel width.
    """
    semi_a, semi_b = float(semi_a), float(semi_b)
    xs, ys = x / semi_a, y / semi_b
    rho = np.sqrt(xs * xs + ys * ys) + 1e-6
    cos1, sin1 = xs / rho, ys / rho
    cos_k, sin_k = cos1 * cos1 - sin1 * sin1, 2 * sin1 * cos1  # order 2
    radius = 1.0
    for amp_cos, amp_sin in harmonics:
        radius = radius + amp_cos * cos_k + amp_sin * sin_k
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
    return np.clip((radius - rho) * (min(semi_a, semi_b) / pixel) + 0.5, 0.0, 1.0), rho


def _frame(u, v, centre, angle):
    """Coordinates (u, v) moved to `centre` and rotated by `angle` (radians)."""
    du, dv = u - float(centre[0]), v - float(centre[1])
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return du * c + dv * s, dv * c - du * s


def _harmonics(rng, amplitude, orders=4):
    """(orders, 2) contour harmonics of orders 2.. with amplitude falling as 1/order."""
    scale = amplitude / np.arange(2, orders + 2)[:, None]
    return (rng.normal(0.0, 1.0, (orders, 2)) * scale).tolist()


def render_cell(rng, label, subject_style, size):
    """Render one cell image: uint8 (size, size, 3) RGB, background exactly (0, 0, 0).

    label: "all" or "hem"; subject_style: from `subject_style`; all random choices are
    drawn from `rng`.
    """
    m = _morphology(rng, label, subject_style)
    pixel = 2.0 / size
    aspect = float(np.clip(subject_style["aspect"] + rng.normal(0.0, 0.05), 0.70, 1.0))
    irregular = max(m["irregularity"], 0.005)
    centre = rng.normal(0.0, 0.04, 2)
    cell_harm = _harmonics(rng, 0.03)
    wobble = 1 + float(np.abs(cell_harm).sum())
    fits = (1 - np.abs(centre).max() - 3 * pixel) / wobble  # the cell never touches the border
    radius = float(np.clip(m["cell_radius"], 0.30, min(0.80, fits)))
    extent = radius * wobble + np.abs(centre).max() + 2 * pixel
    lo = int(np.clip(np.floor((1 - extent) * size / 2), 0, size // 2))
    axis = _axis(size)[lo : size - lo]
    u, v = axis[None, :], axis[:, None]

    x, y = _frame(u, v, centre, rng.uniform(0, np.pi))
    cell, _ = _shape_alpha(x, y, radius, radius * aspect, cell_harm, pixel)

    nc = float(np.clip(m["nc_ratio"], 0.5, 0.93))
    nuc_a = radius * aspect * nc
    nuc_b = nuc_a * rng.uniform(0.82, 1.0)
    room = radius * aspect - nuc_a
    offset = room * rng.uniform(0.0, 0.6) * np.array(_unit(rng.uniform(0, 2 * np.pi)))
    x, y = _frame(u, v, centre + offset, rng.uniform(0, np.pi))
    nucleus, rho = _shape_alpha(x, y, nuc_a, nuc_b, _harmonics(rng, irregular), pixel)
    nucleus *= cell

    n = axis.size
    fine = smooth_noise(rng, m["texture_grid"], size, lo)
    coarse = smooth_noise(rng, 6, size, lo)
    contrast = max(m["texture_contrast"], 0.04)
    rim = max(m["rim"], 0.0)
    texture = np.maximum(1 + contrast * fine, 0.3)
    chromatin = max(m["chromatin"], 0.4) * texture * (1 + rim * np.minimum(rho, 1) ** 4)
    for _ in range(rng.choice(4, p=NUCLEOLI_P[label])):
        spot = rng.uniform(0.0, 0.55) * np.array(_unit(rng.uniform(0, 2 * np.pi))) * nuc_a
        r_spot = nuc_a * rng.uniform(0.09, 0.15)
        where = centre + offset + spot
        rows, cols = (_window(c, r_spot, size, lo, n) for c in where[::-1])
        sx, sy = _frame(u[:, cols], v[rows], where, 0.0)
        disk, _ = _shape_alpha(sx, sy, r_spot, r_spot * rng.uniform(0.75, 1), (), pixel)
        chromatin[rows, cols] *= 1 - 0.5 * disk

    cyto_h = max(m["cyto_h"], 0.05) * (1 + 0.15 * coarse)
    cyto_e = CYTOPLASM_E * (1 + 0.15 * coarse)
    conc_h = subject_style["scale_h"] * (nucleus * chromatin + (1 - nucleus) * cyto_h)
    conc_e = subject_style["scale_e"] * (nucleus * NUCLEUS_E + (1 - nucleus) * cyto_e)
    inside = (cell >= 0.5).astype(np.float32)  # segmented: a hard edge onto black, as in C-NMC
    sensor = rng.standard_normal(inside.shape, dtype=np.float32) * 2.0
    image = np.zeros((size, size, 3), np.uint8)
    for c in range(3):  # Beer-Lambert, one channel at a time
        od = conc_h * float(subject_style["stain_h"][c]) + conc_e * float(
            subject_style["stain_e"][c]
        )
        light = float(subject_style["illumination"][c]) * np.exp(-od) + sensor
        light *= inside
        image[lo : lo + n, lo : lo + n, c] = np.clip(light + 0.5, 0, 255)  # rounds
    return image


def _window(coordinate, radius, size, lo, n):
    """Slice of crop pixels (crop starts at pixel `lo`, n long) within `radius` of `coordinate`."""
    centre = coordinate * size / 2 + size / 2 - 0.5 - lo
    reach = radius * size / 2 + 2
    return slice(int(max(0, np.floor(centre - reach))), int(min(n, np.ceil(centre + reach) + 1)))


def _unit(angle):
    return np.cos(angle), np.sin(angle)


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
    out_dir,
    subjects=24,
    images_per_subject=12,
    size=128,
    seed=0,
    threads=1,
    prelim_subjects=None,
    full_scale=False,
):
    """Write a synthetic C-NMC 2019-shaped dataset to `out_dir`; return a summary dict.

    Layout: `training_data/fold_{0,1,2}/{all,hem}/UID_*.bmp` and the preliminary test set
    `validation_data/C-NMC_test_prelim_phase_data/N.bmp` with its labels CSV. The whole
    folder is built under a temporary name and renamed at the end. `full_scale` writes the
    C-NMC 2019 training set's size (73 subjects, 10,661 images at 450 px, a few at 600 px)
    and ignores `subjects`, `images_per_subject` and `size`.
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
