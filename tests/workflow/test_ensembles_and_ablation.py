"""Ensembles, calibration, referral and the ablation on the finished tiny run (the session's
`finished` fixture), and the plans of changes to them."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm
from wf import AWKWARD

from leukoflow.cli import main
from leukoflow.core.workflow_runs import planned_jobs, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

RANDOM_RUN = "results/ablation/split-random_stain-macenko_augmentation-offline"


def changed_config(workdir, change, name="changed.yaml"):
    """config/`name`: the tiny config with `change(config)` applied."""
    config = yaml.safe_load((workdir / "config" / "tiny.yaml").read_text())
    change(config)
    (workdir / "config" / name).write_text(yaml.safe_dump(config))
    return f"config/{name}"


@pytest.mark.parametrize("ensemble", ["Ensemble", "Stacked"])
def test_an_ensemble_bundle_predicts_what_the_ensemble_evaluated(finished, ensemble, tmp_path):
    """The bundle alone (members, combiner, temperature, threshold, band) gives the calibrated
    probabilities, labels, referrals and member spread the ensemble job wrote for the test
    images."""
    evaluated = pd.read_csv(finished / f"results/main/ensemble/{ensemble}/test_predictions.csv")
    bundle = finished / "results/models" / ensemble
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["kind"] == "ensemble" and len(meta["members"]) == 2
    # each member's Keras file: the training job's, which its own bundle beside refers to
    # too; its ONNX file: that bundle's. No copies
    assert not (bundle / "members").exists()
    assert sorted((m["file"], m["onnx"]["file"]) for m in meta["members"]) == [
        ("../../main/train/SimpleNet/model.keras", "../SimpleNet/model.onnx"),
        ("../../main/train/VGG16/model.keras", "../VGG16/model.onnx"),
    ]
    assert not (finished / "results/models/VGG16/model.keras").exists()
    dataset = Path(yaml.safe_load((finished / "config/tiny.yaml").read_text())["dataset"]["path"])
    out = tmp_path / "predictions.csv"
    files = [str(dataset / path) for path in evaluated["path"]]
    assert main(["predict", "--model", str(bundle), "--out", str(out), *files]) == 0
    predicted = pd.read_csv(out)
    np.testing.assert_allclose(
        predicted["calibrated_probability_all"], evaluated["calibrated_probability_all"], atol=1e-5
    )
    assert list(predicted["label"] == "all") == list(evaluated["predicted"] == 1)
    assert list(predicted["refer"]) == list(evaluated["referred"])
    # the members' disagreement, per cell, as the ensemble job computed it from their CSVs
    np.testing.assert_allclose(predicted["member_spread"], evaluated["member_spread"], atol=1e-5)


def test_the_ensembles_and_their_fitted_values_reach_the_report(finished):
    table = pd.read_csv(finished / "results/table1.csv").set_index("architecture")
    assert list(table.index) == ["SimpleNet", "VGG16", "Ensemble", "Stacked"]
    assert (table.loc[["Ensemble", "Stacked"], "kind"] == "ensemble").all()
    # 3 test subjects: too few for an interval, so no paired comparison and no verdict on it
    assert table.loc[["Ensemble", "Stacked"], "p_best_better"].isna().all()
    assert table["ci_note"].str.startswith("CI: too few test subjects (").all()
    md = (finished / "results/table1.md").read_text()
    assert f"Data: the dataset folder {finished.parent / 'C-NMC data'}" in md
    assert AWKWARD in md and "test 3 subjects" in md  # the run reads the tiny set as a folder
    assert "Verdicts:\n\n- The test subset is too small to judge: 3 subjects (" in md
    page = (finished / "results/report.html").read_text()
    for section in ("Calibration", "Referral", "Ablation"):
        assert f"<h2>{section}</h2>" in page
    for name in ("SimpleNet", "Ensemble"):
        folder = "evaluate" if name == "SimpleNet" else "ensemble"
        metrics = json.loads((finished / f"results/main/{folder}/{name}/metrics.json").read_text())
        assert metrics["calibration"]["temperature"] > 0
        assert metrics["referral"]["lo"] <= metrics["threshold"] <= metrics["referral"]["hi"]


def test_the_random_split_leaks_and_the_leakage_row_is_computed_on_shared_cells(finished):
    split = pd.read_csv(finished / "results/split/random.csv", dtype={"subject": str})
    assert (split.groupby("subject")["subset"].nunique() > 1).any()  # leaky on purpose
    store = finished / "results/ablation/data/random-macenko/stores/32px"
    train, test = (
        pd.read_csv(store / f"{s}.csv", dtype={"subject": str}) for s in ("train", "test")
    )
    assert set(train["subject"]) & set(test["subject"])
    assert not set(train["path"]) & set(test["path"])
    main_test = pd.read_csv(finished / "results/main/evaluate/SimpleNet/test_predictions.csv")
    random_test = pd.read_csv(finished / RANDOM_RUN / "evaluate/SimpleNet/test_predictions.csv")
    assert set(random_test["path"]) == set(test["path"])
    shared = main_test.merge(random_test, on=["path", "y"], suffixes=("_subject", "_random"))
    effects = pd.read_csv(finished / "results/ablation/effects.csv")
    (row,) = effects.to_dict("records")
    assert (row["architecture"], row["factor"], row["level"], row["reference"]) == (
        "SimpleNet",
        "split",
        "random",
        "subject",
    )
    assert row["shared_images"] == len(shared)
    f1 = skm.f1_score(shared["y"], shared["predicted_random"]) - skm.f1_score(
        shared["y"], shared["predicted_subject"]
    )
    assert row["f1"] == pytest.approx(f1, abs=1e-6)
    if shared["y"].nunique() == 2:
        auc = skm.roc_auc_score(shared["y"], shared["probability_all_random"])
        auc -= skm.roc_auc_score(shared["y"], shared["probability_all_subject"])
        assert row["roc_auc"] == pytest.approx(auc, abs=1e-6)
    combinations = pd.read_csv(finished / "results/ablation/combinations.csv")
    assert list(combinations["run"]) == ["main", RANDOM_RUN.removeprefix("results/")]
    assert row["reading"] in (finished / "results/ablation/effects.md").read_text()


def test_adding_a_level_plans_only_its_jobs(finished):
    """A stain factor with the main run's method and `none`: the two new combinations' data,
    models and evaluations, the ablation table and the report; nothing that exists."""
    config = changed_config(finished, lambda c: c["ablation"].update(stain=["macenko", "none"]))
    result = run_snakemake(finished, "-n", "--configfile", config)
    assert planned_jobs(result) == {
        "stain_reference": 2,
        "stores": 6,
        "augment": 2,
        "train": 2,
        "evaluate": 2,
        "ablation": 1,
        "report": 1,
    }
    pattern = r"results/(ablation/[\w-]+)/train/SimpleNet/model\.keras"
    assert set(re.findall(pattern, result.stdout)) == {
        f"ablation/split-{split}_stain-none_augmentation-offline" for split in ("subject", "random")
    }


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda c: c.update(ensembles={"E": {"members": ["SimpleNet", "Xception"]}}),
            ["ensembles.E.members", "'Xception'", "allowed: SimpleNet, VGG16"],
        ),
        (
            lambda c: c["ablation"].update(stain=["macenko", "vahadane"]),
            ["ablation", "stain", "'none', 'reinhard', 'macenko'"],
        ),
        (
            lambda c: c["ablation"].update(architectures=["ResNet152V2"]),
            ["ablation.architectures", "'ResNet152V2'", "allowed: SimpleNet, VGG16"],
        ),
    ],
)
def test_bad_ensembles_and_ablation_stop_before_any_job(workdir, change, expected):
    config = changed_config(workdir, change, "bad.yaml")
    result = run_snakemake(workdir, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    for fragment in expected:
        assert fragment in text, text[-3000:]
    assert "Job stats" not in text
