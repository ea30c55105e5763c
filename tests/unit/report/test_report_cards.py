"""The report's model-card section and DVCLive's training figures in results/metrics.json."""

import json

import pandas as pd

from leukoflow.report.collect import ArchFiles, ReportData, ReportInputs, collect
from leukoflow.report.html import html_model_cards
from leukoflow.report.table import metrics_for_dvc

META = {
    "architecture": "SimpleNet",
    "input_size": 128,
    "threshold": 0.5,
    "test_metrics": {"f1": 0.75, "ece": 0.05, "brier": 0.1},
    "evaluation": {"threshold_rule": "max_f1", "ci": {"f1": [0.6, 0.85]}, "n_test_subjects": 4},
    "data": {
        "dataset": {"source": "synthetic"},
        "subsets": {"train": {"subjects": 10, "images": 120, "all": 60, "hem": 60}},
    },
    "settings": {"epochs": 3},
    "onnx": {"file": None, "reason": "tf2onnx could not convert the model: X"},
    "config_hash": "feedface",
}
LIVE = {
    "train": {"loss": 0.4, "epoch_seconds": 3.2},
    "eval": {"loss": 0.5, "weighted_f1": 0.7},
    "step": 2,
}


def arch_files(root, arch):
    """An architecture's report inputs under `root`: evaluation, bundle and DVCLive folder."""
    folder = root / arch
    (folder / "bundle").mkdir(parents=True)
    (folder / "dvclive").mkdir()
    metrics = {
        "test": {"f1": 0.75},
        "calibration": {"temperature": 1.0, "before": {"ece": 0.1}},
        "referral": {"test": {"share_referred": 0.0}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"subject": ["1"], "y": [1], "probability_all": [0.9]}).to_csv(
        folder / "predictions.csv", index=False
    )
    (folder / "bundle" / "bundle.json").write_text(json.dumps(META))
    (folder / "dvclive" / "metrics.json").write_text(json.dumps(LIVE))
    missing = folder / "missing"
    return ArchFiles(
        metrics=folder / "metrics.json",
        predictions=folder / "predictions.csv",
        history=missing,
        timing=missing,
        saliency=missing,
        saliency_figure=missing,
        bundle=folder / "bundle",
        live=folder / "dvclive",
    )


def test_collect_reads_bundles_and_dvclive_summaries(tmp_path):
    inputs = ReportInputs(
        archs={"SimpleNet": arch_files(tmp_path, "SimpleNet")},
        folds=0,
        stain_spread=tmp_path / "none.json",
        stain_examples=tmp_path / "none.png",
        augment_examples=tmp_path / "none.png",
    )
    data = collect(inputs)
    assert data.bundles == {"SimpleNet": META} and data.live == {"SimpleNet": LIVE}
    table = pd.DataFrame(
        [{"architecture": "SimpleNet", "delta_f1_pct": 0.0, "threshold": 0.5, "time_ms": 1.0}]
    )
    # every figure but the wall-clock time, which differs between two identical runs
    comparable = {"train": {"loss": 0.4}, "eval": LIVE["eval"], "step": 2}
    assert metrics_for_dvc(table, data)["SimpleNet"]["training"] == comparable
    assert LIVE["train"]["epoch_seconds"] == 3.2  # the summary read is left as it was


def test_model_card_section_shows_every_cards_key_lines():
    data = ReportData(archs=["SimpleNet", "VGG16"], folds=0, bundles={"SimpleNet": META})
    page = html_model_cards(data)
    assert "<td>SimpleNet</td>" in page and "VGG16" not in page
    assert "0.750 [0.600, 0.850]" in page and "ECE 0.050, Brier 0.100" in page
    assert "none: tf2onnx could not convert the model: X" in page
    assert "synthetic: train 10 subjects / 120 images" in page and "feedface" in page
    assert html_model_cards(ReportData(archs=["SimpleNet"], folds=0)) == ""


def test_model_card_section_shows_the_ensembles_cards_too():
    duo = {**META, "kind": "ensemble", "architecture": "Duo",
           "combiner": {"method": "mean", "members": ["SimpleNet", "VGG16"],
                        "weights": [0.5, 0.5]}}  # fmt: skip
    data = ReportData(
        archs=["SimpleNet"], folds=0, ensembles=["Duo"], bundles={"SimpleNet": META, "Duo": duo}
    )
    page = html_model_cards(data)
    assert page.index("<td>SimpleNet</td>") < page.index("<td>Duo</td>")
    assert "mean of SimpleNet (0.500), VGG16 (0.500)" in page
