"""Ingest a C-NMC 2019 dataset folder into a manifest (and a quarantine list of bad files).

Layouts understood:
- `training_data/fold_{0,1,2}/{all,hem}/UID_{subject}_{image}_{cell}_{all|hem}.bmp`
- `validation_data/C-NMC_test_prelim_phase_data/N.bmp` with labels in
  `validation_data/C-NMC_test_prelim_phase_data_labels.csv` (`Patient_ID,new_names,labels`)
- a plain `{all,hem}/` tree of conventionally named files (fold `none`).
Every file is read once: the SHA-256 and the image check use the same bytes. Anything in the
tree that is not a folder counts (a symbolic link that leads nowhere, a FIFO): with an image
extension it is a candidate, and `leukoflow.data.images` says why it cannot be read.
"""

import hashlib
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from leukoflow.core.errors import LeukoflowError
from leukoflow.data.images import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    decode_rgb,
    is_image_name,
    read_image_file,
)

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(
    r"^UID_(?P<subject>[Hh]?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)$"
)
PRELIM_DIR = Path("validation_data/C-NMC_test_prelim_phase_data")
PRELIM_LABELS = Path("validation_data/C-NMC_test_prelim_phase_data_labels.csv")
LABELS = ("all", "hem")
MANIFEST_COLUMNS = ["path", "label", "subject", "fold", "width", "height", "sha256"]
QUARANTINE_COLUMNS = ["path", "reason"]


class BadDatasetError(LeukoflowError):
    """The dataset has bad files and the mode is `error`; the message lists every one."""


@dataclass
class Candidate:
    """An image file found in the dataset, with what its location and name say about it."""

    path: str  # relative to the dataset root
    fold: str
    label: str = ""  # "" when the location or name gives none
    subject: str = ""
    problem: str = ""  # a naming problem found before reading the file


