"""The model card: Hugging Face layout, every section, numbers taken from bundle.json only."""

import copy

import pandas as pd
import pytest
import yaml

from leukoflow.deploy.modelcard import data_summary, key_lines, limitations, render_card

SECTIONS = [
    "Intended use",
    "Training data",
    "Preprocessing",
    "Architecture and training",
    "Evaluation",
    "Decision threshold",
    "Calibration",
    "Referral",
    "ONNX",
    "Known limitations",
    "Versions and provenance",
]


@pytest.fixture
def meta():
    """bundle.json of a demo-scale VGG16 trained on synthetic cells."""
    settings = {
        "architecture": "VGG16",
        "input_size": 64,
        "weights": "none",
        "epochs": 3,
        "batch_size": 16,
        "learning_rate": 1e-4,
        "seed": 0,
    }
    onnx = {
        "file": "model.onnx",
        "reason": None,
        "opset": 17,
        "exporter": "tf2onnx 1.17.0, TensorFlow 2.21.0",
        "tolerance": 1e-4,
        "check_images": 4,
        "max_abs_diff": 2.4e-7,
    }
    return {
        "format_version": 2,
        "kind": "model",
        "architecture": "VGG16",
        "input_size": 64,
        "class_names": ["hem", "all"],
        "threshold": 0.4375,
        "test_metrics": {"f1": 0.8125, "precision": 0.75, "recall": 0.9, "ece": 0.07,
                         "brier": 0.15, "roc_auc": 0.88, "n": 40},
        "evaluation": {
            "threshold_rule": "max_f1",
            "n_test": 40,
            "n_val": 30,
            "n_test_subjects": 6,
            "bootstrap": {"resamples": 500, "unit": "subject"},
            "ci": {"f1": [0.7, 0.9], "precision": [0.6, 0.85]},
            "calibration": {"before": {"ece": 0.12, "brier": 0.18},
                            "after": {"ece": 0.07, "brier": 0.15}},
            "referral": {"met": True, "val_share_referred": 0.1,
                         "test": {"share_referred": 0.125}},
        },
        "temperature": 1.25,
        "referral": {"lo": 0.3, "hi": 0.55, "metric": "sensitivity", "target": 0.95},
        "data": {
            "dataset": {"source": "synthetic", "synthetic": {"subjects": 24,
                        "images_per_subject": 12, "size": 128, "seed": 0}},
            "split": {"mode": "holdout", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.25},
            "subsets": {
                "train": {"subjects": 13, "images": 156, "all": 84, "hem": 72},
                "val": {"subjects": 5, "images": 60, "all": 36, "hem": 24},
                "test": {"subjects": 6, "images": 72, "all": 36, "hem": 36},
            },
        },
        "stain_reference": {"method": "macenko"},
        "settings": settings,
        "members": [{"architecture": "VGG16", "input_size": 64, "file": "model.keras",
                     "settings": settings, "onnx": onnx}],
        "combiner": {"method": "mean", "members": ["VGG16"], "weights": [1.0], "intercept": 0.0},
        "versions": {"leukoflow": "0.1.0", "keras": "3.15.1", "backend": "tensorflow"},
        "config_hash": "0123456789abcdef",
        "created": "2026-11-30T00:00:00+00:00",
    }  # fmt: skip


def front_matter(card):
    head, _, body = card.removeprefix("---\n").partition("---\n")
    return yaml.safe_load(head), body


def test_card_has_the_hugging_face_layout(meta):
    front, body = front_matter(render_card(meta))
    assert front["library_name"] == "keras"
    assert {"onnx", "synthetic-data", "image-classification"} <= set(front["tags"])
    (result,) = front["model-index"][0]["results"]
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"f1": 0.8125, "precision": 0.75, "recall": 0.9, "roc_auc": 0.88}
    assert [line[3:] for line in body.splitlines() if line.startswith("## ")] == SECTIONS


def test_card_numbers_are_the_bundles(meta):
    card = render_card(meta)
    assert "not for diagnosis" in card
    assert "| train | 13 | 156 | 84 | 72 |" in card and "| test | 6 | 72 | 36 | 36 |" in card
    assert "| F1 of `all` | 0.812 | [0.700, 0.900] |" in card
    assert "**0.4375**" in card and "maximises the F1 of `all` on the validation" in card
    assert "T = **1.2500**" in card
    assert "| expected calibration error (10 bins) | 0.120 | 0.070 |" in card
    assert "| Brier | 0.180 | 0.150 |" in card
    assert "[0.3000, 0.5500) is referred" in card and "test 0.125" in card
    assert "500 bootstrap resamples of subjects" in card
    assert "macenko" in card and "64 x 64 px" in card
    assert "0123456789abcdef" in card and "| keras | 3.15.1 |" in card
    assert "differ from the Keras model's by at most 2.4e-07" in card


