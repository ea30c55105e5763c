"""The subject-level call and the cells-needed curve against hand computations, fitted on
validation subjects only; predict's grouping of cells into patients."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from leukoflow.cli import main
from leukoflow.core.errors import LeukoflowError
from leukoflow.core.settings import config_block
from leukoflow.deploy import patients as by_patient
from leukoflow.deploy.modelcard_sections import patients_section
from leukoflow.deploy.predict import Prediction
from leukoflow.evaluate import cells_needed as cn
from leukoflow.evaluate import patients as pt


def cells(rows, threshold=0.5):
    """Cell predictions from (subject, y, p[, referred]) rows; called `all` at `threshold`."""
    frame = pd.DataFrame(
        [(*row, 0) if len(row) == 3 else row for row in rows],
        columns=["subject", "y", "calibrated_probability_all", "referred"],
    )
    frame["predicted"] = (frame["calibrated_probability_all"] >= threshold).astype(int)
    return frame


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


def logit(p):
    return math.log(p / (1 - p))


SMALL = cells([("7", 1, 0.9), ("7", 1, 0.6, 1), ("7", 1, 0.3), ("H1", 0, 0.2), ("H1", 0, 0.4)])


@pytest.mark.parametrize(
    ("aggregator", "expected"),
    [
        ("mean_probability", {"7": 0.6, "H1": 0.3}),
        ("fraction_all", {"7": 2 / 3, "H1": 0.0}),
        (
            "mean_logit",
            {
                "7": sigmoid((logit(0.9) + logit(0.6) + logit(0.3)) / 3),
                "H1": sigmoid((logit(0.2) + logit(0.4)) / 2),
            },
        ),
    ],
)
def test_each_aggregator_by_hand(aggregator, expected):
    table = pt.subject_table(SMALL, aggregator).set_index("subject")
    assert table["aggregate"].to_dict() == pytest.approx(expected, abs=1e-12)
    assert table["cells"].to_dict() == {"7": 3, "H1": 2}
    assert table["referred"].to_dict() == {"7": 1, "H1": 0}  # counted, and aggregated
    assert table["truth"].to_dict() == {"7": "all", "H1": "hem"}


def test_an_unknown_aggregator_is_named():
    with pytest.raises(LeukoflowError, match="patients.aggregator: unknown aggregator 'median'"):
        pt.subject_table(SMALL, "median")


# One cell per subject, so each aggregate is its cell's probability.
VAL = cells([("1", 1, 0.9), ("2", 1, 0.7), ("H3", 0, 0.6), ("4", 1, 0.4), ("H5", 0, 0.2)])
TEST = cells([("6", 1, 0.35), ("H7", 0, 0.25), ("8", 1, 0.2)])


def test_the_patient_threshold_is_chosen_on_validation_subjects_by_the_cell_rule():
    # Sorted: .9 (all) .7 (all) .6 (hem) .4 (all) .2 (hem); F1 of `all` when cutting after
    # each: 1/2, 4/5, 2/3, 6/7, 3/4: the best calls the top four, halfway to .2 gives .3.
    fitted, subjects = pt.fit_and_score(VAL, TEST, "mean_probability", min_per_class=1)
    assert fitted["threshold"] == pytest.approx(0.3)
    assert fitted["val"] == {"subjects": 5, "n_all": 3, "n_hem": 2}
    test = subjects[subjects["subset"] == "test"].set_index("subject")
    assert test["call"].to_dict() == {"6": "all", "8": "hem", "H7": "hem"}
    assert test["correct"].to_dict() == {"6": 1, "8": 0, "H7": 1}
    assert fitted["test"]["correct"] == 2
    fixed, _ = pt.fit_and_score(VAL, TEST, "mean_probability", threshold_rule="0.5")
    assert fixed["threshold"] == 0.5


def test_no_all_subject_in_validation_is_a_clear_error():
    with pytest.raises(LeukoflowError, match="patient threshold: .*validation subjects"):
        pt.fit_and_score(VAL[VAL["y"] == 0], TEST, "mean_probability")


def test_clopper_pearson_by_hand():
    assert pt.clopper_pearson(0, 3) == pytest.approx([0.0, 1 - 0.025 ** (1 / 3)])
    assert pt.clopper_pearson(3, 3) == pytest.approx([0.025 ** (1 / 3), 1.0])
    assert pt.clopper_pearson(5, 10) == pytest.approx([0.187086, 0.812914], abs=1e-6)
    assert pt.clopper_pearson(2, 3) == pytest.approx([0.094299, 0.991596], abs=1e-6)
    with pytest.raises(LeukoflowError, match="k=4, n=3"):
        pt.clopper_pearson(4, 3)


def test_subject_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0]
    aggregates = [0.9, 0.8, 0.2, 0.1, 0.5, 0.3]
    out = pt.subject_metrics(y, aggregates, 0.4, min_per_class=3, n_bootstrap=300, seed=0)
    # calls 1 1 0 0 1 0; every pair: .9 and .8 beat all three hem, .2 beats .1: 7 of 9
    assert out["roc_auc"] == pytest.approx(7 / 9)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(2 / 3)
    assert out["correct"] == 4 and out["ci_note"] is None
    assert out["sensitivity_ci"] == pytest.approx(pt.clopper_pearson(2, 3))
    assert out["specificity_ci"] == pytest.approx(pt.clopper_pearson(2, 3))
    lo, hi = out["roc_auc_ci"]
    assert 0 <= lo <= 7 / 9 <= hi <= 1 and lo < hi


def test_too_few_subjects_give_no_interval_but_say_so():
    out = pt.subject_metrics([1, 1, 0, 0, 0], [0.9, 0.6, 0.1, 0.7, 0.2], 0.5, min_per_class=3)
    assert out["sensitivity"] == 1.0 and out["specificity"] == pytest.approx(2 / 3)
    assert out["roc_auc_ci"] is None and out["sensitivity_ci"] is None
    assert out["specificity_ci"] is None
    assert out["ci_note"].startswith("too few subjects (2 all, 3 hem")
    assert "CI: too few subjects (2 all, 3 hem" in pt.scores_line(out)


# Four subjects at threshold .5: wrong cells A 1 of 4, B 1 of 2, C 1 of 3, D 0 of 2.
CURVE = cells(
    [("A", 1, p) for p in (0.9, 0.8, 0.3, 0.6)]
    + [("B", 1, p) for p in (0.7, 0.2)]
    + [("C", 0, p) for p in (0.1, 0.6, 0.2)]
    + [("D", 0, p) for p in (0.4, 0.3)]
)


def test_the_curve_by_hand_with_a_fixed_seed():
    curve = cn.curve_points(CURVE, "mean_probability", 0.5, [1, 2, 5, "all"], 4000, 0, "test")
    assert list(curve["cells"]) == ["1", "2", "all"]  # 5 is above every subject's 4 cells
    one, two, every = (curve.iloc[i] for i in range(3))
    # N = 1: a subject is wrong as often as its cells are: (1/4 + 1/2 + 1/3 + 0) / 4
    assert one["error_rate"] == pytest.approx((1 / 4 + 1 / 2 + 1 / 3) / 4, abs=0.02)
    assert one["sensitivity"] == pytest.approx(1 - (1 / 4 + 1 / 2) / 2, abs=0.02)
    assert one["specificity"] == pytest.approx(1 - (1 / 3) / 2, abs=0.02)
    # N = 2: A's six pairs have one mean below .5 (.3, .6); B's only pair averages .45;
    # C's and D's pairs all stay below .5
    assert two["error_rate"] == pytest.approx((1 / 6 + 1) / 4, abs=0.02)
    assert two["subjects_short"] == 0 and two["draws"] == 4000
    # all cells: A .65, B .45, C .3, D .35: only B wrong, the same in every draw; B still
    # ranks above both hem subjects, so the ROC-AUC is 1
    assert every["draws"] == 1 and every["error_rate"] == 0.25 and every["roc_auc"] == 1.0
    again = cn.curve_points(CURVE, "mean_probability", 0.5, [1, 2, 5, "all"], 4000, 0, "test")
    pd.testing.assert_frame_equal(curve, again)


def test_an_n_above_every_subjects_cells_is_all_of_them():
    curve = cn.curve_points(CURVE, "mean_probability", 0.5, [50, 1], 100, 0, "val")
    assert list(curve["cells"]) == ["1", "all"] and curve["error_rate"].iloc[1] == 0.25


def test_cells_are_drawn_without_replacement():
    one = cells([("A", 1, 0.1), ("A", 1, 0.5), ("A", 1, 0.9)])
    _, drawn = cn.draw_aggregates(one, "mean_probability", [2, "all"], 3000, 0)
    pairs = np.round(drawn[2][:, 0], 6)
    # with replacement .1 (0.1 twice) and .9 would appear; without, only the three pairs
    values, counts = np.unique(pairs, return_counts=True)
    assert list(values) == [0.3, 0.5, 0.7]
    assert counts / 3000 == pytest.approx([1 / 3] * 3, abs=0.03)
    assert np.allclose(drawn["all"], 0.5)


def test_smallest_n_needs_both_sensitivity_and_specificity():
    curve = pd.DataFrame(
        {
            "cells": ["1", "5", "10", "all"],
            "sensitivity": [0.99, 0.96, 0.97, 1.0],
            "specificity": [0.80, 0.94, 0.95, 1.0],
        }
    )
    assert cn.smallest_n(curve, 0.95) == 10
    assert cn.smallest_n(curve, 0.99) == "all"
    assert cn.smallest_n(curve.iloc[:3], 0.99) is None
    assert cn.smallest_n(curve.assign(specificity=np.nan), 0.5) is None


def synthetic(subjects, per_subject, seed):
    """Cells of `subjects` subjects, alternately all and hem, with noisy probabilities."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(subjects):
        y = s % 2
        for p in 1 / (1 + np.exp(-rng.normal(1.0 if y else -1.0, 1.5, per_subject))):
            rows.append((f"{'' if y else 'H'}{s}", y, float(p), int(abs(p - 0.5) < 0.05)))
    return cells(rows)


