"""Referral: the band and the uncertainty cut chosen on validation against brute-force
searches, the risk-coverage curve against a direct computation, the test summary against
plain counts."""

import itertools

import numpy as np
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate import referral as rf
from leukoflow.evaluate.metrics import subject_resamples


def scores(n=120, seed=0, skill=1.2):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    p = 1 / (1 + np.exp(-(skill * (2 * y - 1) + rng.normal(0, 1.2, n))))
    return y, np.round(p, 2)  # rounded: ties, as real probabilities have


def brute_force_band(y, p, t, metric, target):
    """Every band [lo, hi) with lo <= t <= hi over the distinct probabilities, the plain way."""
    values = np.unique(np.r_[p, t, 0.0, 1.0])
    best = None
    for lo, hi in itertools.product(values[values <= t], values[values >= t]):
        referred = (p >= lo) & (p < hi)
        keep = ~referred
        called = p >= t
        tp = np.sum(keep & called & (y == 1))
        fp = np.sum(keep & called & (y == 0))
        fn = np.sum(keep & ~called & (y == 1))
        tn = np.sum(keep & ~called & (y == 0))
        value = rf.metric_of_counts(metric, tp, fp, fn, tn)
        if np.isnan(value) or value < target:
            continue
        share = referred.mean()
        if best is None or share < best[0] - 1e-12:
            best = (share, value)
    return best


@pytest.mark.parametrize(
    "metric, target", [("sensitivity", 0.95), ("specificity", 0.9), ("precision", 0.9)]
)
def test_band_refers_the_fewest_cells_that_meet_the_target(metric, target):
    y, p = scores(seed=1)
    t = 0.5
    band = rf.choose_band(y, p, t, metric, target)
    share, _ = brute_force_band(y, p, t, metric, target)
    assert band["met"] and band["lo"] <= t <= band["hi"]
    assert band["val_share_referred"] == pytest.approx(share)
    referred = rf.referred_mask(p, band["lo"], band["hi"])
    assert referred.mean() == pytest.approx(share)
    keep = ~referred
    called = p >= t
    counts = [np.sum(keep & (called == c) & (y == v)) for c, v in ((1, 1), (1, 0), (0, 1), (0, 0))]
    assert rf.metric_of_counts(metric, *counts) >= target


def test_no_band_when_the_target_is_already_met():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.8, 0.9])
    band = rf.choose_band(y, p, 0.5, "sensitivity", 0.95)
    assert band["lo"] == band["hi"] == 0.5 and band["val_share_referred"] == 0
    assert rf.describe_rule(band) == "nothing referred"


def test_unreachable_target_is_reported_not_met():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.9, 0.9, 0.9, 0.9])  # one tie: nothing separates
    band = rf.choose_band(y, p, 0.5, "precision", 0.99)
    assert not band["met"]


def test_unknown_metric_is_refused():
    with pytest.raises(LeukoflowError, match="allowed: sensitivity"):
        rf.choose_band([0, 1], [0.2, 0.8], 0.5, "youden", 0.9)


def test_risk_coverage_against_a_direct_computation():
    y, p = scores(n=80, seed=3)
    t = 0.45
    coverage, risk, aurc = rf.risk_coverage(y, p, t)
    confidence = np.abs(p - t)
    errors = (p >= t).astype(int) != y
    direct_cov, direct_risk = [], []
    for level in sorted(set(confidence), reverse=True):
        kept = confidence >= level
        direct_cov.append(kept.mean())
        direct_risk.append(errors[kept].mean())
    assert np.allclose(coverage, direct_cov) and np.allclose(risk, direct_risk)
    assert aurc == pytest.approx(np.sum(np.diff(np.r_[0, direct_cov]) * direct_risk))
    assert coverage[-1] == 1 and risk[-1] == pytest.approx(errors.mean())


