"""How one synthetic cell is drawn: a stained cell on black, in the C-NMC manner.

The renderer carries the properties that make the real problem hard:

- Romanowsky colours from three absorbers: a Beer-Lambert optical-density (OD) model,
  ``I = I0 * exp(-sum_k c_k * v_k)``, with the unit OD vectors ``v_k`` of `ABSORBERS`
  (azure B bound to chromatin, methylene blue, eosin Y): nuclei blue-purple, cytoplasm
  pale blue with a faint pink, as in Wright / May-Gruenwald-Giemsa smears. Three absorbers
  span three OD dimensions, so a two-stain method (Macenko) cannot fit a cell exactly;
- per-subject stain shifts: each absorber's hue (its OD vector), the overall intensity,
  the balance of the three absorbers and the illumination vary by subject;
- per-subject morphology offsets (cell size, nucleus-to-cytoplasm ratio, elongation,
  chromatin density and texture, contour irregularity), so a split that leaks subjects
  scores better than a subject-disjoint one;
- overlapping class morphology: blasts (``all``) are larger on average, with a larger
  nucleus-to-cytoplasm ratio, finer and paler chromatin, mostly 1-3 nucleoli and more irregular
  nuclei; normal cells (``hem``) are smaller with condensed, darker, coarser chromatin.

This is the only place that draws cells: `leukoflow.data.synth.samples` (cells as arrays, files
or a store) and `leukoflow.data.synth.dataset` (the C-NMC layout) call `render_cell`.
"""

import functools

import numpy as np
from PIL import Image

# The three absorbers of a Romanowsky stain: unit optical-density vectors (R, G, B).
ABSORBERS = {
    # azure B bound to chromatin with eosin (the Romanowsky purple, absorbing near 550 nm)
    "azure_b": np.array([0.4997, 0.8294, 0.2498]),
    # methylene blue (absorbing near 664 nm: red light): basophilic cytoplasm, pale blue
    "methylene_blue": np.array([0.8803, 0.4501, 0.1500]),
    # eosin Y (absorbing near 517 nm: green light): a faint pink
    "eosin_y": np.array([0.1003, 0.7519, 0.6516]),
}

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
    "cyto_blue": (0.16, 0.11, 0.04, 0.02),
}
# Concentrations besides the chromatin (nucleus) and `cyto_blue` (cytoplasm) of MORPHOLOGY
# methylene blue in the nucleus per unit of chromatin density. It and the eosin lie in
# patches of their own (relative spread PATCH_CONTRAST), not following the chromatin's
# texture: clumped chromatin is purpler, the parachromatin and nucleoli bluer
NUCLEUS_BLUE = 0.3
NUCLEUS_EOSIN = 0.15
CYTOPLASM_AZURE = 0.03
CYTOPLASM_EOSIN = 0.09
PATCH_CONTRAST = 0.6
NUCLEOLI_P = {"all": (0.25, 0.35, 0.25, 0.15), "hem": (0.60, 0.30, 0.10, 0.0)}


def subject_style(rng: np.random.Generator) -> dict:
    """Draw one subject's stain and morphology offsets.

    The morphology offsets are centred on zero for both classes: they shift a subject's
    cells away from its class mean without carrying the class.

    Args:
        rng: the generator every value is drawn from.

    Returns:
        {name: float or array}: `absorbers` (3, 3), the subject's OD vector of each of
        `ABSORBERS` (columns, in its order: the hue), `amounts` (3,), each absorber's
        concentration scale (the intensity times the stain balance), `illumination` (3,),
        `aspect`, and one offset per `MORPHOLOGY` key.
    """
    intensity = np.exp(rng.normal(0.0, 0.2))
    style = {
        "absorbers": np.stack([_perturb_vector(rng, v, 0.05) for v in ABSORBERS.values()], 1),
        "amounts": intensity * np.exp(rng.normal(0.0, 0.2, len(ABSORBERS))),
        "illumination": np.clip(242.0 + rng.normal(0.0, 6.0, 3), 225.0, 255.0),
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


def smooth_noise(rng: np.random.Generator, grid: float, size: int, crop: int = 0) -> np.ndarray:
    """Smooth noise with about zero mean and unit sd.

    A (grid, grid) field of standard normals upsampled bicubically to (size, size); only the
    centre square without a `crop`-pixel margin is computed.

    Args:
        rng: the generator of the coarse field.
        grid: side of the coarse field (rounded, 2..size): the features are about
            size / grid pixels.
        size: side of the full field, px.
        crop: margin left out on each side, px.

    Returns:
        float32 (n, n), n = size - 2 * crop.
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


def render_cell(rng: np.random.Generator, label: str, subject_style: dict, size: int) -> np.ndarray:
    """Render one segmented cell on black.

    Args:
        rng: the generator every random choice of this cell is drawn from.
        label: "all" (lymphoblast) or "hem" (normal cell).
        subject_style: the subject's offsets, from `subject_style`.
        size: side of the image, px.

    Returns:
        uint8 (size, size, 3) RGB; the background is exactly (0, 0, 0).
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
    bluish = np.maximum(1 + PATCH_CONTRAST * smooth_noise(rng, 10, size, lo), 0.2)
    pinkish = np.maximum(1 + PATCH_CONTRAST * smooth_noise(rng, 8, size, lo), 0.2)
    contrast = max(m["texture_contrast"], 0.04)
    rim = max(m["rim"], 0.0)
    texture = np.maximum(1 + contrast * fine, 0.3)
    density = max(m["chromatin"], 0.4)
    chromatin = density * texture * (1 + rim * np.minimum(rho, 1) ** 4)
    for _ in range(rng.choice(4, p=NUCLEOLI_P[label])):
        spot = rng.uniform(0.0, 0.55) * np.array(_unit(rng.uniform(0, 2 * np.pi))) * nuc_a
        r_spot = nuc_a * rng.uniform(0.09, 0.15)
        where = centre + offset + spot
        rows, cols = (_window(c, r_spot, size, lo, n) for c in where[::-1])
        sx, sy = _frame(u[:, cols], v[rows], where, 0.0)
        disk, _ = _shape_alpha(sx, sy, r_spot, r_spot * rng.uniform(0.75, 1), (), pixel)
        chromatin[rows, cols] *= 1 - 0.5 * disk

    cytoplasm = (1 - nucleus) * (1 + 0.15 * coarse)
    concentrations = [  # azure B, methylene blue, eosin Y (the order of ABSORBERS)
        nucleus * chromatin + cytoplasm * CYTOPLASM_AZURE,
        nucleus * NUCLEUS_BLUE * density * bluish + cytoplasm * max(m["cyto_blue"], 0.05),
        (nucleus * NUCLEUS_EOSIN + cytoplasm * CYTOPLASM_EOSIN) * pinkish,
    ]
    inside = (cell >= 0.5).astype(np.float32)  # segmented: a hard edge onto black, as in C-NMC
    sensor = rng.standard_normal(inside.shape, dtype=np.float32) * 2.0
    image = np.zeros((size, size, 3), np.uint8)
    absorbers = subject_style["absorbers"] * subject_style["amounts"]
    for c in range(3):  # Beer-Lambert, one channel at a time
        od = sum(float(absorbers[c, k]) * conc for k, conc in enumerate(concentrations))
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
