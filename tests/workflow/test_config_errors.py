"""Config errors stop before any job starts, naming the key and the allowed values."""

import pytest
import yaml

from leukoflow.core.workflow_runs import run_snakemake

pytestmark = pytest.mark.workflow


def write_config(workdir, change):
    """config/bad.yaml: the tiny config with `change(config)` applied."""
    config = yaml.safe_load((workdir / "config" / "tiny.yaml").read_text())
    change(config)
    (workdir / "config" / "bad.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda c: c["architectures"].update({"AlexNet": {}}),
            ["architectures", "AlexNet", "allowed: Xception, VGG16, ResNet152V2"],
        ),
        (lambda c: c["training"].update({"epochs": -1}), ["epochs", "minimum"]),
        (
            lambda c: c["dataset"].update({"source": "folder", "path": "no/such/folder"}),
            ["dataset.path", "no/such/folder", "does not exist"],
        ),
        (
            lambda c: c["stain"].update({"method": "magic"}),
            ["method", "'none', 'reinhard', 'macenko'"],
        ),
        (
            lambda c: c["architectures"]["SimpleNet"].update({"weights": "imagenet"}),
            ["architectures.SimpleNet.weights", "allowed"],
        ),
    ],
)
def test_bad_config_stops_before_any_job(workdir, change, expected):
    write_config(workdir, change)
    result = run_snakemake(workdir, "-n", "--configfile", "config/bad.yaml", check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    for fragment in expected:
        assert fragment in text, text[-3000:]
    assert "Job stats" not in text
    assert not (workdir / "results").exists()


def test_the_tiny_config_plans(workdir):
    result = run_snakemake(
        workdir, "-n", "results/split/split.csv", "--configfile", "config/tiny.yaml"
    )
    assert "rule split" in result.stdout
