"""Evaluation: every metric against scikit-learn, the subject bootstrap, what is fitted on
validation (threshold, temperature, referral band) and nothing else, TTA."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from leukoflow.data import synth
from leukoflow.evaluate import job as ev
from leukoflow.evaluate import metrics as lm
from leukoflow.models import inference


def synthetic_predictions(n_subjects=12, per_subject=20, seed=0, skill=1.5):
    """A predictions frame: subjects with one label each, noisy but informative scores."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_subjects) % 2
    rows = []
    for s, label in enumerate(labels):
        offset = rng.normal(0, 0.7)  # subject effect: images of one subject are correlated
        logits = skill * (2 * label - 1) + offset + rng.normal(0, 1, per_subject)
        for i, logit in enumerate(logits):
            rows.append((f"s{s}", int(label), float(1 / (1 + np.exp(-logit))), f"img_{s}_{i}.bmp"))
    frame = pd.DataFrame(rows, columns=["subject", "y", "probability_all", "path"])
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


def direct_ece(y, p, bins=10):
    """ECE written the plain way, one bin at a time."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if inside.any():
            total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return total


def assert_same(ours, expected):
    for name, value in expected.items():
        got = np.asarray(ours[name], float)
        assert np.allclose(got, value, rtol=0, atol=1e-12), (name, got, value)


def sklearn_metrics(y, p, predicted):
    return {
        "precision": skm.precision_score(y, predicted, zero_division=0),
        "recall": skm.recall_score(y, predicted, zero_division=0),
        "f1": skm.f1_score(y, predicted, zero_division=0),
        "weighted_f1": skm.f1_score(y, predicted, average="weighted", zero_division=0),
        "macro_f1": skm.f1_score(y, predicted, average="macro", zero_division=0),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "accuracy": skm.accuracy_score(y, predicted),
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "brier": skm.brier_score_loss(y, p),
        "ece": direct_ece(y, p),
        "confusion": skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    frame = synthetic_predictions(seed=seed)
    y, p = frame["y"].to_numpy(), frame["probability_all"].to_numpy()
    p = np.round(p, 2)  # ties, which the ranking metrics must group as scikit-learn does
    ours = lm.binary_metrics(y, p, 0.4)
    assert_same(ours, sklearn_metrics(y, p, (p >= 0.4).astype(int)))


def test_degenerate_predictions_match_sklearn():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.65])
    ours = lm.binary_metrics(y, p, 0.99)  # nothing called `all`
    assert_same(ours, sklearn_metrics(y, p, np.zeros(5, int)))


def test_bootstrap_weights_equal_duplicated_pool():
    """Metrics under multiplicity weights are the metrics of the explicitly resampled pool."""
    frame = synthetic_predictions(seed=3)
    y, p = frame["y"].to_numpy(), np.round(frame["probability_all"].to_numpy(), 2)
    predicted = (p >= 0.5).astype(int)
    weights = lm.subject_resamples(frame["subject"], y, 3, seed=5)
    values = lm.weighted_metrics(y, p, predicted, weights)
    for b in range(3):
        idx = np.repeat(np.arange(len(y)), weights[b].astype(int))
        ours = {name: value[b] for name, value in values.items()}
        assert_same(ours, sklearn_metrics(y[idx], p[idx], predicted[idx]))


def test_subject_resamples_keep_subjects_whole_and_strata():
    frame = synthetic_predictions(n_subjects=6, per_subject=5)
    weights = lm.subject_resamples(frame["subject"], frame["y"], 50, seed=0)
    for subject, rows in frame.groupby("subject").groups.items():
        assert (weights[:, rows] == weights[:, rows[:1]]).all(), subject
    per_label = [weights[:, frame["y"].to_numpy() == label].sum(axis=1) for label in (0, 1)]
    assert (per_label[0] == 15).all() and (per_label[1] == 15).all()


def test_subject_bootstrap_wider_than_image_bootstrap_when_one_subject_dominates():
    """One subject holds most images and is mostly wrong: subjects, not images, are the unit."""
    rng = np.random.default_rng(0)
    subjects, y, p = [], [], []
    for s in range(10):
        label = s % 2
        n = 400 if s == 0 else 20
        good = 0.15 if s == 0 else 0.85  # the dominant subject is mostly misclassified
        correct = rng.random(n) < good
        prob = np.where(correct == (label == 1), 0.8, 0.2)
        subjects += [f"s{s}"] * n
        y += [label] * n
        p += list(prob)
    y, p = np.array(y), np.array(p)
    predicted = (p >= 0.5).astype(int)
    subj = lm.bootstrap_ci(y, p, predicted, lm.subject_resamples(subjects, y, 1000, 0))
    img = lm.bootstrap_ci(y, p, predicted, lm.image_resamples(len(y), 1000, 0))
    for metric in ("f1", "weighted_f1", "balanced_accuracy", "accuracy"):
        width_subj = subj[metric][1] - subj[metric][0]
        width_img = img[metric][1] - img[metric][0]
        assert width_subj > 2 * width_img, metric


def test_no_test_label_moves_anything_fitted():
    """Flip every test label: threshold, temperature and referral band stay as they were."""
    val = synthetic_predictions(seed=0)
    test = synthetic_predictions(seed=1)
    m1, _, t1 = ev.evaluate_predictions(val, test, "max_f1", n_bootstrap=100)
    flipped = test.assign(y=1 - test["y"])  # different test labels, same everything else
    m2, _, t2 = ev.evaluate_predictions(val, flipped, "max_f1", n_bootstrap=100)
    assert m1["threshold"] == m2["threshold"]
    assert m1["calibration"]["temperature"] == m2["calibration"]["temperature"]
    for key in ("lo", "hi", "met", "val_share_referred", "val_value"):
        assert m1["referral"][key] == m2["referral"][key], key
    for column in ("calibrated_probability_all", "predicted", "referred"):
        assert (t1[column] == t2[column]).all(), column
    assert m1["test"]["f1"] != m2["test"]["f1"]
    assert (t2["predicted"] == (t2["calibrated_probability_all"] >= m2["threshold"])).all()
    assert ev.evaluate_predictions(val, test, "0.5", n_bootstrap=100)[0]["threshold"] == 0.5


def test_calibration_and_referral_are_reported_with_cis():
    val = synthetic_predictions(seed=2, skill=0.8)
    test = synthetic_predictions(seed=3, skill=0.8)
    metrics, _, out = ev.evaluate_predictions(
        val, test, n_bootstrap=200, referral_metric="sensitivity", referral_target=0.9
    )
    calibration = metrics["calibration"]
    for arm in ("before", "after"):
        for name in ("brier", "ece"):
            lo, hi = calibration[arm][f"{name}_ci"]
            assert lo <= calibration[arm][name] + 1e-9 <= hi + 2e-9, (arm, name)
    y, p = out["y"].to_numpy(float), out["calibrated_probability_all"].to_numpy()
    assert calibration["after"]["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert metrics["test"]["brier"] == pytest.approx(calibration["after"]["brier"])
    referral = metrics["referral"]
    assert referral["lo"] <= metrics["threshold"] <= referral["hi"]
    kept = out[out["referred"] == 0]
    assert referral["test"]["n_referred"] == int(out["referred"].sum())
    assert referral["test"]["rest"]["sensitivity"] == pytest.approx(
        skm.recall_score(kept["y"], kept["predicted"])
    )
    assert 0 <= metrics["risk_coverage"]["aurc"] <= 1


def with_uncertainty(frame, seed):
    """The frame with an `mc_std` high near p = 0.5 (noisy) and an uninformative
    `tta_spread`."""
    rng = np.random.default_rng(seed)
    p = frame["probability_all"].to_numpy()
    mc_std = np.clip(0.25 - np.abs(p - 0.5) / 2 + rng.normal(0, 0.03, len(p)), 0, None)
    return frame.assign(mc_std=mc_std, tta_spread=rng.random(len(p)) * 0.1)


def test_referral_by_uncertainty_is_fitted_on_validation_and_applied_to_test():
    val = with_uncertainty(synthetic_predictions(seed=4, skill=0.8), 0)
    test = with_uncertainty(synthetic_predictions(seed=5, skill=0.8), 1)
    config = {"bootstrap": 100, "referral": {"by": "uncertainty", "target": 0.9}}
    m1, v1, t1 = ev.evaluate_with_config(val, test, config)
    rule = m1["referral"]
    assert rule["by"] == "uncertainty" and rule["column"] == "mc_std" and rule["met"]
    assert (t1["referred"] == (t1["mc_std"] >= rule["cut"])).all()
    assert (v1["referred"] == (v1["mc_std"] >= rule["cut"])).all()
    assert rule["test"]["n_referred"] == int(t1["referred"].sum())
    assert rule["val_share_referred"] == pytest.approx(v1["referred"].mean())
    flipped = test.assign(y=1 - test["y"])  # test labels move nothing fitted
    m2, _, t2 = ev.evaluate_with_config(val, flipped, config)
    assert {k: m2["referral"][k] for k in ("column", "cut", "val_share_referred")} == {
        k: rule[k] for k in ("column", "cut", "val_share_referred")
    }
    assert (t1["referred"] == t2["referred"]).all()
    bare = {"referral": {"by": "uncertainty"}, "bootstrap": 10}
    with pytest.raises(ev.LeukoflowError, match="needs a per-cell uncertainty"):
        ev.evaluate_with_config(synthetic_predictions(seed=4), synthetic_predictions(seed=5), bare)


def test_max_f1_threshold_is_best_on_validation():
    frame = synthetic_predictions(seed=4, skill=0.8)
    y, p = frame["y"].to_numpy(), frame["probability_all"].to_numpy()
    t = ev.choose_threshold(y, p, "max_f1")
    best = max(skm.f1_score(y, (p >= c).astype(int)) for c in np.unique(p))
    assert skm.f1_score(y, (p >= t).astype(int)) == pytest.approx(best)
    with pytest.raises(ev.LeukoflowError, match="unknown rule"):
        ev.choose_threshold(y, p, "youden")


def test_paired_bootstrap_prefers_the_better_model():
    frame = synthetic_predictions(n_subjects=16, seed=6)
    y = frame["y"].to_numpy()
    good = (frame["probability_all"].to_numpy() >= 0.5).astype(int)
    rng = np.random.default_rng(0)
    bad = np.where(rng.random(len(y)) < 0.3, 1 - good, good)
    share, gap = lm.paired_bootstrap(y, frame["subject"], good, bad, 500, seed=0)
    assert share > 0.95 and gap > 0
    share_same, _ = lm.paired_bootstrap(y, frame["subject"], good, good, 200, seed=0)
    assert share_same == 0.5  # a tie in every resample: noise, not "the other is better"


def test_evaluate_writes_the_contract(tmp_path):
    val, test = synthetic_predictions(seed=0), synthetic_predictions(seed=1)
    metrics, val_out, test_out = ev.evaluate_predictions(val, test, n_bootstrap=200)
    ev.write_evaluation(
        metrics,
        val_out,
        test_out,
        tmp_path / "metrics.json",
        tmp_path / "val_predictions.csv",
        tmp_path / "test_predictions.csv",
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("threshold", "threshold_rule", "n_test", "test", "ci", "val", "per_subject"):
        assert key in saved
    for name in ("precision", "recall", "f1", "weighted_f1", "macro_f1", "roc_auc", "ece"):
        lo, hi = saved["ci"][name]
        assert lo <= saved["test"][name] + 1e-9 and saved["test"][name] <= hi + 1e-9, name
    assert sum(s["n"] for s in saved["per_subject"]) == saved["n_test"] == len(test)
    written = pd.read_csv(tmp_path / "test_predictions.csv")
    assert list(written.columns) == ev.PREDICTION_COLUMNS


def intervals(value, path=""):
    """Every interval in a metrics dict: {path: [lo, hi]} of each `ci` or `*_ci` entry."""
    out = {}
    for key, inner in value.items():
        where = f"{path}.{key}" if path else key
        if key == "ci" or key.endswith("_ci"):
            if isinstance(inner, dict):
                out.update({f"{where}.{k}": v for k, v in inner.items()})
            else:
                out[where] = inner
        elif isinstance(inner, dict):
            out.update(intervals(inner, where))
    return out


def test_subjects_are_counted_per_class_and_too_few_is_said():
    subjects = ["a", "a", "b", "c", "c", "c"]
    labels = [1, 1, 0, 1, 0, 0]  # c: two of three images hem, so a hem subject
    assert lm.subject_classes(subjects, labels) == {"all": 1, "hem": 2}
    assert lm.subject_classes([], []) == {"all": 0, "hem": 0}
    assert lm.too_few_subjects({"all": 2, "hem": 1}) == "CI: too few test subjects (2 all, 1 hem)"
    assert lm.too_few_subjects({"all": 3, "hem": 3}) is None
    assert lm.too_few_subjects({"all": 2, "hem": 5}, minimum=2) is None


def test_a_two_subject_test_subset_gets_point_estimates_and_no_interval():
    val = synthetic_predictions(seed=2)
    test = synthetic_predictions(n_subjects=2, per_subject=10, seed=3)  # one all, one hem
    metrics, _, out = ev.evaluate_with_config(val, test, {"bootstrap": 100})
    assert metrics["test_subjects"] == {"all": 1, "hem": 1}
    assert metrics["min_subjects_per_class"] == lm.MIN_SUBJECTS_PER_CLASS == 3
    assert metrics["ci_note"] == "CI: too few test subjects (1 all, 1 hem)"
    found = intervals(metrics)
    assert {"ci.f1", "calibration.after.ece_ci", "referral.test.share_referred_ci"} <= set(found)
    assert all(pair == [None, None] for pair in found.values()), found
    expected = sklearn_metrics(out["y"], out["calibrated_probability_all"], out["predicted"])
    assert_same(metrics["test"], {k: expected[k] for k in ("f1", "roc_auc", "weighted_f1")})
    # the same subset with the minimum lowered to one subject per class has its intervals
    metrics, _, _ = ev.evaluate_with_config(
        val, test, {"bootstrap": 100, "min_subjects_per_class": 1}
    )
    assert "ci_note" not in metrics
    assert all(None not in pair for pair in intervals(metrics).values())


def test_the_schema_default_of_the_minimum_is_the_library_default():
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[3] / "config" / "schema.yaml").read_text())
    minimum = schema["properties"]["evaluate"]["properties"]["min_subjects_per_class"]
    assert minimum["default"] == lm.MIN_SUBJECTS_PER_CLASS


@pytest.mark.slow
def test_rotations_for_tta():
    yy, xx = np.mgrid[:32, :32]
    smooth = 100 + 50 * np.sin(xx / 3) + 40 * np.cos(yy / 4)
    images = np.repeat(smooth[None, ..., None], 3, axis=-1).astype("float32")
    quarter = np.rot90(images, 1, axes=(1, 2))
    assert np.array_equal(inference.rotate_batch(images, 90), quarter)
    assert np.array_equal(inference.rotate_batch(images, 0), images)
    # a general angle through keras.ops.image: 45 degrees twice is 90 (same sense) in the disc
    twice = inference.rotate_batch(inference.rotate_batch(images, 45), 45)
    disc = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 10**2
    assert np.abs(twice - quarter)[:, disc].mean() < 0.05 * np.abs(images - quarter)[:, disc].mean()


def test_predict_store_pads_batches_and_averages_rotations():
    rng = np.random.default_rng(0)
    store = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    seen = []

    def corner_brightness(x):
        seen.append(x.shape)
        return x[:, 0, 0, 0] / 255.0

    plain = inference.predict_store(corner_brightness, store, batch_size=4)
    assert seen == [(4, 8, 8, 3)] * 2
    assert np.allclose(plain, store[:, 0, 0, 0] / 255.0)
    tta = inference.predict_store(corner_brightness, store, batch_size=4, tta=4)
    corners = store[:, [0, 0, -1, -1], [0, -1, 0, -1], 0].mean(axis=1) / 255.0
    assert np.allclose(tta, corners, atol=1e-6)


@pytest.mark.slow
def test_evaluate_subcommand_with_a_real_model(tmp_path):
    import keras

    from leukoflow.cli import main
    from leukoflow.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("SimpleNet", 32)
    model.save(tmp_path / "model.keras")
    synth.write_store(tmp_path, 8, 32, seed=1, stem="val")
    test_images = np.load(synth.write_store(tmp_path, 12, 32, seed=2, stem="test"))
    out = tmp_path / "main" / "evaluate" / "SimpleNet"
    config = {"threshold": "0.5", "bootstrap": 100, "tta": 4, "seed": 0}
    args = ["evaluate", "--model", str(tmp_path / "model.keras")]
    args += ["--val", str(tmp_path / "val.npy"), "--test", str(tmp_path / "test.npy")]
    args += ["--settings", json.dumps({"architecture": "SimpleNet", "batch_size": 5})]
    outputs = ["--metrics", str(out / "metrics.json"), "--split-id", "main"]
    outputs += ["--val-predictions", str(out / "val_predictions.csv")]
    outputs += ["--test-predictions", str(out / "test_predictions.csv")]
    assert main([*args, "--evaluate", json.dumps(config), *outputs]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["architecture"] == "SimpleNet" and metrics["split"] == "main"
    assert metrics["tta"] == 4 and metrics["threshold"] == 0.5 and metrics["n_test"] == 12
    test = pd.read_csv(out / "test_predictions.csv")
    x = test_images.astype("float32")
    rotations = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    expected = np.mean([model.predict(r, verbose=0).reshape(-1) for r in rotations], axis=0)
    assert np.allclose(test["probability_all"], expected, atol=1e-5)
    assert (test["predicted"] == (test["calibrated_probability_all"] >= 0.5)).all()
    bad = [*args, "--evaluate", "{not json", *outputs]
    assert main(bad) == 2
