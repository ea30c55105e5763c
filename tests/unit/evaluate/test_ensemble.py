"""Ensembles: mean and stacking against hand computations, fitted on validation only."""

import json

import numpy as np
import pandas as pd
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate import ensemble as en
from leukoflow.evaluate.calibration import logit, sigmoid
from leukoflow.evaluate.job import write_evaluation


def test_mean_is_the_mean_probability():
    members = np.array([[0.2, 0.9, 0.5], [0.6, 0.7, 0.1]])
    combiner = en.fit_combiner("mean", ["A", "B"], members, [0, 1, 0])
    assert combiner["weights"] == [0.5, 0.5] and combiner["intercept"] == 0.0
    assert np.allclose(en.combine(members, combiner), [0.4, 0.8, 0.3])


def test_stacked_is_a_logistic_regression_on_the_logits():
    members = np.array([[0.2, 0.9], [0.6, 0.7]])
    combiner = {"method": "stacked", "weights": [2.0, -0.5], "intercept": 0.25}
    by_hand = [
        1 / (1 + np.exp(-(0.25 + 2.0 * np.log(0.2 / 0.8) - 0.5 * np.log(0.6 / 0.4)))),
        1 / (1 + np.exp(-(0.25 + 2.0 * np.log(0.9 / 0.1) - 0.5 * np.log(0.7 / 0.3)))),
    ]
    assert np.allclose(en.combine(members, combiner), by_hand, atol=1e-12)


def member_scores(n=400, seed=0):
    """Validation labels; member A informative, member B noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    a = sigmoid(1.5 * (2 * y - 1) + rng.normal(0, 1, n))
    b = sigmoid(rng.normal(0, 1, n))
    return y, np.vstack([a, b])


def test_stacking_fit_is_the_optimum_of_the_penalised_likelihood():
    """At the optimum of the L2-penalised likelihood (intercept free): X'(y - p) = w / C and
    sum(y - p) = 0. The informative member gets the larger weight."""
    y, members = member_scores()
    combiner = en.fit_combiner("stacked", ["A", "B"], members, y)
    w = np.array(combiner["weights"])
    p = en.combine(members, combiner)
    features = logit(members)
    assert np.allclose(features @ (y - p), w / en.STACKING_C, atol=1e-3)
    assert abs(np.sum(y - p)) < 1e-3
    assert w[0] > 5 * abs(w[1])


def test_unknown_method_and_one_class_are_refused():
    with pytest.raises(LeukoflowError, match="allowed: mean, stacked"):
        en.fit_combiner("median", ["A", "B"], np.ones((2, 3)) / 2, [0, 1, 0])
    with pytest.raises(LeukoflowError, match="both classes"):
        en.fit_combiner("stacked", ["A", "B"], np.ones((2, 3)) / 2, [1, 1, 1])


def write_member(folder, probabilities_val, probabilities_test, y_val, y_test):
    """Evaluate's three files for one member, from given probabilities."""
    from leukoflow.evaluate.job import evaluate_predictions

    frames = []
    for subset, p, y in (("val", probabilities_val, y_val), ("test", probabilities_test, y_test)):
        frames.append(
            pd.DataFrame(
                {
                    "row": np.arange(len(y)),
                    "path": [f"{subset}/cell{i}.bmp" for i in range(len(y))],
                    "subject": [f"s{i % 10}" for i in range(len(y))],
                    "y": y,
                    "probability_all": p,
                }
            )
        )
    metrics, val, test = evaluate_predictions(frames[0], frames[1], n_bootstrap=100)
    paths = [folder / name for name in ("metrics.json", "val.csv", "test.csv")]
    write_evaluation(metrics, val, test, *paths)
    return paths


