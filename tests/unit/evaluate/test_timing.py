"""Timing: the compiled inference function, the timing record and the `timing` subcommand."""

import json

import numpy as np
import pytest

from leukoflow.core import runtime
from leukoflow.evaluate import timing
from leukoflow.models.inference import compiled_inference

SIZE = 32


@pytest.fixture(scope="module")
def model():
    import keras

    from leukoflow.models import build_model

    keras.utils.set_random_seed(0)
    return build_model("SimpleNet", SIZE)


@pytest.mark.slow
def test_compiled_inference_equals_model_predict(model):
    x = timing.random_batch(5, SIZE, seed=3)
    compiled = compiled_inference(model)(x)
    assert compiled.shape == (5,) and compiled.dtype == np.float32
    assert np.allclose(compiled, model.predict(x, verbose=0).reshape(-1), atol=1e-6)


def test_timing_record(model):
    record = timing.time_model(model, warmup=2, calls=50, batch_size=8, jit_compile="off")
    latency = record["latency_ms"]
    assert 0 < latency["min"] <= latency["median"] <= latency["p95"]
    assert record["throughput_images_per_s"] > 0 and record["calls"] == 50
    assert record["batch_sizes"] == {"latency": 1, "throughput": 8}
    assert record["input_size"] == SIZE and record["precision"] == "float32"
    assert record["backend"] == "tensorflow" and "tensorflow" in record["versions"]
    assert record["device"].startswith(("CPU: ", "GPU: "))
    assert record["jit_compile"] is False
    naive = timing.naive_predict_latency(model, calls=3, warmup=1)
    assert naive["median"] > 0


def test_jit_setting():
    jit = [runtime.decide({"jit_compile": value}).jit_compile for value in ("on", "off", "auto")]
    assert jit == [True, False, runtime.has_gpu()]


@pytest.mark.slow
def test_timing_subcommand(model, tmp_path):
    from leukoflow.cli import main

    model.save(tmp_path / "model.keras")
    base = ["timing", "--model", str(tmp_path / "model.keras")]
    base += ["--settings", json.dumps({"architecture": "SimpleNet", "jit_compile": "off"})]
    out = tmp_path / "timing.json"
    block = json.dumps({"warmup": 1, "calls": 50, "batch_size": 4})
    assert main([*base, "--timing", block, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["architecture"] == "SimpleNet" and record["latency_ms"]["median"] > 0
    assert record["dtype_policy"] == "float32"
    too_few = json.dumps({"warmup": 1, "calls": 10})  # the schema's minimum is 50
    assert main([*base, "--timing", too_few, "--out", str(tmp_path / "no.json")]) == 2
    assert not (tmp_path / "no.json").exists()


@pytest.mark.slow
def test_a_model_trained_in_mixed_precision_is_timed_in_it(tmp_path):
    """A model saved under mixed_bfloat16 (as training saves it on an A100 or H100) is timed
    in bfloat16, and the record says so."""
    import keras

    from leukoflow.cli import main
    from leukoflow.models import build_model

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        build_model("SimpleNet", SIZE, weights="none").save(tmp_path / "model.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    assert runtime.saved_dtype_policy(tmp_path / "model.keras") == "mixed_bfloat16"
    out = tmp_path / "timing.json"
    settings = json.dumps({"architecture": "SimpleNet", "jit_compile": "off"})
    arguments = ["--model", str(tmp_path / "model.keras"), "--settings", settings]
    block = json.dumps({"warmup": 1, "calls": 50})
    assert main(["timing", *arguments, "--timing", block, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["dtype_policy"] == "mixed_bfloat16"
    assert record["precision"] == "bfloat16+float32"
