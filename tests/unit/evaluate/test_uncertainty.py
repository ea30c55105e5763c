"""Per-cell uncertainty: MC dropout over the backbone's features computed once, the spread over
test-time views, and the risk-coverage area by each."""

import json

import numpy as np
import pytest

from leukoflow.core.errors import LeukoflowError
from leukoflow.evaluate import uncertainty
from leukoflow.evaluate.referral import risk_coverage
from leukoflow.models.inference import compiled_inference


def images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models():
    import keras

    from leukoflow.models import build_model

    keras.utils.set_random_seed(0)
    return {rate: build_model("SimpleNet", 32, dropout=rate) for rate in (0.0, 0.5)}


def test_mc_dropout_with_dropout_zero_has_no_spread(models):
    model = models[0.0]
    out = uncertainty.predict_with_uncertainty(model, compiled_inference(model), images(), 4,
                                               mc_dropout=5)  # fmt: skip
    assert set(out) == {"probability_all", "mc_std"}
    assert np.all(out["mc_std"] == 0)


def test_mc_dropout_heads_see_the_models_own_features_and_are_seeded(models):
    model = models[0.5]
    fn = compiled_inference(model)
    x = images().astype("float32")
    head = uncertainty.MCDropout.of_model(model)
    features = head.features(x)
    assert features.shape == (len(x), model.get_layer("head_pool").output.shape[-1])
    np.testing.assert_allclose(head.head(features), fn(x), atol=1e-5)  # no dropout: the model
    record = json.loads(json.dumps(head.head.record()))  # as bundle.json keeps it
    again = uncertainty.Head.from_record(record)
    assert again.rate == 0.5 and again.bias == head.head.bias
    np.testing.assert_array_equal(again.kernel, head.head.kernel)  # float32 weights, exact
    with pytest.raises(LeukoflowError, match="one sigmoid unit"):
        uncertainty.Head.from_record({**record, "activation": "softmax"})
    runs = [
        uncertainty.predict_with_uncertainty(model, fn, images(), 4, mc_dropout=6, seed=s)
        for s in (1, 1, 2)
    ]
    np.testing.assert_array_equal(runs[0]["mc_std"], runs[1]["mc_std"])
    assert np.all(runs[0]["mc_std"] > 0) and not np.array_equal(
        runs[0]["mc_std"], runs[2]["mc_std"]
    )
    np.testing.assert_allclose(runs[0]["probability_all"], fn(x), atol=1e-5)  # the model's P
    with pytest.raises(LeukoflowError, match="mc_dropout"):
        uncertainty.predict_with_uncertainty(model, fn, images(), 4, mc_dropout=-1)


def test_tta_spread_is_the_std_over_the_views():
    batch = images(n=5).astype("float32")

    def top_left(x):
        return x[:, 0, 0, 0] / 255.0

    out = uncertainty.predict_with_uncertainty(None, top_left, batch, 2, tta="dihedral")
    corners = batch[:, [0, 0, -1, -1], [0, -1, 0, -1], 0] / 255.0  # each twice in 8 views
    np.testing.assert_allclose(out["tta_spread"], corners.std(axis=1), atol=1e-6)
    none = uncertainty.predict_with_uncertainty(None, top_left, batch, 2, tta="none")
    assert set(none) == {"probability_all"}


def test_an_uncertainty_that_finds_the_errors_has_the_smaller_risk_coverage_area():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.6 + 0.2 + rng.normal(0, 0.2, 200), 0, 1)
    wrong = (p >= 0.5) != y
    telling = np.where(wrong, 1.0, 0.1) + rng.uniform(0, 0.05, 200)  # high on the errors
    _, _, by_probability = risk_coverage(y, p, 0.5)
    _, risk, by_uncertainty = risk_coverage(y, p, 0.5, -telling)
    assert by_uncertainty < by_probability and risk[: int((~wrong).sum()) - 1].max() == 0


def test_the_card_says_what_the_columns_mean_and_how_they_rank_the_errors():
    from leukoflow.deploy.modelcard_sections import uncertainty_section

    meta = {
        "tta": "dihedral",
        "evaluation": {"mc_dropout": 8, "risk_coverage": {"aurc": 0.1, "aurc_mc_std": 0.05}},
    }
    text = uncertainty_section(meta)
    assert "dihedral" in text and "over 8 passes" in text
    assert "| probability | 0.100 |" in text and "| mc_std | 0.050 |" in text
