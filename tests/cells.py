"""Small real image files in the C-NMC layout, for tests (the cells are `data.synth`'s)."""

import functools
import io
import os
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


@functools.cache
def _bomb_png():
    """The bytes of a 20,000 x 20,000 PNG of mode "1" (about 50 KB), made once per process."""
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_bomb(path):
    """Write a decompression bomb: a 20,000 x 20,000 PNG (400 megapixels) of about 50 KB."""
    Path(path).write_bytes(_bomb_png())
    return Path(path)


def write_bad_images(folder):
    """One file of every kind the image reader must turn into a bad image, in `folder/all/`,
    each named by the C-NMC convention; return {path relative to `folder`: reason fragment}.

    A 20,000 x 20,000 PNG (a decompression bomb: mode "1", about 50 KB on disk), a file PIL
    cannot identify, a 1 x 1 image, a dangling and a looping symbolic link, a FIFO (opened,
    it would wait for a writer forever) and a file that changes while read (a link to
    /proc/self/status: its size is 0 when opened, yet reading it gives bytes).
    """
    folder = Path(folder) / "all"
    folder.mkdir(parents=True, exist_ok=True)
    write_bomb(folder / "UID_90_1_1_all.png")
    (folder / "UID_90_2_1_all.bmp").write_text("a note saved under an image's name")
    Image.new("RGB", (1, 1), (200, 80, 160)).save(folder / "UID_90_3_1_all.png")
    os.symlink("gone/UID_90_4_1_all.bmp", folder / "UID_90_4_1_all.bmp")
    os.symlink("UID_90_6_1_all.bmp", folder / "UID_90_5_1_all.bmp")
    os.symlink("UID_90_5_1_all.bmp", folder / "UID_90_6_1_all.bmp")
    os.mkfifo(folder / "UID_90_7_1_all.bmp")
    os.symlink("/proc/self/status", folder / "UID_90_8_1_all.bmp")
    return {
        "all/UID_90_1_1_all.png": "decompression bomb",
        "all/UID_90_2_1_all.bmp": "not an image file",
        "all/UID_90_3_1_all.png": "absurd size",
        "all/UID_90_4_1_all.bmp": "missing: dangling symbolic link to gone/UID_90_4_1_all.bmp",
        "all/UID_90_5_1_all.bmp": "looping symbolic link",
        "all/UID_90_6_1_all.bmp": "looping symbolic link",
        "all/UID_90_7_1_all.bmp": "not a regular file: a FIFO",
        "all/UID_90_8_1_all.bmp": "changed while read",
    }


GOOD_CELLS = ("all/UID_1_1_1_all.bmp", "all/UID_3_1_1_all.bmp", "hem/UID_H2_1_1_hem.bmp")


def good_and_bad_images(root):
    """`GOOD_CELLS` (three subjects) beside one file of every bad kind (`write_bad_images`)
    and a note (`notes.txt`); return the bad files' {path relative to root: reason fragment}."""
    root = Path(root)
    for seed, name in enumerate(GOOD_CELLS):
        write_cell(root / name, seed)
    (root / "notes.txt").write_text("scanned on the old microscope\n")
    return write_bad_images(root)
