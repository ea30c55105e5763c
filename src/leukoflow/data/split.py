"""Subject-disjoint splits: holdout (stratified, subjects as groups), official C-NMC folds, k folds.

The split table is the manifest with two columns added: `subset` (train, val or test) and
`cv_fold` (the cross-validation fold of a non-test subject, -1 for none). Every subject
lands in exactly one subset (and one fold); `make_split` checks that before it returns.
`subset_rows` reads a subset of split `main` or of a fold `fold{k}` from the table.

`random_image_split` is the one split that is not subject-disjoint, on purpose: the
ablation's image-level random split, which shows what leakage does to the test figures.

`make_split` warns (log) of every subset with fewer subjects of a class than
`evaluate.min_subjects_per_class` (the test subset's figures will have no interval), and, in
`official` mode, of a preliminary-test folder that holds fewer images than its labels CSV
lists.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from leukoflow.core.errors import LeukoflowError
from leukoflow.data.ingest import PRELIM_LABELS

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
SMALL_SUBSET = {  # what a subset with too few subjects of a class means
    "train": "the models learn from few subjects of a class",
    "val": "the threshold, temperature and referral band are fitted on few subjects",
    "test": "its figures will have no confidence interval and no verdict will rest on them",
}


def _holdout_subjects(manifest, fraction, seed):
    """Pick about `fraction` of the images' subjects, stratified by class, as one held-out group.

    Uses scikit-learn's StratifiedGroupKFold with round(1 / fraction) folds and takes the
    first fold, so classes stay balanced and no subject is cut in two.
    """
    n_splits = max(2, round(1 / fraction))
    subjects = manifest["subject"].nunique()
    if subjects < n_splits:
        raise LeukoflowError(
            f"only {subjects} subjects: too few for a held-out fraction of {fraction:.2f}"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(splitter.split(manifest, manifest["label"], groups=manifest["subject"]))
    return set(manifest["subject"].iloc[held])


def holdout_split(
    manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> pd.DataFrame:
    """Assign `subset` by subject: test first, then validation from the rest.

    Args:
        manifest: the manifest (columns `subject`, `label`).
        val_fraction: share of the images for validation, about.
        test_fraction: share of the images for test, about.
        seed: seed of the draws (validation uses `seed + 1`).

    Returns:
        The manifest with a `subset` column.

    Raises:
        LeukoflowError: when there are too few subjects for the fractions.
    """
    test = _holdout_subjects(manifest, test_fraction, seed)
    rest = manifest[~manifest["subject"].isin(test)]
    val = _holdout_subjects(rest, val_fraction / (1 - test_fraction), seed + 1)
    subset = np.where(
        manifest["subject"].isin(test),
        "test",
        np.where(manifest["subject"].isin(val), "val", "train"),
    )
    return manifest.assign(subset=subset)


def official_split(
    manifest: pd.DataFrame,
    train_folds: Sequence[str],
    val_folds: Sequence[str],
    test_folds: Sequence[str],
) -> pd.DataFrame:
    """Assign `subset` from the C-NMC folds (`0`, `1`, `2`, `prelim_test`).

    Args:
        manifest: the manifest (column `fold`).
        train_folds: folds for training.
        val_folds: folds for validation.
        test_folds: folds for test.

    Returns:
        The manifest rows of the named folds with a `subset` column; images of other
        folds are left out (and logged).

    Raises:
        LeukoflowError: when a fold is given to two subsets or a subset gets no image.
    """
    mapping = {}
    for subset, folds in (("train", train_folds), ("val", val_folds), ("test", test_folds)):
        for fold in folds:
            if fold in mapping:
                raise LeukoflowError(f"fold {fold!r} is given to both {mapping[fold]} and {subset}")
            mapping[str(fold)] = subset
    subset = manifest["fold"].astype(str).map(mapping)
    missing = sorted(set(manifest["fold"].astype(str)[subset.isna()]))
    if missing:
        log.info("folds %s are in no subset and are left out", missing)
    result = manifest.assign(subset=subset).dropna(subset=["subset"])
    for name in SUBSETS:
        if not (result["subset"] == name).any():
            raise LeukoflowError(
                f"the {name} subset is empty: no image in folds "
                f"{dict(train=train_folds, val=val_folds, test=test_folds)[name]}"
            )
    return result


def assign_cv_folds(split: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Add `cv_fold`: the non-test subjects in k stratified, subject-disjoint folds (-1 = test).

    Args:
        split: rows with `subset`, `subject` and `label`.
        k: number of folds; below 2 every row gets -1.
        seed: seed of the fold assignment.

    Returns:
        A copy of `split` with the `cv_fold` column.

    Raises:
        LeukoflowError: when there are fewer non-test subjects than folds.
    """
    split = split.assign(cv_fold=-1)
    if k < 2:
        return split
    pool = split[split["subset"] != "test"]
    if pool["subject"].nunique() < k:
        raise LeukoflowError(
            f"{pool['subject'].nunique()} non-test subjects: too few for {k} folds"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.full(len(pool), -1)
    for fold, (_, rows) in enumerate(splitter.split(pool, pool["label"], groups=pool["subject"])):
        folds[rows] = fold
    split.loc[pool.index, "cv_fold"] = folds
    return split


def subset_rows(split: pd.DataFrame, split_id: str, subset: str) -> pd.DataFrame:
    """The rows of `subset` (train/val/test) in split `split_id`.

    `main`, and an ablation's data variant `ablation/data/{split}-{stain}` (whose table is
    its own), use the `subset` column. Fold k trains on the non-test subjects whose
    `cv_fold != k`, validates on `cv_fold == k`, and tests on the shared `test` subset.

    Args:
        split: the split table.
        split_id: `main`, `fold{k}` or `ablation/data/{split}-{stain}`.
        subset: `train`, `val` or `test`.

    Returns:
        The rows, with their index in `split`.

    Raises:
        LeukoflowError: for an unknown subset or split id, or a fold the table lacks.
    """
    if subset not in SUBSETS:
        raise LeukoflowError(f"unknown subset {subset!r}; allowed: {', '.join(SUBSETS)}")
    if split_id == "main" or split_id.startswith("ablation/data/"):
        return split[split["subset"] == subset]
    if not split_id.startswith("fold") or not split_id[4:].isdigit():
        raise LeukoflowError(f"unknown split id {split_id!r}; allowed: main, fold0, fold1, ...")
    k = int(split_id[4:])
    if k not in set(split["cv_fold"]):
        raise LeukoflowError(f"split has no cross-validation fold {k} (cv_fold column)")
    if subset == "test":
        return split[split["subset"] == "test"]
    pool = split[split["subset"] != "test"]
    return pool[pool["cv_fold"] == k] if subset == "val" else pool[pool["cv_fold"] != k]


def random_image_split(split: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The image-level random counterpart of a split: NOT subject-disjoint, on purpose.

    The `subset` labels of the split are shuffled among the images of each class, so every
    subset keeps its number of images of each class while the images of one subject spread
    over several subsets (the leakage of an image-level random split). `cv_fold` is -1.

    Args:
        split: the subject-disjoint split table (`subset`, `label`).
        seed: seed of the shuffle.

    Returns:
        A copy with the shuffled `subset` column, rows in the same order.
    """
    rng = np.random.default_rng(seed)
    subset = split["subset"].to_numpy().copy()
    for label in sorted(split["label"].unique()):
        rows = np.flatnonzero(split["label"].to_numpy() == label)
        subset[rows] = rng.permutation(subset[rows])
    return split.assign(subset=subset, cv_fold=-1)


def check_disjoint(split: pd.DataFrame) -> None:
    """Check that every subject is in one subset and at most one CV fold.

    Raises:
        LeukoflowError: naming the subjects found in two subsets (or two folds).
    """
    subsets = split.groupby("subject")["subset"].nunique()
    shared = sorted(subsets[subsets > 1].index)
    if shared:
        raise LeukoflowError(f"subjects in more than one subset: {', '.join(shared)}")
    folds = split[split["cv_fold"] >= 0].groupby("subject")["cv_fold"].nunique()
    shared = sorted(folds[folds > 1].index)
    if shared:
        raise LeukoflowError(f"subjects in more than one CV fold: {', '.join(shared)}")


def split_report(split: pd.DataFrame) -> pd.DataFrame:
    """Subjects and images per class per subset (and CV fold), as a small table."""
    keys = ["subset", "label"] + (["cv_fold"] if (split["cv_fold"] >= 0).any() else [])
    return (
        split.groupby(keys)
        .agg(subjects=("subject", "nunique"), images=("path", "size"))
        .reset_index()
    )


def small_subsets(split: pd.DataFrame, minimum: int) -> list[str]:
    """The subsets with fewer than `minimum` subjects of a class, each said in a sentence.

    Args:
        split: the split table (`subset`, `subject`, `label`).
        minimum: the fewest subjects of each class (`evaluate.min_subjects_per_class`).

    Returns:
        One sentence per such subset, naming it and its subjects of each class.
    """
    out = []
    for subset in SUBSETS:
        rows = split[split["subset"] == subset]
        counts = {
            label: rows.loc[rows["label"] == label, "subject"].nunique() for label in ("all", "hem")
        }
        if min(counts.values()) >= minimum:
            continue
        out.append(
            f"the {subset} subset has {counts['all']} all and {counts['hem']} hem subjects, "
            f"fewer than {minimum} of each class (evaluate.min_subjects_per_class): "
            f"{SMALL_SUBSET[subset]}"
        )
    return out


def prelim_shortfall(manifest: pd.DataFrame, dataset: str | Path) -> str | None:
    """Whether the preliminary-test folder holds fewer images than its labels CSV lists.

    Args:
        manifest: the manifest (`fold`; the preliminary-test images are fold `prelim_test`).
        dataset: the dataset folder the manifest was made from.

    Returns:
        A sentence with the images listed and present, or None when every listed image is
        present or the dataset has no labels CSV.
    """
    labels = Path(dataset) / PRELIM_LABELS
    if not labels.is_file():
        return None
    listed = len(pd.read_csv(labels, dtype=str))
    present = int((manifest["fold"].astype(str) == "prelim_test").sum())
    if present >= listed:
        return None
    return (
        f"{labels} lists {listed} preliminary-test images but only {present} are present "
        "(ingested): the official test subset is incomplete"
    )


def make_split(
    manifest: pd.DataFrame,
    mode: str,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    k: int = 0,
    train_folds: Sequence[str] = ("0", "1"),
    val_folds: Sequence[str] = ("2",),
    test_folds: Sequence[str] = ("prelim_test",),
    min_subjects_per_class: int | None = None,
    dataset: str | Path | None = None,
) -> pd.DataFrame:
    """The split table: manifest columns + `subset` + `cv_fold`, rows in manifest order.

    Args:
        manifest: the manifest written by `leukoflow ingest` (`read_manifest`).
        mode: `holdout` (subjects drawn by fraction), `official` (the C-NMC folds) or
            `kfold` (as holdout, and `k` CV folds of the non-test subjects).
        seed: seed of every draw.
        val_fraction: holdout and kfold: share of the images for validation.
        test_fraction: holdout and kfold: share of the images for test.
        k: CV folds of the non-test subjects (0: none; `kfold` needs 2 or more).
        train_folds: official mode: the C-NMC folds for training.
        val_folds: official mode: the folds for validation.
        test_folds: official mode: the folds for test.
        min_subjects_per_class: a subset with fewer subjects of a class is warned of
            (`small_subsets`); None: not checked.
        dataset: official mode: the dataset folder, whose preliminary-test labels CSV is
            compared with the images present (`prelim_shortfall`); None: not compared.

    Returns:
        The split table (official mode: only the rows of the named folds).

    Raises:
        LeukoflowError: for an empty manifest, an unknown mode, `kfold` with k < 2, too
            few subjects, or folds that leave a subset empty.
    """
    if manifest.empty:
        raise LeukoflowError("the manifest has no images")
    if mode == "official":
        split = official_split(manifest, list(train_folds), list(val_folds), list(test_folds))
    elif mode in ("holdout", "kfold"):
        if mode == "kfold" and k < 2:
            raise LeukoflowError("--mode kfold needs --k 2 or more")
        split = holdout_split(manifest, val_fraction, test_fraction, seed)
    else:
        raise LeukoflowError(f"unknown split mode {mode!r}; allowed: holdout, official, kfold")
    split = assign_cv_folds(split, k, seed)
    check_disjoint(split)
    warnings = (
        [] if min_subjects_per_class is None else small_subsets(split, min_subjects_per_class)
    )
    if mode == "official" and dataset is not None:
        warnings.append(prelim_shortfall(manifest, dataset))
    for warning in filter(None, warnings):
        log.warning("%s", warning)
    return split.reset_index(drop=True)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest (or split) CSV with the text columns kept as text."""
    return pd.read_csv(path, dtype={"subject": str, "fold": str, "label": str, "path": str})
