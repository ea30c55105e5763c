"""Small real image files in the C-NMC layout, for tests (the cells are `data.synth`'s)."""

from pathlib import Path

from PIL import Image

from leukoflow.data import synth


def write_cell(path, seed, size=32, mode="RGB"):
    """Write one synthetic cell (`synth.cells` of `seed`) in PIL `mode`; return its path."""
    images, _, _ = synth.cells(1, size, seed=seed, subjects=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(images[0]).convert(mode).save(path)
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
