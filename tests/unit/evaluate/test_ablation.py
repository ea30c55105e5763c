"""The ablation: combinations, where each runs and on which data, the random split, and the
effects table against a direct computation."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from leukoflow.core.errors import ConfigError
from leukoflow.core.settings import check_config, ensembles
from leukoflow.data.split import random_image_split
from leukoflow.evaluate import ablation
from leukoflow.evaluate.ablation_effects import (
    effects_markdown,
    factor_effects,
    reading,
    run_ablation_table,
)

CONFIG = {
    "stain": {"method": "macenko"},
    "training": {
        "input_size": 32,
        "weights": "none",
        "balance": "augmented_store",
        "online_augmentation": {"enabled": False},
    },
    "architectures": {"SimpleNet": {}, "VGG16": {"balance": "class_weights"}},
    "cv": {"folds": 0},
    "dataset": {"source": "synthetic"},
    "ablation": {
        "architectures": ["SimpleNet", "VGG16"],
        "split": ["subject", "random"],
        "stain": ["macenko", "none"],
        "augmentation": ["offline", "none"],
    },
}


def test_names_round_trip_and_unknown_levels_are_refused():
    levels = {"split": "random", "stain": "none", "augmentation": "online"}
    name = ablation.combination_name(levels)
    assert name == "split-random_stain-none_augmentation-online"
    assert ablation.parse_name(name) == levels
    with pytest.raises(ConfigError, match="stain: none, reinhard, macenko"):
        ablation.parse_name("stain-vahadane")


def test_every_combination_and_the_main_run_reused():
    plan = ablation.plan(CONFIG)
    assert len(plan) == 2 * 2 * 2 * 2
    runs = {(j["architecture"], j["combination"]): j["run"] for j in plan}
    main_simplenet = "split-subject_stain-macenko_augmentation-offline"
    main_vgg = "split-subject_stain-macenko_augmentation-none"  # class weights: level none
    assert runs["SimpleNet", main_simplenet] == "main"
    assert runs["VGG16", main_vgg] == "main"
    assert runs["VGG16", main_simplenet] == f"ablation/{main_simplenet}"
    assert sum(run == "main" for run in runs.values()) == 2
    # a run is named by every factor: adding a factor or a level renames no run
    fewer = {**CONFIG, "ablation": {"architectures": ["SimpleNet"], "split": ["random"]}}
    (job,) = ablation.plan(fewer)
    assert job["combination"] == "split-random"
    assert job["run"] == "ablation/split-random_stain-macenko_augmentation-offline"
    assert job["run"] == runs["SimpleNet", "split-random_stain-macenko_augmentation-offline"]


def test_data_variants_depend_on_split_and_stain_only():
    data = ablation.data_of
    assert data(CONFIG, "main") == "main" and data(CONFIG, "fold3") == "fold3"
    assert data(CONFIG, "ablation/split-subject_stain-macenko_augmentation-none") == "main"
    assert (
        data(CONFIG, "ablation/split-random_stain-macenko_augmentation-none")
        == (data(CONFIG, "ablation/split-random_stain-macenko_augmentation-offline"))
        == "ablation/data/random-macenko"
    )
    assert data(CONFIG, "ablation/split-subject_stain-none_augmentation-none") == (
        "ablation/data/subject-none"
    )
    assert ablation.data_levels(CONFIG, "ablation/data/random-none") == ("random", "none")
    assert ablation.data_levels(CONFIG, "fold0") == ("subject", "macenko")


def test_augmentation_levels_set_the_training_settings():
    run = "ablation/split-subject_augmentation-online"
    settings = ablation.run_settings(CONFIG, run, "SimpleNet")
    assert settings["balance"] == "class_weights"
    assert settings["online_augmentation"]["enabled"] is True
    assert ablation.run_settings(CONFIG, "main", "SimpleNet") == ablation.run_settings(
        CONFIG, "ablation/split-random", "SimpleNet"
    )
    assert ablation.reference_levels(CONFIG, "VGG16") == {
        "split": "subject",
        "stain": "macenko",
        "augmentation": "none",
    }


def test_schema_levels_are_the_modules():
    schema = yaml.safe_load(open("config/schema.yaml"))["properties"]["ablation"]["properties"]
    for factor, levels in ablation.FACTORS.items():
        assert tuple(schema[factor]["items"]["enum"]) == levels, factor


def checked(change):
    config = json.loads(json.dumps(CONFIG))
    change(config)
    check_config(config)
    return config


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c["ablation"].update(architectures=["Xception"]), "ablation.architectures"),
        (lambda c: c["ablation"].update(architectures=[]), "or neither"),
        (lambda c: c.update(ensembles={"E": {"members": ["SimpleNet", "ResNet152V2"]}}),
         "ensembles.E.members: 'ResNet152V2' not among the architectures run; allowed: "
         "SimpleNet, VGG16"),
        (lambda c: c.update(ensembles={"VGG16": {}}), "is an architecture's name"),
        (lambda c: c.update(ensembles={"E": {"members": ["VGG16"]}}), "two or more"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key_and_the_allowed_values(change, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        checked(change)


def test_default_ensemble_holds_every_architecture():
    assert ensembles(CONFIG) == {"Ensemble": {"method": "mean", "members": ["SimpleNet", "VGG16"]}}
    assert ensembles({**CONFIG, "ensembles": {}}) == {}
    one = {**CONFIG, "architectures": {"SimpleNet": {}}}
    assert ensembles(one) == {}
    listed = {**one, "ensembles": {"E": {"method": "stacked"}, "F": {"members": ["SimpleNet"]}}}
    assert ensembles(listed) == {"F": {"method": "mean", "members": ["SimpleNet"]}}


def test_random_split_keeps_subset_sizes_and_spreads_subjects():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        label = "all" if s % 3 else "hem"
        subset = ["train", "train", "val", "test"][s % 4]
        rows += [(f"{s}/{i}.bmp", label, f"S{s}", subset) for i in range(int(rng.integers(3, 8)))]
    split = pd.DataFrame(rows, columns=["path", "label", "subject", "subset"]).assign(cv_fold=-1)
    random = random_image_split(split, seed=1)
    assert list(random["path"]) == list(split["path"])
    counts = split.groupby(["label", "subset"]).size()
    assert random.groupby(["label", "subset"]).size().equals(counts)
    assert (random.groupby("subject")["subset"].nunique() > 1).sum() >= 6  # subjects spread
    assert random_image_split(split, seed=1).equals(random)


def frame(paths, subjects, y, p, threshold=0.5):
    return pd.DataFrame(
        {"path": paths, "subject": subjects, "y": y, "probability_all": p,
         "predicted": (np.asarray(p) >= threshold).astype(int)}
    )  # fmt: skip


def test_leakage_row_is_the_difference_on_the_shared_test_cells(tmp_path):
    """The split effect is computed on the cells both splits hold out, and says 'higher'."""
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"S{i}" for i in range(10)], 6)
    y = np.repeat(np.arange(10) % 2, 6)
    paths = [f"c{i}.bmp" for i in range(60)]
    weak = np.clip(0.5 + 0.15 * (2 * y - 1) + rng.normal(0, 0.2, 60), 0.01, 0.99)
    strong = np.clip(0.5 + 0.4 * (2 * y - 1) + rng.normal(0, 0.1, 60), 0.01, 0.99)
    subject_test = frame(paths[:40], subjects[:40], y[:40], weak[:40])
    shared = slice(20, 40)  # the random split's test subset shares 20 cells with the other
    random_test = frame(paths[20:60], subjects[20:60], y[20:60], strong[20:60])
    jobs = [
        {"architecture": "SimpleNet", "combination": f"split-{lv}", "levels": {"split": lv},
         "run": run}
        for lv, run in (("subject", "main"), ("random", "ablation/split-random"))
    ]  # fmt: skip
    predictions = {("SimpleNet", "split-subject"): subject_test,
                   ("SimpleNet", "split-random"): random_test}  # fmt: skip
    reference = {"SimpleNet": {"split": "subject"}}
    effects = factor_effects(jobs, predictions, reference, 300, 0, min_subjects_per_class=2)
    row = effects.iloc[0]
    assert (row["factor"], row["level"], row["reference"]) == ("split", "random", "subject")
    assert row["shared_images"] == 20 and row["shared_subjects"] == 4
    auc = skm.roc_auc_score(y[shared], strong[shared]) - skm.roc_auc_score(y[shared], weak[shared])
    f1 = skm.f1_score(y[shared], strong[shared] >= 0.5) - skm.f1_score(
        y[shared], weak[shared] >= 0.5
    )
    assert row["roc_auc"] == pytest.approx(auc) and row["f1"] == pytest.approx(f1)
    assert row["roc_auc_lo"] <= row["roc_auc"] <= row["roc_auc_hi"]
    assert reading(row).startswith("random scores higher than subject (the CI excludes 0 for")
    assert "leakage" in reading(row)
    # the job writes the same through files
    files = []
    for job in jobs:
        folder = tmp_path / job["combination"]
        folder.mkdir()
        test = predictions["SimpleNet", job["combination"]]
        test.to_csv(folder / "test_predictions.csv", index=False)
        metrics = {"n_test": len(test), "test": {"f1": 0.5, "weighted_f1": 0.5, "roc_auc": 0.5},
                   "ci": {m: [0.4, 0.6] for m in ("f1", "weighted_f1", "roc_auc")}}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(metrics))
        files.append(folder)
    plan = {"jobs": jobs, "reference": {"SimpleNet": {"split": "subject"}}}
    out = [tmp_path / name for name in ("effects.csv", "combinations.csv", "effects.md")]
    metrics_files = [f / "metrics.json" for f in files]
    prediction_files = [f / "test_predictions.csv" for f in files]
    run_ablation_table(
        plan, metrics_files, prediction_files, *out, n_resamples=300, min_subjects_per_class=2
    )
    written = pd.read_csv(out[0])
    assert written.loc[0, "roc_auc"] == pytest.approx(auc)
    assert "the leakage of an image-level split" in out[2].read_text()
    assert list(pd.read_csv(out[1])["run"]) == ["main", "ablation/split-random"]
    # the shared cells hold 2 subjects of each class: below the default minimum of 3, the
    # effect keeps its point estimate, loses its CI and judges nothing
    effects = factor_effects(jobs, predictions, reference, 300, 0)
    row = effects.iloc[0]
    assert row["roc_auc"] == pytest.approx(auc) and pd.isna(row["roc_auc_lo"])
    assert row["ci_note"] == "CI: too few test subjects (2 all, 2 hem)"
    assert reading(row) == (
        "the shared test subset is too small to judge (CI: too few test subjects (2 all, 2 hem))"
    )
    effects["reading"] = [reading(r) for r in effects.to_dict("records")]
    markdown = effects_markdown(effects, pd.read_csv(out[1]))
    assert f"{auc:+.3f} [CI: too few test subjects (2 all, 2 hem)]" in markdown


def test_effect_of_a_level_averages_over_the_other_factor():
    """Two stain comparisons (one per split) averaged; each on its own shared cells."""
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 20)
    subjects = np.repeat([f"S{i}" for i in range(8)], 5)
    paths = [f"c{i}.bmp" for i in range(40)]
    p = {k: np.clip(0.5 + s * (2 * y - 1) + rng.normal(0, 0.2, 40), 0.01, 0.99)
         for k, s in (("a", 0.1), ("b", 0.3), ("c", 0.05), ("d", 0.2))}  # fmt: skip
    predictions, jobs = {}, []
    for (split, stain), key in zip(
        [("subject", "macenko"), ("subject", "none"), ("random", "macenko"), ("random", "none")],
        "abcd",
    ):
        levels = {"split": split, "stain": stain}
        name = ablation.combination_name(levels)
        rows = slice(0, 40) if split == "subject" else slice(10, 40)
        predictions["X", name] = frame(paths[rows], subjects[rows], y[rows], p[key][rows])
        jobs.append({"architecture": "X", "combination": name, "levels": levels, "run": "r"})
    reference = {"X": {"split": "subject", "stain": "macenko"}}
    effects = factor_effects(jobs, predictions, reference, 200, 0).set_index("factor")
    stain = effects.loc["stain"]
    expected = np.mean(
        [
            skm.roc_auc_score(y, p["b"]) - skm.roc_auc_score(y, p["a"]),
            skm.roc_auc_score(y[10:], p["d"][10:]) - skm.roc_auc_score(y[10:], p["c"][10:]),
        ]
    )
    assert stain["comparisons"] == 2 and stain["roc_auc"] == pytest.approx(expected)
    assert effects.loc["split", "shared_images"] == 30


def test_the_random_split_is_augmented_with_shared_subjects_never_shared_images(tmp_path):
    """`subject_disjoint=False` (the random split only) lets the test store share subjects
    with the training store; a shared image is refused all the same."""
    from leukoflow.augment.offline import augment_store
    from leukoflow.augment.transforms import AugmentSpec
    from leukoflow.core.errors import LeukoflowError
    from leukoflow.data import synth

    synth.write_store(tmp_path, 8, 16, seed=0, stem="train")
    synth.write_store(tmp_path, 4, 16, seed=1, stem="test")
    train = pd.read_csv(tmp_path / "train.csv")
    test = pd.read_csv(tmp_path / "test.csv")
    test.assign(subject=train["subject"].iloc[:4].to_numpy()).to_csv(
        tmp_path / "test.csv", index=False
    )
    out = tmp_path / "train_aug.npy"
    with pytest.raises(LeukoflowError, match="subject"):
        augment_store(tmp_path / "train.npy", out, AugmentSpec())
    augment_store(tmp_path / "train.npy", out, AugmentSpec(), subject_disjoint=False)
    assert out.is_file()
    test.assign(path=train["path"].iloc[:4].to_numpy()).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(LeukoflowError, match="path"):
        augment_store(tmp_path / "train.npy", out, AugmentSpec(), subject_disjoint=False)
