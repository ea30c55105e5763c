"""`leukoflow bench`: kinds wiring, tables, the loader ceiling, the preparation pieces (a real
run through Snakemake included), the workflow-run helpers, and the GPU throughput script (FLOP
count and estimate on CPU JAX)."""

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cells import make_cnmc_tree

from leukoflow.bench import common, loader, prepare, scaling
from leukoflow.bench.kinds import KINDS, default_options, kind_function
from leukoflow.cli import build_parser
from leukoflow.core.errors import LeukoflowError
from leukoflow.core.workflow_runs import planned_jobs

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu_throughput.py"


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_target_takes_its_options(kind):
    spec = KINDS[kind]
    function = kind_function(kind)
    assert callable(function)
    parameters = inspect.signature(function).parameters
    options = default_options(kind)
    assert set(options) <= set(parameters), f"{kind}: {set(options) - set(parameters)}"
    for option, default in options.items():
        assert parameters[option].default is not inspect.Parameter.empty
        if parameters[option].default is not None and default is not None:
            assert type(default) is type(parameters[option].default), option
    assert set(spec.get("quick", {})) <= set(options)
    args = build_parser().parse_args(["bench", kind, "--out", "x"])
    assert {name: getattr(args, name) for name in options} == options


def test_bench_all_options_parse():
    args = build_parser().parse_args(["bench", "all", "--quick", "--skip", "dvc", "predict"])
    assert args.quick and args.skip == ["dvc", "predict"]
    assert default_options("prepare", quick=True)["fractions"] == "0.5,1"
    assert default_options("prepare")["images"] == 10661
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "all", "--skip", "nosuchkind"])


def test_tables():
    figures = {"a_images_per_s": 1234.5678, "b_ratio": 0.12345, "c_count": 7, "name": "x"}
    lines = common.format_table("demo", figures).splitlines()
    assert lines[0] == "bench demo" and lines[2].endswith("1234.568")
    rows = common.summary_rows("demo", figures, ["*_per_s", "*_count"])
    assert rows == [("demo", "a_images_per_s", 1234.5678), ("demo", "c_count", 7)]
    assert len(common.summary_rows("demo", figures, None)) == 4
    table = common.format_summary(rows + [("x", "b_ratio", 0.12345)], "head").splitlines()
    assert table[0] == "head"
    assert len({len(line) for line in table[1:]}) == 1  # aligned columns
    assert table[3].split("|")[3].strip() == "1234.6"
    assert table[5].split("|")[3].strip() == "0.123"


def test_planned_jobs_reads_the_job_stats():
    text = "Job stats:\njob    count\n---  ---\nall 1\ningest 1\ntrain 36\ntotal 38\n\nx 3\n"
    for stdout, stderr in ((text, ""), ("", text), (text, None)):  # None: output merged
        result = subprocess.CompletedProcess([], 0, stdout, stderr)
        assert planned_jobs(result) == {"ingest": 1, "train": 36}
    assert planned_jobs(subprocess.CompletedProcess([], 0, "nothing", "")) == {}


def test_memcpy_ceiling_and_loader_on_tiny_data():
    images = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    rate = loader.memcpy_images_per_s(images, batch_size=4, batches=5, repeats=2)
    assert np.isfinite(rate) and rate > 0
    with pytest.raises(LeukoflowError, match="fewer than one batch"):
        loader.memcpy_images_per_s(images[:3], batch_size=4, batches=1)
    figures = loader.run(images=64, size=16, batch_size=8, repeats=1)
    assert figures["loader_vs_memcpy"] == pytest.approx(
        figures["loader_images_per_s"] / figures["memcpy_images_per_s"]
    )
    assert figures["loader_images_per_s"] > 0


def test_subject_subsets_are_nested_and_keep_both_classes():
    candidates = [("all", f"A{i}") for i in range(47)] + [("hem", f"H{i}") for i in range(26)]
    previous = set()
    for fraction in (0.125, 0.25, 0.5, 1):
        chosen = scaling.subject_subset(candidates, fraction)
        assert previous <= chosen
        assert any(s.startswith("A") for s in chosen) and any(s.startswith("H") for s in chosen)
        previous = chosen
    assert len(scaling.subject_subset(candidates, 0.125)) == 6 + 4
    assert len(previous) == 73