def test_flipping_test_labels_moves_no_fitted_value():
    val, test = synthetic(8, 20, 0), synthetic(8, 20, 1)
    block = config_block("patients", {"draws": 100})
    summary, _, _ = pt.patients_summary("M", val, test, block, {"bootstrap": 200})
    flipped, _, _ = pt.patients_summary(
        "M", val, test.assign(y=1 - test["y"]), block, {"bootstrap": 200}
    )
    for name in pt.AGGREGATORS:
        assert (
            flipped["aggregators"][name]["threshold"] == summary["aggregators"][name]["threshold"]
        )
    assert flipped["threshold"] == summary["threshold"]
    assert flipped["cells_needed"]["n"] == summary["cells_needed"]["n"]
    assert flipped["test"]["correct"] == 8 - summary["test"]["correct"]  # test was scored


def test_the_patients_command_writes_its_three_files(tmp_path, capsys):
    paths = {}
    for subset, frame in (("val", synthetic(6, 10, 2)), ("test", synthetic(6, 10, 3))):
        paths[subset] = tmp_path / f"{subset}.csv"
        frame.assign(row=range(len(frame)), path="x.bmp", probability_all=0.5).to_csv(
            paths[subset], index=False
        )
    out = {name: tmp_path / name for name in ("subjects.csv", "curve.csv", "patients.json")}
    args = ["patients", "--name", "M", "--val", str(paths["val"]), "--test", str(paths["test"])]
    args += ["--patients", '{"draws": 50, "aggregator": "mean_logit"}']
    args += ["--subjects", str(out["subjects.csv"]), "--curve", str(out["curve.csv"])]
    assert main([*args, "--summary", str(out["patients.json"])]) == 0
    summary = json.loads(out["patients.json"].read_text())
    assert summary["aggregator"] == "mean_logit" and summary["fitted_on"] == "validation subjects"
    subjects = pd.read_csv(out["subjects.csv"], dtype={"subject": str})
    assert list(subjects.columns) == pt.SUBJECT_COLUMNS and len(subjects) == 12
    curve = pd.read_csv(out["curve.csv"], dtype={"cells": str})
    assert list(curve["cells"]) == ["1", "2", "5", "all"] * 2  # 10 cells per subject
    pd.read_csv(paths["test"]).drop(columns="referred").to_csv(paths["test"], index=False)
    assert main([*args, "--summary", str(out["patients.json"])]) == 2
    assert f"{paths['test']}: lacks column(s) ['referred']" in capsys.readouterr().err


