"""Subject-disjoint splits: holdout (stratified, subjects as groups), official C-NMC folds, k folds.

Every subject lands in exactly one subset; the split is checked before it is written.
"""

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from leukoflow.errors import LeukoflowError

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")


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


def holdout_split(manifest, val_fraction, test_fraction, seed):
    """Assign `subset` by subject: test first, then validation from the rest."""
    test = _holdout_subjects(manifest, test_fraction, seed)
    rest = manifest[~manifest["subject"].isin(test)]
    val = _holdout_subjects(rest, val_fraction / (1 - test_fraction), seed + 1)
    subset = np.where(
        manifest["subject"].isin(test),
        "test",
        np.where(manifest["subject"].isin(val), "val", "train"),
    )
    return manifest.assign(subset=subset)


def official_split(manifest, train_folds, val_folds, test_folds):
    """Assign `subset` from the C-NMC folds (`0`, `1`, `2`, `prelim_test`)."""
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


def assign_cv_folds(split, k, seed):
    """Add `cv_fold`: the non-test subjects in k stratified, subject-disjoint folds (-1 = test)."""
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


def subset_rows(split, split_id, subset):
    """The rows of `subset` (train/val/test) in split `split_id` (`main` or `fold{k}`).

    `main` uses the `subset` column. Fold k trains on the non-test subjects whose
    `cv_fold != k`, validates on `cv_fold == k`, and tests on the shared `test` subset.
    """
    if subset not in SUBSETS:
        raise LeukoflowError(f"unknown subset {subset!r}; allowed: {', '.join(SUBSETS)}")
    if split_id == "main":
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


def check_disjoint(split):
    """Raise LeukoflowError if any subject appears in two subsets (or two CV folds)."""
    subsets = split.groupby("subject")["subset"].nunique()
    shared = sorted(subsets[subsets > 1].index)
    if shared:
        raise LeukoflowError(f"subjects in more than one subset: {', '.join(shared)}")
    folds = split[split["cv_fold"] >= 0].groupby("subject")["cv_fold"].nunique()
    shared = sorted(folds[folds > 1].index)
    if shared:
        raise LeukoflowError(f"subjects in more than one CV fold: {', '.join(shared)}")


def split_report(split):
    """Subjects and images per class per subset (and CV fold), as a small table."""
    keys = ["subset", "label"] + (["cv_fold"] if (split["cv_fold"] >= 0).any() else [])
    return (
        split.groupby(keys)
        .agg(subjects=("subject", "nunique"), images=("path", "size"))
        .reset_index()
    )


def make_split(
    manifest,
    mode,
    seed=0,
    val_fraction=0.15,
    test_fraction=0.2,
    k=0,
    train_folds=("0", "1"),
    val_folds=("2",),
    test_folds=("prelim_test",),
):
    """The split table: manifest columns + `subset` + `cv_fold`, rows in manifest order."""
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
    return split.reset_index(drop=True)


def read_manifest(path):
    """Read a manifest CSV with the text columns kept as text."""
    return pd.read_csv(path, dtype={"subject": str, "fold": str, "label": str, "path": str})