@dataclass
class Ingested:
    """The result of an ingest: manifest rows, quarantine rows and the counts that reconcile."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    ignored: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        """Image candidates found (ignored non-image files excluded)."""
        return len(self.manifest) + len(self.quarantine)


def parse_name(name: str | Path) -> tuple[str, str]:
    """Parse a C-NMC file name `UID_{subject}_{image}_{cell}_{all|hem}.bmp`.

    Args:
        name: the file name or path (only its stem counts).

    Returns:
        (subject, label): the subject normalised (`h3` and `H3` are one subject, written
        `H3`) and `all` or `hem`.

    Raises:
        ValueError: with the reason, when the name is outside the convention.
    """
    match = NAME_PATTERN.match(Path(name).stem)
    if not match:
        raise ValueError(
            f"name {Path(name).name!r} is outside the C-NMC convention "
            "UID_{subject}_{image}_{cell}_{all|hem}.bmp"
        )
    return match["subject"].upper(), match["label"]


def _named_candidate(rel, fold, folder_label):
    """A candidate whose class comes from its folder and its subject from its name."""
    try:
        subject, label = parse_name(rel.name)
    except ValueError as error:
        return Candidate(str(rel), fold, folder_label, problem=str(error))
    if label != folder_label:
        return Candidate(
            str(rel),
            fold,
            folder_label,
            subject,
            problem=f"name says {label!r} but the file is in the {folder_label!r} folder",
        )
    return Candidate(str(rel), fold, label, subject)


def _prelim_candidates(root, files):
    """Candidates of the preliminary-test set, labelled from its CSV."""
    labels_path = root / PRELIM_LABELS
    if not labels_path.is_file():
        raise LeukoflowError(
            f"{labels_path}: missing; the preliminary-test images need their labels CSV "
            "(Patient_ID,new_names,labels)"
        )
    table = pd.read_csv(labels_path, dtype=str)
    expected = {"Patient_ID", "new_names", "labels"}
    if not expected <= set(table.columns):
        raise LeukoflowError(
            f"{labels_path}: columns {sorted(table.columns)}; expected {sorted(expected)}"
        )
    by_name = table.set_index("new_names")
    listed = set(by_name.index)
    candidates = []
    for rel in files:
        if rel.name not in listed:
            candidates.append(
                Candidate(str(rel), "prelim_test", problem="no row in the labels CSV")
            )
            continue
        row = by_name.loc[rel.name]
        label = {"1": "all", "0": "hem"}.get(str(row["labels"]).strip(), "")
        try:
            subject, name_label = parse_name(row["Patient_ID"])
        except ValueError as error:
            candidates.append(Candidate(str(rel), "prelim_test", problem=f"Patient_ID: {error}"))
            continue
        if not label or name_label != label:
            problem = f"label {row['labels']!r} disagrees with Patient_ID {row['Patient_ID']!r}"
            candidates.append(Candidate(str(rel), "prelim_test", problem=problem))
            continue
        candidates.append(Candidate(str(rel), "prelim_test", label, subject))
    missing = listed - {rel.name for rel in files}
    if missing:
        log.warning("%d images listed in %s are missing", len(missing), labels_path)
    return candidates


def find_candidates(root: str | Path) -> tuple[list[Candidate], list[str]]:
    """Walk the dataset and say what each image file's location and name tell.

    Args:
        root: the dataset folder.

    Returns:
        (candidates, ignored): the image candidates sorted by path, and the non-image
        files (paths relative to `root`) other than the preliminary-test labels CSV.
        Every entry that is not a folder counts as a file (a symbolic link to a folder
        is not followed), so a dangling link with an image name is a candidate.

    Raises:
        LeukoflowError: when `root` is not a folder or holds no image, or when it has
            preliminary-test images and their labels CSV is missing or lacks columns.
    """
    root = Path(root)
    if not root.is_dir():
        raise LeukoflowError(f"{root}: dataset folder does not exist")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if not p.is_dir())
    images = [rel for rel in files if is_image_name(rel)]
    ignored = [str(rel) for rel in files if not is_image_name(rel) and rel != PRELIM_LABELS]
    candidates = []
    prelim = []
    for rel in images:
        parts = rel.parts
        if rel.parent == PRELIM_DIR:
            prelim.append(rel)
        elif (
            len(parts) == 4 and parts[0] == "training_data" and re.fullmatch(r"fold_\d+", parts[1])
        ):
            if parts[2] in LABELS:
                candidates.append(_named_candidate(rel, parts[1][5:], parts[2]))
            else:
                candidates.append(
                    Candidate(str(rel), parts[1][5:], problem="not in an all/ or hem/ folder")
                )
        elif len(parts) >= 2 and parts[-2] in LABELS:
            candidates.append(_named_candidate(rel, "none", parts[-2]))
        else:
            candidates.append(Candidate(str(rel), "none", problem="not in an all/ or hem/ folder"))
    candidates += _prelim_candidates(root, prelim) if prelim else []
    if not candidates:
        raise LeukoflowError(
            f"{root}: no images found; expected training_data/fold_*/{{all,hem}}/*.bmp "
            "or an {all,hem}/ tree"
        )
    return sorted(candidates, key=lambda c: c.path), ignored


def check_file(args: tuple[str, str, int]) -> tuple[str, int, int, str]:
    """Read one file once: its SHA-256 and the image check come from the same bytes.

    Args:
        args: (dataset root, path relative to it, max_pixels), one tuple so that a process
            pool's `map` can pass it.

    Returns:
        (sha256, width, height, problem): problem is "" for a good RGB image, else the
        reason (`leukoflow.data.images.BadImageError`'s; sha256 "" when the file cannot be
        read; width and height 0 when bad).
    """
    root, rel, max_pixels = args
    try:
        data = read_image_file(Path(root) / rel, max_pixels)
    except BadImageError as error:
        return "", 0, 0, error.reason
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = decode_rgb(data, rel, max_pixels)
    except BadImageError as error:
        return digest, 0, 0, error.reason
    return digest, image.shape[1], image.shape[0], ""


def _leaked(rows):
    """Reasons for files whose bytes also appear under another subject: {path: reason}."""
    if not rows:
        return {}
    frame = pd.DataFrame(rows)
    reasons = {}
    for _, group in frame.groupby("sha256"):
        if group["subject"].nunique() > 1:
            for path in group["path"]:
                others = ", ".join(
                    f"{p} (subject {s})"
                    for p, s in zip(group["path"], group["subject"])
                    if p != path
                )
                reasons[path] = f"identical bytes under another subject: {others} (leakage)"
    return reasons


def ingest(root: str | Path, threads: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> Ingested:
    """Check every image candidate under `root`; bad files become quarantine rows.

    A file is bad when its location or name breaks the convention, it is not a readable
    RGB image of at most `max_pixels` pixels (`leukoflow.data.images`: missing, a dangling
    or looping link, not a regular file, changed while read, a decompression bomb...), or
    its bytes also appear under another subject (leakage). A file with both a naming and
    a reading problem gets both reasons.

    Args:
        root: the dataset folder.
        threads: worker processes that read and check the files.
        max_pixels: the largest image (width x height) accepted.

    Returns:
        The manifest (`MANIFEST_COLUMNS`), quarantine (`QUARANTINE_COLUMNS`) and ignored
        files.

    Raises:
        LeukoflowError: as `find_candidates`.
    """
    candidates, ignored = find_candidates(root)
    jobs = [(str(root), c.path, max_pixels) for c in candidates]
    with ProcessPoolExecutor(max_workers=max(1, threads)) as pool:
        checks = list(
            tqdm(
                pool.map(check_file, jobs, chunksize=32),
                total=len(jobs),
                desc="ingest",
                unit="file",
            )
        )
    rows = []
    for candidate, (digest, width, height, problem) in zip(candidates, checks):
        rows.append(
            {
                "path": candidate.path,
                "label": candidate.label,
                "subject": candidate.subject,
                "fold": candidate.fold,
                "width": width,
                "height": height,
                "sha256": digest,
                "reason": "; ".join(filter(None, [problem, candidate.problem])),
            }
        )
    leaked = _leaked([row for row in rows if not row["reason"]])
    for row in rows:
        row["reason"] = row["reason"] or leaked.get(row["path"], "")
    frame = pd.DataFrame(rows)
    bad = frame["reason"] != ""
    return Ingested(
        manifest=frame.loc[~bad, MANIFEST_COLUMNS].reset_index(drop=True),
        quarantine=frame.loc[bad, QUARANTINE_COLUMNS].reset_index(drop=True),
        ignored=ignored,
    )


def write_ingest(
    result: Ingested,
    manifest_path: str | Path,
    quarantine_path: str | Path | None = None,
    on_bad: str = "error",
) -> None:
    """Write the manifest (and quarantine list), atomically; log the counts.

    The log reconciles the counts: found = used + quarantined (+ ignored non-image files).

    Args:
        result: what `ingest` found.
        manifest_path: the manifest CSV to write.
        quarantine_path: the quarantine CSV to write; None: not written.
        on_bad: `error` (write nothing if any file is bad) or `quarantine`.

    Raises:
        LeukoflowError: for another `on_bad`.
        BadDatasetError: in `error` mode when any file is bad, listing every one.
    """
    from leukoflow.core.atomic import atomic_path

    if on_bad not in ("error", "quarantine"):
        raise LeukoflowError(f"ingest.on_bad {on_bad!r}; allowed: error, quarantine")
    quarantined = result.quarantine
    if on_bad == "error" and len(quarantined):
        listing = "\n".join(f"  {row.path}: {row.reason}" for row in quarantined.itertuples())
        raise BadDatasetError(
            f"{len(quarantined)} bad file(s) of {result.found}; fix or remove them, "
            'or run with --ingest \'{"on_bad": "quarantine"}\':\n' + listing
        )
    with atomic_path(manifest_path) as tmp:
        result.manifest.to_csv(tmp, index=False)
    if quarantine_path is not None:
        with atomic_path(quarantine_path) as tmp:
            quarantined.to_csv(tmp, index=False)
    for row in quarantined.itertuples():
        log.warning("quarantined %s: %s", row.path, row.reason)
    log.info(
        "found %d image files = %d used + %d quarantined; %d non-image files ignored",
        result.found,
        len(result.manifest),
        len(quarantined),
        len(result.ignored),
    )
    summary = result.manifest.groupby(["fold", "label"]).agg(
        subjects=("subject", "nunique"), images=("path", "size")
    )
    log.info("manifest by fold and class:\n%s", summary.to_string())