FIT = {"aggregator": "mean_probability", "threshold": 0.5, "cells_needed": {"n": 3}}


def test_predict_groups_cells_by_subject_or_folder():
    rows = [
        Prediction("a/UID_7_1_1_all.bmp", 0.9, "all", True, None),
        Prediction("a/UID_7_2_1_all.bmp", None, None, None, "truncated"),
        Prediction("b/UID_h3_1_1_hem.bmp", 0.2, "hem", False, None),
        Prediction("b/UID_7_3_1_all.bmp", 0.3, "hem", False, None),
        Prediction("b/cell.png", 0.8, "all", False, None),
    ]
    by_subject = {r["group"]: r for r in by_patient.patient_rows(rows, "subject", FIT)}
    assert list(by_subject) == ["7", "H3", by_patient.NO_SUBJECT]
    seven = by_subject["7"]
    assert (seven["cells"], seven["cells_with_errors"], seven["cells_used"]) == (3, 1, 2)
    assert seven["aggregate"] == pytest.approx(0.6) and seven["call"] == "all"
    assert seven["referred"] == 1 and seven["below_needed"] == 1 and seven["cells_needed"] == 3
    assert by_subject["H3"]["call"] == "hem"
    assert by_subject[by_patient.NO_SUBJECT]["call"] == ""  # no subject, no call
    by_folder = {r["group"]: r for r in by_patient.patient_rows(rows, "folder", FIT)}
    assert by_folder["b"]["cells"] == 3
    assert by_folder["b"]["aggregate"] == pytest.approx((0.2 + 0.3 + 0.8) / 3)
    unreached = by_patient.patient_rows(rows, "folder", {**FIT, "cells_needed": {"n": None}})
    assert unreached[0]["cells_needed"] == "not reached" and unreached[0]["below_needed"] == ""


def test_predict_patients_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(LeukoflowError, match="rebuild it with `leukoflow bundle --patients"):
        by_patient.patient_fit({"architecture": "VGG16"}, "subject")
    with pytest.raises(LeukoflowError, match="--patients must be one of subject, folder"):
        by_patient.patient_fit({"patients": FIT}, "slide")
    with pytest.raises(LeukoflowError, match="give the cells' CSV another name"):
        by_patient.patients_csv(tmp_path / "patients.csv")
    assert by_patient.patients_csv(tmp_path / "cells.csv") == tmp_path / "patients.csv"


def test_the_card_states_the_patient_call_and_what_it_was_fitted_on():
    val, test = synthetic(8, 20, 0), synthetic(4, 20, 1)
    block = config_block("patients", {"draws": 100})
    summary, _, _ = pt.patients_summary("M", val, test, block, {"bootstrap": 200})
    text = patients_section({"patients": {k: summary[k] for k in pt.BUNDLE_KEYS}})
    assert f"at least **{summary['threshold']:.4f}**" in text
    assert "fitted on the validation subjects only (8: 4 all, 4 hem)" in text
    assert "CI: too few subjects (2 all, 2 hem" in text  # four test subjects
    assert "100 draws of cells without replacement" in text
