"""A self-contained copy of a bundle to move to another machine (`leukoflow export`).

An ensemble bundle in `results/models/` refers to its members' model bundles beside it
(`leukoflow.deploy.bundle`); its export holds every member's Keras and ONNX files under
`members/` (`members/ARCH.keras`, `members/ARCH.onnx`), a model bundle's keeps its own names.
Every file is checked against the sha256 bundle.json records before it is copied, the copy's
bundle.json names the copied files with their checksums, the model card is made again from
it, and `SHA256SUMS` lists every file of the copy (`sha256sum -c SHA256SUMS` checks it on
any machine, without leukoflow).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path, PurePosixPath

from leukoflow.core.atomic import atomic_dir
from leukoflow.core.errors import LeukoflowError
from leukoflow.deploy.bundle import (
    MEMBERS_DIR,
    META_FILE,
    MODEL_FILE,
    checked_file,
    file_sha256,
    onnx_file_name,
    onnx_missing,
    read_meta,
)
from leukoflow.deploy.modelcard import CARD_FILE, render_card

log = logging.getLogger(__name__)

MANIFEST_FILE = "SHA256SUMS"


def _own_name(entry: dict, kind: str) -> str:
    """Where a member's Keras file goes in the copy: its own name when it lies inside the
    bundle; when the bundle refers to a file outside it, `model.keras` for a model bundle and
    `members/ARCH.keras` for an ensemble's member."""
    file = PurePosixPath(entry["file"])
    if ".." not in file.parts:
        return str(file)
    if kind == "model":
        return MODEL_FILE
    return f"{MEMBERS_DIR}/{entry['architecture']}.keras"


def _copy(bundle_dir: Path, file: str, sha256: str | None, folder: Path, name: str) -> str:
    """Copy a checked file of the bundle to `folder / name`; the copy's sha256."""
    source = checked_file(bundle_dir, file, sha256)
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / name)
    return file_sha256(folder / name)


def write_manifest(folder: Path) -> Path:
    """Write `SHA256SUMS` (the `sha256sum` format, paths relative to `folder`, sorted) over
    every file under `folder` but itself; returns its path."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder) != Path(MANIFEST_FILE)
    )
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    (folder / MANIFEST_FILE).write_text("".join(lines))
    return folder / MANIFEST_FILE


def export_bundle(bundle_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a self-contained copy of the bundle `bundle_dir` to `out_dir` (replaced as a
    whole, atomically).

    Args:
        bundle_dir: a model or ensemble bundle (its members' files inside it or referred to).
        out_dir: the folder to write; it must not be `bundle_dir` nor lie inside it.

    Returns:
        The path of the copy's `SHA256SUMS`.

    Raises:
        LeukoflowError: as `leukoflow.deploy.bundle.read_meta`; naming the file when a
            member's file is missing or differs from its recorded sha256; when `out_dir` is
            `bundle_dir` or lies inside it.
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    meta = read_meta(bundle_dir)
    if out_dir.resolve().is_relative_to(bundle_dir.resolve()):
        raise LeukoflowError(f"export folder {out_dir} lies inside the bundle {bundle_dir}")
    with atomic_dir(out_dir) as tmp:
        for entry in meta["members"]:
            name = _own_name(entry, meta.get("kind", "model"))
            entry["sha256"] = _copy(bundle_dir, entry["file"], entry.get("sha256"), tmp, name)
            entry["file"] = name
            if not onnx_missing(entry):
                onnx, onnx_name = entry["onnx"], onnx_file_name(name)
                onnx["sha256"] = _copy(bundle_dir, onnx["file"], onnx.get("sha256"), tmp, onnx_name)
                onnx["file"] = onnx_name
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(render_card(meta))
        write_manifest(tmp)
    log.info("self-contained copy of %s written to %s", bundle_dir, out_dir)
    return out_dir / MANIFEST_FILE