def test_link_subset_keeps_the_layout(tmp_path):
    root = make_cnmc_tree(tmp_path / "cnmc")
    images, subjects = scaling.link_subset(root, tmp_path / "half", 0.5)
    assert subjects == 3 + 2  # of 6 ALL and 3 hem subjects
    linked = sorted(p.relative_to(tmp_path / "half") for p in (tmp_path / "half").rglob("*.bmp"))
    assert len(linked) == images == 5 * 3
    assert all((root / rel).samefile(tmp_path / "half" / rel) for rel in linked)


def test_linear_fit():
    fit = scaling.linear_fit([100, 200, 400], [12.0, 22.0, 42.0])
    assert fit["slope_ms_per_image"] == pytest.approx(100)
    assert fit["intercept_s"] == pytest.approx(2)
    assert fit["r2"] == pytest.approx(1)
    assert max(map(abs, fit["deviation"])) < 1e-9
    bent = scaling.linear_fit([100, 200, 400], [12.0, 30.0, 42.0])
    assert bent["r2"] < 1 and max(map(abs, bent["deviation"])) > 0.1


@pytest.mark.slow
def test_run_measured_reports_time_and_memory(tmp_path):
    total, largest = common.tree_memory(os.getpid())
    assert total > 10 * 2**20 and largest > 10 * 2**20
    leukoflow = str(Path(sys.executable).parent / "leukoflow")
    block = '{"subjects": 6, "images_per_subject": 1, "size": 32}'
    synth = [leukoflow, "synth", str(tmp_path / "d"), "--synthetic", block]
    step = common.run_measured(synth, tmp_path / "s.log")
    assert step["s"] > 0 and 0 < step["cpu_s"] < 60
    assert 10 < step["max_rss_mb"] <= step["peak_tree_mb"] < 2000
    assert (tmp_path / "d" / "training_data").is_dir()
    with pytest.raises(LeukoflowError, match="failed"):
        common.run_measured(
            [leukoflow, "ingest", str(tmp_path / "missing"), "--out", "m.csv"], tmp_path / "x.log"
        )


@pytest.mark.slow
def test_prepare_runs_the_workflows_targets_through_snakemake(tmp_path):
    """One preparation of a small synthetic set: every step is a Snakemake run of the
    workflow's own rules, and the last run, with nothing to do, measures Snakemake itself."""
    dataset = tmp_path / "data"
    common.synthetic_dataset(dataset, 36, size=64)
    figures = prepare.prepare(REPO, dataset, tmp_path / "wf", size=32, threads=2)
    assert list(figures["steps"]) == [name for name, _ in prepare.step_targets(32)]
    assert figures["images"] == 36
    for step in [*figures["steps"].values(), figures["snakemake_noop"]]:
        assert step["s"] > 0 and step["cpu_s"] > 0
        assert 0 < step["max_rss_mb"] <= step["peak_tree_mb"]
    noop = figures["snakemake_noop"]["s"]
    assert figures["snakemake_overhead_s"] == pytest.approx(6 * noop)
    assert figures["total_s"] > figures["snakemake_overhead_s"]
    work = tmp_path / "wf"
    for subset in ("train", "val", "test"):
        assert (work / "results/main/stores/32px" / f"{subset}.npy").is_file()
    assert (work / "results/main/stain/spread.json").is_file()
    assert (work / "logs/stores/main/32px/train.log").is_file()  # the rule's own log
    assert "Nothing to be done" in (work / "bench-noop.log").read_text()


def load_gpu_script():
    """The GPU script as a module."""
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gpu_script():
    return load_gpu_script()


def test_importing_the_gpu_script_keeps_the_backend():
    before = os.environ.get("KERAS_BACKEND")
    load_gpu_script()
    assert os.environ.get("KERAS_BACKEND") == before


def test_gpu_script_peaks_and_estimate(gpu_script):
    assert gpu_script.peak_tflops("NVIDIA H100 80GB HBM3") == 989
    assert gpu_script.peak_tflops("NVIDIA H100 PCIe") == 756
    assert gpu_script.peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert gpu_script.peak_tflops("cpu") is None
    assert gpu_script.default_batch(224) == 64 and gpu_script.default_batch(456) == 32
    results = [{"architecture": "A", "images_per_s": 1000.0, "compile_s": 36.0}]
    estimate = gpu_script.estimate_experiment(results, epochs=200, images=9000, val_fraction=1 / 3)
    # 200 x 9000 / 1000 = 1800 s training + a third of the images at 3x the rate = 200 s
    assert estimate["hours_total"] == pytest.approx((1800 + 200 + 36) / 3600)


