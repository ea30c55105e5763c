"""dvc.yaml on a real DVC repository with a local remote, running the tiny workflow config.

One `dvc repro` in a fresh repository and `dvc push`; a `git clone` of it (no DVC cache, no
results, no .snakemake/) restored with `dvc pull` and `snakemake --touch --forceall`; there, one
changed architecture reproduced with `dvc repro`, then one `dvc exp run -S`. Each later step
reruns only the changed architecture's jobs.
"""

import json
import re

import pytest
from conftest import dvc, file_hashes, git_commit, run, snakemake

from leukoflow.train.livelog import comparable_summary

pytestmark = [pytest.mark.dvc, pytest.mark.slow]

ARCHS = ("SimpleNet", "VGG16")
# what a VGG16 change may rewrite: its own files and the tiny config's two ensembles of it
ONLY_VGG16 = ("/VGG16/", "/VGG16.json", "/Ensemble/", "/Stacked/")


def set_learning_rate(config, arch, value):
    """Rewrite `arch`'s learning_rate in the tiny config's flow-style architectures block."""
    text = config.read_text()
    pattern = rf"(\n  {arch}: \{{[^}}\n]*learning_rate: )[^,}}]+"
    new, count = re.subn(pattern, rf"\g<1>{value}", text)
    assert count == 1, f"no learning_rate for {arch} in {config}"
    config.write_text(new)


def model_hashes(project):
    """{path: sha256} of the trained models, bundles and training outputs."""
    hashes = {}
    for folder in ("results/models", "results/main/train"):
        hashes.update({f"{folder}/{k}": v for k, v in file_hashes(project / folder).items()})
    return hashes


def snapshot(project):
    """{path: (modification time in ns, sha256)} of every file under results/main and models."""
    return {
        str(path.relative_to(project)): (path.stat().st_mtime_ns, digest)
        for folder in ("results/main", "results/models")
        for path, digest in (
            (project / folder / name, value)
            for name, value in file_hashes(project / folder).items()
        )
    }


def rewritten(before, after):
    """The paths written (new time or content) between two snapshots, and those of new content."""
    paths = before.keys() | after.keys()
    written = {p for p in paths if before.get(p) != after.get(p)}
    changed = {p for p in written if (before.get(p) or (0, ""))[1] != (after.get(p) or (0, ""))[1]}
    return written, changed


@pytest.fixture(scope="module")
def pushed(dvc_project):
    """The project after `dvc repro`, committed (dvc.lock, metrics, plots) and pushed."""
    project, remote = dvc_project
    dvc(project, "repro")
    git_commit(project, "dvc repro")
    dvc(project, "push")
    return project, remote


@pytest.fixture(scope="module")
def clone(pushed, tmp_path_factory):
    """A git clone of the pushed project, restored with `dvc pull` and snakemake --touch."""
    project, _ = pushed
    target = tmp_path_factory.mktemp("clone") / "project"
    run(project.parent, "git", "clone", "--quiet", project, target)
    assert not (target / ".dvc" / "cache").exists()
    assert not (target / "results" / "models").exists()
    dvc(target, "pull")
    snakemake(target, "--touch", "--forceall", "--cores", "1")
    return target


@pytest.fixture(scope="module")
def changed(clone):
    """The clone after VGG16's learning rate changed and `dvc repro`: (before, after) hashes."""
    before = snapshot(clone)
    set_learning_rate(clone / "config" / "demo.yaml", "VGG16", "3.0e-4")
    dvc(clone, "repro")
    return before, snapshot(clone)


def test_repro_versions_data_models_and_metrics(pushed):
    project, remote = pushed
    lock = (project / "dvc.lock").read_text()
    for path in ("results/data/synthetic", "results/models", "results/main", "results/plots"):
        assert f"path: {path}\n" in lock
    assert "Data and pipelines are up to date" in dvc(project, "status").stdout
    metrics = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    text = json.dumps(metrics)
    assert all(arch in text for arch in ARCHS)
    assert "results/metrics.json" in run(project, "git", "ls-files", "results").stdout
    assert sum(1 for p in remote.rglob("*") if p.is_file()) > 50


