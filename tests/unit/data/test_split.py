"""Subject-disjoint splits: a property test over random manifests, determinism, official folds."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.data.split import check_disjoint, make_split, subset_rows


def manifest_of(subjects):
    """A manifest with `images` rows per (subject, label, fold) tuple."""
    rows = []
    for subject, label, fold, images in subjects:
        for i in range(images):
            rows.append(
                {
                    "path": f"{subject}/{i}.bmp",
                    "label": label,
                    "subject": subject,
                    "fold": fold,
                    "width": 8,
                    "height": 8,
                    "sha256": f"{subject}{i}",
                }
            )
    return pd.DataFrame(rows)


subject_lists = st.lists(
    st.tuples(st.sampled_from(["all", "hem"]), st.integers(1, 12)), min_size=12, max_size=40
).map(
    lambda items: manifest_of(
        [
            (f"{'H' if label == 'hem' else ''}{i}", label, str(i % 3), n)
            for i, (label, n) in enumerate(items)
        ]
    )
)


@settings(max_examples=40, deadline=None)
@given(manifest=subject_lists, seed=st.integers(0, 10_000), k=st.sampled_from([0, 2, 3]))
def test_no_subject_in_two_subsets(manifest, seed, k):
    split = make_split(manifest, "holdout", seed=seed, val_fraction=0.2, test_fraction=0.2, k=k)
    assert len(split) == len(manifest)
    assert split.groupby("subject")["subset"].nunique().max() == 1
    assert set(split["subset"]) <= {"train", "val", "test"}
    if k:
        pool = split[split["subset"] != "test"]
        assert set(pool["cv_fold"]) == set(range(k))
        assert pool.groupby("subject")["cv_fold"].nunique().max() == 1
        for fold in range(k):
            parts = [
                set(subset_rows(split, f"fold{fold}", s)["subject"])
                for s in ("train", "val", "test")
            ]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_same_seed_same_bytes(tmp_path):
    manifest = manifest_of([(f"S{i}", "all" if i % 3 else "hem", "0", 5) for i in range(30)])
    manifest.to_csv(tmp_path / "m.csv", index=False)
    outputs = []
    for name in ("a.csv", "b.csv"):
        assert (
            main(
                [
                    "split",
                    str(tmp_path / "m.csv"),
                    "--out",
                    str(tmp_path / name),
                    "--split",
                    '{"seed": 3}',
                    "--cv",
                    '{"folds": 3}',
                ]
            )
            == 0
        )
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert (
        main(
            [
                "split",
                str(tmp_path / "m.csv"),
                "--out",
                str(tmp_path / "c.csv"),
                "--split",
                '{"seed": 4}',
                "--cv",
                '{"folds": 3}',
            ]
        )
        == 0
    )
    assert (tmp_path / "c.csv").read_bytes() != outputs[0]


def test_holdout_keeps_both_classes_in_every_subset():
    manifest = manifest_of([(f"S{i}", "all" if i % 3 else "hem", "0", 4) for i in range(30)])
    split = make_split(manifest, "holdout", seed=0, val_fraction=0.2, test_fraction=0.2)
    for subset in ("train", "val", "test"):
        assert set(split.loc[split["subset"] == subset, "label"]) == {"all", "hem"}


def test_official_split_uses_the_cnmc_folds():
    manifest = manifest_of(
        [
            ("1", "all", "0", 2),
            ("H1", "hem", "0", 2),
            ("2", "all", "1", 2),
            ("3", "all", "2", 2),
            ("H3", "hem", "2", 2),
            ("9", "all", "prelim_test", 2),
        ]
    )
    split = make_split(manifest, "official")
    by_fold = split.groupby("fold")["subset"].first().to_dict()
    assert by_fold == {"0": "train", "1": "train", "2": "val", "prelim_test": "test"}


def test_official_split_with_an_empty_subset_is_an_error():
    manifest = manifest_of([("1", "all", "0", 2), ("H1", "hem", "2", 2)])
    with pytest.raises(LeukoflowError, match="test subset is empty"):
        make_split(manifest, "official")


def test_a_leaking_split_is_an_error():
    split = manifest_of([("1", "all", "0", 2)]).assign(subset=["train", "test"], cv_fold=-1)
    with pytest.raises(LeukoflowError, match="subjects in more than one subset: 1"):
        check_disjoint(split)


def test_kfold_mode_needs_k():
    manifest = manifest_of([(f"S{i}", "all", "0", 2) for i in range(10)])
    with pytest.raises(LeukoflowError, match="needs --k"):
        make_split(manifest, "kfold")


def test_small_subsets_and_an_incomplete_prelim_folder_are_warned_of(tmp_path, caplog):
    """The official split of a partial dataset: 2 test cells of 2 subjects, 5 listed."""
    manifest = manifest_of(
        [(f"{i}", "all", "0", 2) for i in range(1, 4)]
        + [(f"H{i}", "hem", "0", 2) for i in range(1, 4)]
        + [("4", "all", "2", 2), ("H4", "hem", "2", 2), ("5", "all", "2", 2)]
        + [("9", "all", "prelim_test", 1), ("H9", "hem", "prelim_test", 1)]
    )
    labels = tmp_path / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    labels.parent.mkdir(parents=True)
    listed = [("9", "all"), ("H9", "hem"), ("9", "all"), ("H9", "hem"), ("9", "all")]
    rows = [f"UID_{s}_1_{i}_{c},{i}.bmp,{int(c == 'all')}" for i, (s, c) in enumerate(listed)]
    labels.write_text("Patient_ID,new_names,labels\n" + "\n".join(rows) + "\n")
    manifest.to_csv(tmp_path / "m.csv", index=False)
    args = ["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv"), "--split",
            '{"mode": "official"}', "--dataset", str(tmp_path)]  # fmt: skip
    with caplog.at_level("WARNING", logger="leukoflow.data.split"):
        assert main(args) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "leukoflow.data.split"]
    assert said == [
        "the val subset has 2 all and 1 hem subjects, fewer than 3 of each class "
        "(evaluate.min_subjects_per_class): the threshold, temperature and referral band are "
        "fitted on few subjects",
        "the test subset has 1 all and 1 hem subjects, fewer than 3 of each class "
        "(evaluate.min_subjects_per_class): its figures will have no confidence interval and "
        "no verdict will rest on them",
        f"{labels} lists 5 preliminary-test images but only 2 are present (ingested): the "
        "official test subset is incomplete",
    ]
    caplog.clear()  # the minimum comes with the evaluate block; every listed image present
    labels.write_text("Patient_ID,new_names,labels\n" + "\n".join(rows[:2]) + "\n")
    with caplog.at_level("WARNING", logger="leukoflow.data.split"):
        assert main([*args, "--evaluate", '{"min_subjects_per_class": 1}']) == 0
    assert not [r for r in caplog.records if r.name == "leukoflow.data.split"]
