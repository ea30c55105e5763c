"""Temperature scaling: the fit recovers a known temperature, keeps the order, CIs pair up."""

import numpy as np
import pytest

from leukoflow.evaluate import calibration as cal
from leukoflow.evaluate.metrics import subject_resamples


def draws(temperature, n=4000, seed=0):
    """Labels drawn from sigmoid(z / temperature): a model whose logits z are off by T."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n)
    y = (rng.random(n) < cal.sigmoid(z / temperature)).astype(int)
    return y, cal.sigmoid(z)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_of_the_labels(temperature):
    y, p = draws(temperature)
    assert cal.fit_temperature(y, p) == pytest.approx(temperature, rel=0.1)


def test_fit_minimises_the_validation_likelihood():
    y, p = draws(2.0, n=500, seed=1)
    found = cal.fit_temperature(y, p)

    def nll(t):
        q = cal.apply_temperature(p, t)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    for other in (found * 0.9, found * 1.1, 1.0):
        assert nll(found) <= nll(other) + 1e-12


def test_apply_keeps_the_order_and_is_the_identity_at_one():
    p = np.array([0.01, 0.2, 0.5, 0.7, 0.999])
    assert np.array_equal(cal.apply_temperature(p, 1.0), p)
    hot = cal.apply_temperature(p, 3.0)
    assert np.all(np.diff(hot) > 0) and hot[2] == pytest.approx(0.5)
    assert hot[0] > p[0] and hot[-1] < p[-1]  # softer
    direct = 1 / (1 + np.exp(-np.log(p / (1 - p)) / 3.0))
    assert np.allclose(hot, direct, atol=1e-12)


def test_separated_validation_logits_stop_at_the_bound():
    y = np.array([0, 0, 1, 1])
    assert cal.fit_temperature(y, [0.2, 0.3, 0.7, 0.8]) == pytest.approx(0.05, rel=1e-3)


def test_summary_before_and_after_on_the_same_resamples():
    y, p = draws(3.0, n=600, seed=2)
    subjects = np.arange(len(y)) // 20
    weights = subject_resamples(subjects, y, 300, seed=0)
    calibrated = cal.apply_temperature(p, cal.fit_temperature(y, p))
    summary = cal.calibration_summary(y, p, calibrated, weights)
    assert summary["before"]["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert summary["after"]["ece"] < summary["before"]["ece"]
    lo, hi = summary["change"]["ece_ci"]
    assert hi < 0  # over-confident by T = 3: calibration helps in every resample's bulk
    assert summary["change"]["brier"] == pytest.approx(
        summary["after"]["brier"] - summary["before"]["brier"]
    )