def test_limitations_name_synthetic_and_demo_scale_data(meta):
    found = " ".join(limitations(meta))
    assert "synthetic cells" in found
    assert "6 test subjects" in found and "3 epochs" in found
    assert "below the architecture's native 224 px" in found
    real = copy.deepcopy(meta)
    real["data"]["dataset"] = {"source": "folder", "path": "data/C-NMC_Leukemia"}
    real["evaluation"]["n_test_subjects"] = 15
    real["members"][0]["settings"]["epochs"] = 200
    real["members"][0]["input_size"] = 224
    assert len(limitations(real)) == 2  # only the general ones
    assert "**Synthetic**" not in render_card(real) and "data/C-NMC_Leukemia" in render_card(real)


def test_a_bundle_without_onnx_says_why(meta):
    meta["members"][0]["onnx"] = {"file": None, "reason": "tf2onnx could not convert the model: X"}
    front, _ = front_matter(render_card(meta))
    assert "onnx" not in front["tags"]
    assert "No `model.onnx`: tf2onnx could not convert the model: X" in render_card(meta)
    assert key_lines(meta)["ONNX"] == "none: tf2onnx could not convert the model: X"


def test_key_lines(meta):
    lines = key_lines(meta)
    assert lines["test F1"] == "0.812 [0.700, 0.900]"
    assert lines["threshold"] == "0.4375 (max_f1)"
    assert lines["training data"].startswith("synthetic: train 13 subjects / 156 images")
    assert lines["ONNX"] == "model.onnx" and lines["models"] == "VGG16"
    assert lines["calibration"] == "T 1.250: ECE 0.120 -> ECE 0.070, Brier 0.150"
    assert lines["referral"] == "p in [0.300, 0.550)"


def test_an_ensembles_card_names_its_members_method_and_weights(meta):
    ensemble = copy.deepcopy(meta)
    member = ensemble["members"][0]
    other = {
        **member,
        "architecture": "SimpleNet",
        "input_size": 128,
        "file": "members/S.keras",
        "settings": {**member["settings"], "epochs": 30},
        "onnx": {"file": None, "reason": "tf2onnx could not convert the model: Y"},
    }
    member["file"] = "members/VGG16.keras"
    member["onnx"] = {**member["onnx"], "file": "members/VGG16.onnx"}
    ensemble.update(kind="ensemble", architecture="Duo", members=[member, other])
    ensemble["combiner"] = {
        "method": "stacked",
        "members": ["VGG16", "SimpleNet"],
        "weights": [1.5, -0.25],
        "intercept": 0.1,
    }
    for key in ("input_size", "settings"):
        ensemble.pop(key)
    card = render_card(ensemble)
    front, body = front_matter(card)
    assert "ensemble" in front["tags"] and "onnx" not in front["tags"]  # one member has none
    assert [line[3:] for line in body.splitlines() if line.startswith("## ")] == SECTIONS
    assert "# leukoflow ensemble Duo" in card and "combined by **stacked**" in card
    assert (
        "| VGG16 | 64 | 1.5000 | `3` |" in card and "| SimpleNet | 128 | -0.2500 | `30` |" in card
    )
    assert "intercept 0.1000" in card and "each network's input (64, 128 px square)" in card
    assert "- VGG16: `members/VGG16.onnx`" in card
    assert "- SimpleNet: No `S.onnx`: tf2onnx could not convert the model: Y" in card
    found = " ".join(limitations(ensemble))
    assert "VGG16: Trained for 3 epochs only" in found and "SimpleNet: Input 128 px" not in found
    lines = key_lines(ensemble)
    assert lines["models"] == "stacked of VGG16 (1.500), SimpleNet (-0.250)"
    assert lines["ONNX"] == "members/VGG16.onnx; none: tf2onnx could not convert the model: Y"


def test_data_summary_counts_subjects_and_images_per_subset(tmp_path):
    split = pd.DataFrame(
        {
            "path": [f"c{i}.bmp" for i in range(6)],
            "subject": ["1", "1", "H2", "3", "H4", "H4"],
            "label": ["all", "all", "hem", "all", "hem", "hem"],
            "subset": ["train", "train", "train", "val", "test", "test"],
            "cv_fold": [-1] * 6,
        }
    )
    split.to_csv(tmp_path / "split.csv", index=False)
    summary = data_summary(tmp_path / "split.csv", {"source": "folder"}, {"mode": "holdout"})
    assert summary["subsets"] == {
        "train": {"subjects": 2, "images": 3, "all": 2, "hem": 1},
        "val": {"subjects": 1, "images": 1, "all": 1, "hem": 0},
        "test": {"subjects": 1, "images": 2, "all": 0, "hem": 2},
    }
    assert summary["dataset"] == {"source": "folder"} and summary["split"] == {"mode": "holdout"}