@pytest.mark.parametrize("method", ["mean", "stacked"])
def test_no_test_label_moves_the_weights(tmp_path, method):
    """The ensemble job: flipping every test label changes no weight, temperature,
    threshold or band."""
    y_val, val_members = member_scores(seed=1)
    y_test, test_members = member_scores(seed=2)
    runs = {}
    for flip in (False, True):
        y = 1 - y_test if flip else y_test
        files = {}
        for i, name in enumerate(["A", "B"]):
            folder = tmp_path / f"flip{flip}" / name
            folder.mkdir(parents=True)
            files[name] = write_member(folder, val_members[i], test_members[i], y_val, y)
        out = tmp_path / f"flip{flip}" / "ensemble"
        runs[flip] = en.run_ensemble(
            "Ensemble",
            method,
            ["A", "B"],
            [files[m][1] for m in "AB"],
            [files[m][2] for m in "AB"],
            {"bootstrap": 100},
            out / "metrics.json",
            out / "val.csv",
            out / "test.csv",
        )
    kept, flipped = runs[False], runs[True]
    assert kept["ensemble"] == flipped["ensemble"]
    assert kept["threshold"] == flipped["threshold"]
    assert kept["calibration"]["temperature"] == flipped["calibration"]["temperature"]
    assert (kept["referral"]["lo"], kept["referral"]["hi"]) == (
        flipped["referral"]["lo"],
        flipped["referral"]["hi"],
    )
    written = json.loads((tmp_path / "flipFalse/ensemble/metrics.json").read_text())
    assert written["architecture"] == "Ensemble" and written["ensemble"]["method"] == method
    test = pd.read_csv(tmp_path / "flipFalse/ensemble/test.csv")
    expected = en.combine(test_members, kept["ensemble"])
    assert np.allclose(test["probability_all"], expected, atol=1e-12)


def test_members_on_other_images_are_refused(tmp_path):
    y, members = member_scores(n=40)
    files = []
    for i, name in enumerate("AB"):
        folder = tmp_path / name
        folder.mkdir()
        files.append(write_member(folder, members[i], members[i], y, y))
    other = pd.read_csv(files[1][2]).assign(path=lambda f: "elsewhere/" + f["path"])
    other.to_csv(files[1][2], index=False)
    with pytest.raises(LeukoflowError, match="different test images"):
        en.run_ensemble(
            "E", "mean", ["A", "B"], [f[1] for f in files], [f[2] for f in files], {},
            tmp_path / "m.json", tmp_path / "v.csv", tmp_path / "t.csv",
        )  # fmt: skip


def test_the_ensemble_command_matches_members_to_files_by_name(tmp_path, capsys):
    """`leukoflow ensemble` takes {member: file}: the same ensemble whatever the mapping's
    order, and a file missing for a member (or given for another) is named."""
    from leukoflow.cli import main

    y_val, val_members = member_scores(seed=3)
    y_test, test_members = member_scores(seed=4)
    files = {}
    for i, name in enumerate(["A", "B"]):
        folder = tmp_path / name
        folder.mkdir()
        files[name] = write_member(folder, val_members[i], test_members[i], y_val, y_test)
    by_hand = en.run_ensemble(
        "E", "stacked", ["A", "B"], [files[m][1] for m in "AB"], [files[m][2] for m in "AB"],
        {"bootstrap": 100}, tmp_path / "m.json", tmp_path / "v.csv", tmp_path / "t.csv",
    )  # fmt: skip

    def run(val, test, out):
        return main(
            [
                "ensemble", "--name", "E", "--method", "stacked", "--members", "A", "B",
                "--val", json.dumps(val), "--test", json.dumps(test),
                "--evaluate", '{"bootstrap": 100}', "--metrics", str(out / "m.json"),
                "--val-predictions", str(out / "v.csv"), "--test-predictions", str(out / "t.csv"),
            ]
        )  # fmt: skip

    val = {m: str(files[m][1]) for m in "BA"}  # not the members' order
    test = {m: str(files[m][2]) for m in "BA"}
    assert run(val, test, tmp_path / "cli") == 0
    written = json.loads((tmp_path / "cli/m.json").read_text())
    assert written["ensemble"] == by_hand["ensemble"]
    assert written["ensemble"]["members"] == ["A", "B"]
    assert run({"A": val["A"], "C": val["B"]}, test, tmp_path / "bad") == 2
    assert "--val: missing B, unknown C; expected A, B" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_methods_are_the_schemas_and_the_commands():
    """A new method is added to `METHODS` (and `fit_combiner`, `combine`); the schema's enum
    and `leukoflow ensemble --method` must list the same."""
    import argparse

    import yaml

    from leukoflow.cli import build_parser
    from leukoflow.core.settings import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["ensembles"]
    assert schema["additionalProperties"]["properties"]["method"]["enum"] == list(en.METHODS)
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    method = next(a for a in commands.choices["ensemble"]._actions if a.dest == "method")
    assert list(method.choices) == list(en.METHODS)