def test_gpu_script_counts_every_kind_of_convolution(gpu_script):
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 4))
    x = layers.Conv2D(8, 3, padding="same", groups=2)(inputs)  # 16x16x8, 3x3x2 taps each
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)  # 8x8x16
    x = layers.SeparableConv2D(6, 5, padding="valid")(x)  # 4x4: depthwise 16 ch, pointwise 6
    x = layers.BatchNormalization()(layers.GlobalAveragePooling2D()(x))
    outputs = layers.Dense(3)(x)
    macs = 16 * 16 * 8 * 9 * 2 + 8 * 8 * 16 * 9 + 4 * 4 * (16 * 25 + 16 * 6) + 6 * 3
    assert gpu_script.forward_flops(keras.Model(inputs, outputs)) == 2 * macs


@pytest.mark.slow
@pytest.mark.jax
def test_gpu_script_runs_on_cpu_jax(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(REPO / "src"))
    argv = [str(SCRIPT), "--archs", "SimpleNet", "--size", "32", "--steps", "1", "--warmup", "1"]
    done = subprocess.run(
        [sys.executable, *argv, "--batch", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_throughput.json").read_text())
    (result,) = record["results"]
    assert result["dtype_policy"] == "mixed_bfloat16" and result["jit_compile"]
    # SimpleNet at 32 px: 3x3 convolutions 3->32 @32, 32->64 @16, 64->128 @8, 128->256 @4 px
    # and the 256->1 dense head.
    convs = 2 * 9 * (32 * 32 * 3 * 32 + 16 * 16 * 32 * 64 + 8 * 8 * 64 * 128 + 4 * 4 * 128 * 256)
    assert result["forward_gflops_per_image"] == pytest.approx((convs + 2 * 256) / 1e9)
    assert result["train_tflops_achieved"] == pytest.approx(
        3 * result["forward_gflops_per_image"] * 1e9 * result["images_per_s"] / 1e12
    )
    hours = (200 * 10661 / result["images_per_s"] * (1 + 1 / 9) + result["compile_s"]) / 3600
    assert record["estimate"]["hours_total"] == pytest.approx(hours)
    assert "estimate, 1 of 6 architectures measured" in done.stdout


@pytest.mark.slow
@pytest.mark.jax
def test_gpu_script_imports_nothing_heavy_from_leukoflow():
    """What the script imports from leukoflow pulls in no TensorFlow, scikit-learn,
    scikit-image, matplotlib, h5py or Pillow beyond what Keras itself loads here."""
    code = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
HEAVY = {"tensorflow", "sklearn", "skimage", "matplotlib", "h5py", "PIL"}
def heavy():
    return {name.split(".")[0] for name in sys.modules} & HEAVY
import jax, keras
before = heavy()
import leukoflow.models, leukoflow.models.registry, leukoflow.train.job
for spec in leukoflow.models.registry.ARCHITECTURES.values():
    leukoflow.models._builder(spec.name)
print("new heavy imports:", sorted(heavy() - before))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "new heavy imports: []" in done.stdout


def test_bench_all_summary_failures_and_earlier_runs(tmp_path, monkeypatch, capsys):
    from leukoflow.bench import kinds

    small = dict(KINDS["loader"], options=[("--images", int, 64, ""), ("--size", int, 16, "")])
    broken = dict(KINDS["plan"], options=[("--workflow", str, str(tmp_path / "none"), "")])
    registry = {"loader": small, "plan": broken, "ingest": KINDS["ingest"]}
    monkeypatch.setattr(kinds, "KINDS", registry)
    (tmp_path / "ingest.json").write_text(json.dumps({"ingest_files_per_s": 12.5, "x": 1}))
    with pytest.raises(LeukoflowError, match="bench kinds failed: plan"):
        kinds.run_all(tmp_path, skip=["ingest"])
    assert set(json.loads((tmp_path / "loader.json").read_text())) >= {
        "loader_vs_memcpy",
        "load_avg_1min_before",
        "cpu_model",
    }
    summary = (tmp_path / "summary.md").read_text()
    assert summary == capsys.readouterr().out.split("\n\n")[-1]
    assert "| loader " in summary and "loader_vs_memcpy" in summary
    assert "| plan " in summary and "FAILED" in summary and "no Snakefile" in summary
    assert "ingest (earlier run" in summary and "12.5" in summary and "| x " not in summary