def test_summary_counts_the_rest_and_brackets_it():
    y, p = scores(n=200, seed=4)
    subjects = np.arange(len(y)) // 10
    band = {"lo": 0.35, "hi": 0.6}
    predicted = (p >= 0.5).astype(int)
    referred = rf.referred_by(band, p)
    summary = rf.referral_summary(y, p, predicted, referred, subject_resamples(subjects, y, 200, 0))
    assert np.array_equal(referred, (p >= 0.35) & (p < 0.6))  # a band without `by`
    keep = ~referred
    assert summary["n_referred"] == referred.sum()
    assert summary["share_referred"] == pytest.approx(referred.mean())
    tp = np.sum(keep & (predicted == 1) & (y == 1))
    fn = np.sum(keep & (predicted == 0) & (y == 1))
    assert summary["rest"]["sensitivity"] == pytest.approx(tp / (tp + fn))
    lo, hi = summary["share_referred_ci"]
    assert lo <= summary["share_referred"] <= hi


def brute_force_cut(y, p, u, t, metric, target):
    """(share referred, cut) of the fewest-referring cut u >= c meeting the target."""
    best = None
    for cut in [*np.unique(u), np.inf]:
        keep = u < cut
        called = p >= t
        counts = [
            np.sum(keep & (called == c) & (y == v)) for c, v in ((1, 1), (1, 0), (0, 1), (0, 0))
        ]
        value = rf.metric_of_counts(metric, *counts)
        if not np.isnan(value) and value >= target and (best is None or (~keep).mean() < best[0]):
            best = ((~keep).mean(), cut)
    return best


@pytest.mark.parametrize("metric, target", [("sensitivity", 0.95), ("accuracy", 0.9)])
def test_uncertainty_cut_refers_the_fewest_cells_that_meet_the_target(metric, target):
    y, p = scores(seed=5)
    t = 0.5
    # an uncertainty that is high near the threshold, with noise and ties
    u = np.round(0.5 - np.abs(p - t) + np.random.default_rng(6).normal(0, 0.05, len(p)), 2)
    rule = rf.choose_cut(y, p, u, t, metric, target, "mc_std")
    share, cut = brute_force_cut(y, p, u, t, metric, target)
    assert rule["met"] and rule["by"] == "uncertainty" and rule["column"] == "mc_std"
    assert rule["val_share_referred"] == pytest.approx(share) and rule["cut"] == cut
    referred = rf.referred_by(rule, p, {"mc_std": u})
    assert np.array_equal(referred, u >= cut) and referred.mean() == pytest.approx(share)
    assert rf.describe_rule(rule) == f"mc_std >= {cut:.3f}"


def test_no_cut_when_the_target_is_already_met_and_its_record():
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    rule = rf.choose_cut(y, p, [0.3, 0.1, 0.2, 0.0], 0.5, "sensitivity", 0.95, "tta_spread")
    assert rule["cut"] is None and rule["val_share_referred"] == 0
    assert not rf.referred_by(rule, p, {"tta_spread": [9, 9, 9, 9]}).any()
    assert rf.rule_record({**rule, "test": {}}) == {
        "by": "uncertainty", "column": "tta_spread", "cut": None,
        "metric": "sensitivity", "target": 0.95,
    }  # fmt: skip
    with pytest.raises(LeukoflowError, match="refers cells by their tta_spread, which was not"):
        rf.referred_by(rule, p, {"mc_std": [0, 0, 0, 0]})


def test_the_column_that_ranks_validation_errors_best_is_chosen():
    y, p = scores(n=200, seed=7)
    t = 0.5
    errors = ((p >= t).astype(int) != y).astype(float)
    noise = np.random.default_rng(8).random(len(y))
    informative, useless = errors + 0.1 * noise, noise  # the first ranks every error first
    chosen = rf.choose_column(y, p, t, {"tta_spread": useless, "mc_dropout": informative})
    assert chosen == "mc_dropout"
    with pytest.raises(LeukoflowError, match="set evaluate.mc_dropout"):
        rf.choose_column(y, p, t, {})
