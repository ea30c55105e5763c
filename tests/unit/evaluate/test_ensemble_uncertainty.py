"""An ensemble's uncertainty columns: the members' disagreement and the mean of their own
columns, from their prediction CSVs, against a hand computation."""

import json

import numpy as np
import pandas as pd
import pytest

from leukoflow.evaluate import ensemble as en
from leukoflow.evaluate.uncertainty import ensemble_uncertainty

N = 40


def member_csv(path, p, columns, order, seed):
    """A member's predictions CSV (evaluate's columns), its rows in `order`."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "row": np.arange(N),
            "path": [f"cell{i}.bmp" for i in range(N)],
            "subject": [f"s{i % 10}" for i in range(N)],
            "y": np.arange(N) % 2,
            "probability_all": p,
            **{c: rng.uniform(0, 0.2, N) for c in columns},
        }
    )
    frame.iloc[order].to_csv(path, index=False)
    return frame


@pytest.mark.parametrize("b_columns", [("tta_spread", "mc_std"), ("tta_spread",)])
def test_the_ensemble_job_writes_member_spread_and_the_members_mean_columns(tmp_path, b_columns):
    rng = np.random.default_rng(0)
    y = np.arange(N) % 2
    pa = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, N), 0.01, 0.99)
    pb = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, N), 0.01, 0.99)
    members, files = {}, {}
    for name, p, columns, order in (
        ("A", pa, ("tta_spread", "mc_std"), np.arange(N)),
        ("B", pb, b_columns, rng.permutation(N)),  # B's rows in another order
    ):
        for subset in ("val", "test"):
            files[name, subset] = tmp_path / f"{name}_{subset}.csv"
            members[name] = member_csv(files[name, subset], p, columns, order, ord(name))
    metrics = en.run_ensemble(
        "E", "mean", ["A", "B"], [files["A", "val"], files["B", "val"]],
        [files["A", "test"], files["B", "test"]], {"bootstrap": 50, "mc_dropout": 6},
        tmp_path / "m.json", tmp_path / "val.csv", tmp_path / "test.csv",
    )  # fmt: skip
    a, b = members["A"], members["B"]
    for subset in ("val", "test"):
        got = pd.read_csv(tmp_path / f"{subset}.csv")
        np.testing.assert_allclose(got["member_spread"], np.abs(pa - pb) / 2, atol=1e-12)
        np.testing.assert_allclose(got["tta_spread"], (a["tta_spread"] + b["tta_spread"]) / 2)
        if "mc_std" in b_columns:
            np.testing.assert_allclose(got["mc_std"], (a["mc_std"] + b["mc_std"]) / 2)
        else:  # not every member has it
            assert "mc_std" not in got
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["mc_dropout"] == metrics["mc_dropout"] == (6 if "mc_std" in b_columns else 0)
    areas = written["risk_coverage"]
    assert {"aurc", "aurc_tta_spread", "aurc_member_spread"} <= set(areas)
    assert ("aurc_mc_std" in areas) == ("mc_std" in b_columns)


def test_ensemble_uncertainty_of_members_that_agree_has_no_member_spread():
    p = np.array([[0.2, 0.7], [0.2, 0.7], [0.2, 0.7]])
    out = ensemble_uncertainty(p, [{"mc_std": np.array([0.1, 0.3])}] * 3)
    assert list(out) == ["mc_std", "member_spread"]  # UNCERTAINTY_COLUMNS' order
    np.testing.assert_allclose(out["member_spread"], [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["mc_std"], [0.1, 0.3])
    assert list(ensemble_uncertainty(p, [{}, {}, {}])) == ["member_spread"]
