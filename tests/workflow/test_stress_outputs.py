"""The stress test on the finished tiny run (the session's `finished` fixture): a table per
model and ensemble with every shift of the registry, the report's heat map, the card's rows."""

import json

import pandas as pd
import pytest

from leukoflow.evaluate.shifts import chosen_strengths

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

MODELS = ("SimpleNet", "VGG16", "Ensemble", "Stacked")  # the tiny config's


def test_every_model_has_every_shift_and_the_report_and_cards_show_them(finished):
    pairs = chosen_strengths(None)  # the tiny config runs every strength
    for name in MODELS:
        table = pd.read_csv(finished / f"results/main/stress/{name}/stress.csv")
        assert list(zip(table["shift"], table["strength"])) == pairs
        assert set(table["model"]) == {name}
        record = json.loads((finished / "results/models" / name / "bundle.json").read_text())[
            "robustness"
        ]
        assert [(r["shift"], r["strength"]) for r in record] == pairs
        assert "## Robustness" in (finished / "results/models" / name / "README.md").read_text()
    shifted = pd.read_csv(finished / "results/main/stress/SimpleNet/shifted_predictions.csv")
    test = pd.read_csv(finished / "results/main/evaluate/SimpleNet/test_predictions.csv")
    assert len(shifted) == len(pairs) * len(test)
    assert (finished / "results/plots/robustness.png").stat().st_size > 0
    assert "<h2>Robustness</h2>" in (finished / "results/report.html").read_text()