def test_exp_show_lists_dvclive_training_figures_per_architecture(pushed):
    project, _ = pushed
    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    metrics = shown[0]["data"]["metrics"]["results/metrics.json"]["data"]
    for arch in ARCHS:
        training = metrics[arch]["training"]
        assert training["step"] == 2  # the tiny config's third and last epoch
        assert set(training["eval"]) == {"loss", "accuracy", "weighted_f1"}
        assert set(training["train"]) == {"loss", "accuracy", "learning_rate"}  # no wall clock
        live = project / "results/main/train" / arch / "dvclive" / "metrics.json"
        assert training == comparable_summary(json.loads(live.read_text()))


def test_plots_show_draws_the_live_training_files(pushed):
    project, _ = pushed
    target = "results/main/train/VGG16/dvclive/plots/metrics"
    shown = json.loads(dvc(project, "plots", "show", "--json", target).stdout)
    assert not shown.get("errors"), shown["errors"]
    assert f"{target}/eval/weighted_f1.tsv" in shown["data"]
    (plot,) = shown["data"][f"{target}/train/loss.tsv"]
    assert [int(row["step"]) for row in plot["content"]["data"]["values"]] == [0, 1, 2]


def test_dvc_commit_keeps_snakemake_up_to_date(pushed):
    # DVC re-copies hard-linked outputs when it commits them (new modification time): every
    # output must be a plain file, or the next Snakemake run reruns what follows it.
    project, _ = pushed
    dry = snakemake(project, "--dry-run", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_pull_restores_models_byte_identical(pushed, clone):
    project, _ = pushed
    assert model_hashes(clone) == model_hashes(project)
    assert file_hashes(clone / "results/data/synthetic") == file_hashes(
        project / "results/data/synthetic"
    )
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout


def test_snakemake_plans_nothing_after_pull(clone):
    dry = snakemake(clone, "--dry-run", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_repro_after_one_arch_change_retrains_only_it(changed):
    written, new_content = rewritten(*changed)
    assert "results/main/train/VGG16/model.keras" in new_content
    assert all(any(part in path for part in ONLY_VGG16) for path in written), written


def test_metrics_diff_shows_only_the_changed_arch(clone, changed):
    diff = json.loads(dvc(clone, "metrics", "diff", "--json").stdout)
    keys = [key for entries in diff.values() for key in entries]
    assert any("VGG16" in key for key in keys), diff
    own = [key for key in keys if "SimpleNet" in key and "delta" not in key]
    assert own == [], f"SimpleNet's own metrics changed: {own}"
    params = json.loads(dvc(clone, "params", "diff", "--json").stdout)
    assert list(params["config/demo.yaml"]) == ["architectures.VGG16.learning_rate"]


def test_plots_diff_renders_both_revisions(clone, changed):
    shown = json.loads(dvc(clone, "plots", "diff", "HEAD", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    revisions = {rev for plots in shown["data"].values() for p in plots for rev in p["revisions"]}
    assert revisions == {"HEAD", "workspace"}


def test_exp_run_sets_one_arch_learning_rate(clone, changed):
    git_commit(clone, "VGG16 learning rate 3e-4")
    before = snapshot(clone)
    dvc(clone, "exp", "run", "-S", "config/demo.yaml:architectures.VGG16.learning_rate=0.002")
    written, new_content = rewritten(before, snapshot(clone))
    assert "results/models/VGG16/model.onnx" in new_content
    assert all(any(part in path for part in ONLY_VGG16) for path in written), written
    shown = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert '"learning_rate": 0.002' in text


def test_bench_dvc_measures_add_status_push(tmp_path):
    from leukoflow.bench.dvc import format_report, measure_dvc

    for i in range(12):
        folder = tmp_path / "data" / f"fold_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.bin").write_bytes(bytes([i]) * 5000)
    result = measure_dvc(tmp_path / "data", work_dir=tmp_path / "work", cache_types=("copy",))
    assert (result["files"], result["bytes"]) == (12, 60000)
    (measured,) = result["runs"]
    assert all(measured[step]["s"] > 0 for step in ("copy", "add", "status", "push"))
    assert measured["add"]["files_per_s"] == pytest.approx(12 / measured["add"]["s"], rel=0.01)
    assert list((tmp_path / "work").iterdir()) == []
    assert "copy" in format_report(result)
