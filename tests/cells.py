"""Small real image files in the C-NMC layout, for tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_cell(path, seed, size=32, mode="RGB"):
    """Write a small cell-like image (a disc on black) and return its path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    image = np.zeros((size, size, 3), np.uint8)
    image[disc] = rng.integers(60, 220, size=(int(disc.sum()), 3))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).convert(mode).save(path)
    return path


def make_cnmc_tree(root, all_subjects=(1, 2, 3, 4, 5, 6), hem_subjects=("H1", "h2", "H3"), per=3):
    """A tiny dataset in the C-NMC training layout; subjects spread over folds 0-2."""
    root = Path(root)
    seed = 0
    for i, subject in enumerate(list(all_subjects) + list(hem_subjects)):
        label = "hem" if str(subject).lower().startswith("h") else "all"
        fold = i % 3
        for image in range(per):
            seed += 1
            name = f"UID_{subject}_{image}_1_{label}.bmp"
            write_cell(root / "training_data" / f"fold_{fold}" / label / name, seed)
    return root
