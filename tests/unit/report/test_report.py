"""The report, rendered from a small results tree written by leukoflow's own functions.

The tree holds real files: evaluation outputs from synthetic predictions (evaluate's
writer), timing records measured on a tiny model, saliency measures and figures from the
saliency functions, training histories, stain and augmentation figures. The page is then
opened in headless Chromium.
"""

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from leukoflow.core.errors import LeukoflowError
from leukoflow.data import synth
from leukoflow.evaluate import ablation_effects, ensemble, saliency
from leukoflow.evaluate import job as evaluate
from leukoflow.report import ArchFiles, EnsembleFiles, ReportInputs, ReportOutputs, build_report
from leukoflow.report.table import PAPER_TABLE, aligned_predictions, delta_f1_pct, fmt_paper

ARCHS = ["SimpleNet", "VGG16", "Xception"]
SKILL = {"SimpleNet": 0.6, "VGG16": 1.5, "Xception": 2.5}
ENSEMBLES = {"Ensemble": "mean", "Stacked": "stacked"}
DATASET = {
    "source": "synthetic",
    "path": "results/data/synthetic",
    "synthetic": {"subjects": 14, "images_per_subject": 10, "size": 128, "seed": 0},
}
SETTINGS = {"weights": "none", "epochs": 3, "input_size": 64}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def predictions(n_subjects, per_subject, skill, seed):
    """Test or validation predictions of one model on fixed subjects (seeded scores)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        label = s % 2
        subject = f"H{s}" if label == 0 else str(s)
        logits = skill * (2 * label - 1) + rng.normal(0, 0.5) + rng.normal(0, 1, per_subject)
        for i, logit in enumerate(logits):
            rows.append(
                (f"{label}/UID_{subject}_{i}_1.bmp", subject, label, 1 / (1 + np.exp(-logit)))
            )
    frame = pd.DataFrame(rows, columns=["path", "subject", "y", "probability_all"])
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


def cell_images(n=2, size=32):
    """`n` of synth's cells as uint8-valued float32 (n, size, size, 3)."""
    return synth.cells(n, size)[0].astype("float32")


def write_saliency(out_dir, seed):
    """saliency.json and saliency.png from the saliency functions on synthetic maps."""
    images = cell_images()
    labels = np.array([0, 1])
    rng = np.random.default_rng(seed)
    maps = {
        m: rng.random(images.shape[:3]).astype("float32") * images[..., 0] for m in saliency.METHODS
    }
    random_maps = {m: rng.random(images.shape[:3]).astype("float32") for m in saliency.METHODS}

    def brightness(batch):
        return batch.mean(axis=(1, 2, 3)) / 255

    measures = saliency.measures_of(maps, random_maps, images, labels, brightness)
    (out_dir / "saliency.json").write_text(json.dumps(measures))
    saliency.saliency_figure(images, labels, [0.2, 0.9], maps, out_dir / "saliency.png", "test")


def write_png(path, color, size=(120, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def write_evaluation(out, val, test, arch, split):
    """evaluate's three files in `out` from validation and test predictions."""
    metrics, val, test = evaluate.evaluate_predictions(val, test, n_bootstrap=200)
    metrics.update(
        architecture=arch, split=split, tta=0, settings={**SETTINGS, "architecture": arch}
    )
    evaluate.write_evaluation(
        metrics,
        val,
        test,
        out / "metrics.json",
        out / "val_predictions.csv",
        out / "test_predictions.csv",
    )
    return val, test


def write_split_table(root, val, test):
    """A split CSV of the tree's subjects: the validation and test rows, and training rows."""
    rows = []
    for subset, frame in (("train", val.assign(path="train/" + val["path"])), ("val", val),
                          ("test", test)):  # fmt: skip
        rows.append(
            frame.assign(subset=subset, label=np.where(frame["y"] == 1, "all", "hem"))[
                ["path", "label", "subject", "subset"]
            ]
        )
    (root / "split").mkdir(parents=True, exist_ok=True)
    pd.concat(rows).to_csv(root / "split" / "split.csv", index=False)


def write_ablation(root):
    """The ablation table of SimpleNet over the split, from real evaluation files: the
    `random` combination is scored on half of the main test cells, with better skill."""
    main = root / "main" / "evaluate" / "SimpleNet"
    val = pd.read_csv(main / "val_predictions.csv", dtype={"subject": str})
    test = pd.read_csv(main / "test_predictions.csv", dtype={"subject": str})
    better = predictions(8, 12, 2.5, seed=200 + len("SimpleNet")).iloc[::2]
    out = root / "ablation" / "split-random" / "evaluate" / "SimpleNet"
    out.mkdir(parents=True)
    write_evaluation(out, val[["row", "path", "subject", "y", "probability_all"]], better,
                     "SimpleNet", "ablation/split-random")  # fmt: skip
    jobs = [
        {"architecture": "SimpleNet", "combination": f"split-{level}", "levels": {"split": level},
         "run": run}
        for level, run in (("subject", "main"), ("random", "ablation/split-random"))
    ]  # fmt: skip
    plan = {"jobs": jobs, "reference": {"SimpleNet": {"split": "subject"}}}
    folders = [main, out]
    ablation_effects.run_ablation_table(
        plan,
        [f / "metrics.json" for f in folders],
        [f / "test_predictions.csv" for f in folders],
        root / "ablation" / "effects.csv",
        root / "ablation" / "combinations.csv",
        root / "ablation" / "effects.md",
        n_resamples=200,
    )
    assert len(test) == 2 * len(better)


def make_tree(root, timing_record, folds=0, spread=True):
    """A results tree for ARCHS and ENSEMBLES (and `folds` cross-validation folds)."""
    for k, split in enumerate(["main"] + [f"fold{i}" for i in range(folds)]):
        for arch in ARCHS:
            val = predictions(6, 10, SKILL[arch], seed=100 + k)
            test = predictions(8, 12, SKILL[arch], seed=200 + k + len(arch))
            test["row"] = np.arange(len(test))
            out = root / split / "evaluate" / arch
            out.mkdir(parents=True)
            write_evaluation(out, val, test, arch, split)
    write_split_table(root, val, test)
    for name, method in ENSEMBLES.items():
        folder = root / "main" / "ensemble" / name
        files = {s: [root / "main" / "evaluate" / a / f"{s}_predictions.csv" for a in ARCHS]
                 for s in ("val", "test")}  # fmt: skip
        ensemble.run_ensemble(
            name, method, ARCHS, files["val"], files["test"], {"bootstrap": 200},
            folder / "metrics.json", folder / "val_predictions.csv",
            folder / "test_predictions.csv",
        )  # fmt: skip
    write_ablation(root)
    for arch in ARCHS:
        timing_dir = root / "main" / "timing"
        timing_dir.mkdir(parents=True, exist_ok=True)
        (timing_dir / f"{arch}.json").write_text(
            json.dumps({**timing_record, "architecture": arch})
        )
        train_dir = root / "main" / "train" / arch
        train_dir.mkdir(parents=True)
        epochs = np.arange(6)
        history = {
            "epoch": epochs,
            "phase": ["warmup"] * 2 + ["finetune"] * 4,
            "loss": 0.7 * np.exp(-epochs / 3),
            "val_loss": 0.75 * np.exp(-epochs / 4),
            "accuracy": 0.6 + 0.05 * epochs,
            "val_accuracy": 0.55 + 0.05 * epochs,
            "val_weighted_f1": 0.5 + 0.06 * epochs,
            "learning_rate": 1e-3,
            "seconds": 1.0,
        }
        pd.DataFrame(history).to_csv(train_dir / "history.csv", index=False)
        sal_dir = root / "main" / "saliency" / arch
        if arch == ARCHS[0]:
            sal_dir.mkdir(parents=True)
            write_saliency(sal_dir, seed=0)
        else:
            shutil.copytree(root / "main" / "saliency" / ARCHS[0], sal_dir)
    write_png(root / "main" / "stores" / "32px" / "train_aug_examples.png", (200, 120, 160))
    write_png(root / "main" / "stain" / "examples.png", (120, 80, 200))
    if spread:
        spread_numbers = {
            "before": {"od_spread": 0.21},
            "after": {"od_spread": 0.05},
            "reduction": 0.76,
        }
        (root / "main" / "stain" / "spread.json").write_text(json.dumps(spread_numbers))


def tree_inputs(root, archs, folds=0, ensembles=tuple(ENSEMBLES)):
    """The report's inputs in a tree written by `make_tree`, each file named."""
    main = root / "main"
    return ReportInputs(
        archs={
            arch: ArchFiles(
                metrics=main / "evaluate" / arch / "metrics.json",
                predictions=main / "evaluate" / arch / "test_predictions.csv",
                history=main / "train" / arch / "history.csv",
                timing=main / "timing" / f"{arch}.json",
                saliency=main / "saliency" / arch / "saliency.json",
                saliency_figure=main / "saliency" / arch / "saliency.png",
                fold_metrics=tuple(
                    root / f"fold{k}" / "evaluate" / arch / "metrics.json" for k in range(folds)
                ),
            )
            for arch in archs
        },
        folds=folds,
        stain_spread=main / "stain" / "spread.json",
        stain_examples=main / "stain" / "examples.png",
        augment_examples=main / "stores" / "32px" / "train_aug_examples.png",
        ensembles={
            name: EnsembleFiles(
                metrics=main / "ensemble" / name / "metrics.json",
                predictions=main / "ensemble" / name / "test_predictions.csv",
            )
            for name in ensembles
        },
        dataset=DATASET,
        split_table=root / "split" / "split.csv",
        ablation_effects=root / "ablation" / "effects.csv",
        ablation_combinations=root / "ablation" / "combinations.csv",
    )


def tree_outputs(out_dir):
    """The report's outputs, the workflow's names in `out_dir`."""
    return ReportOutputs(
        table_csv=out_dir / "table1.csv",
        table_md=out_dir / "table1.md",
        metrics_json=out_dir / "metrics.json",
        plots=out_dir / "plots",
        html=out_dir / "report.html",
    )


def manifest_of(inputs):
    """The manifest `leukoflow report --manifest` takes for `inputs` (the rule's layout)."""

    def files(model):
        return {
            kind: [str(p) for p in value] if isinstance(value, tuple) else str(value)
            for kind, value in vars(model).items()
            if value is not None
        }

    return {
        "architectures": {arch: files(f) for arch, f in inputs.archs.items()},
        "ensembles": {name: files(f) for name, f in inputs.ensembles.items()},
        "folds": inputs.folds,
        "split_table": str(inputs.split_table),
        "ablation": {
            "effects": str(inputs.ablation_effects),
            "combinations": str(inputs.ablation_combinations),
        },
        "stain": {"spread": str(inputs.stain_spread), "examples": str(inputs.stain_examples)},
        "augment_examples": str(inputs.augment_examples),
        "dataset": inputs.dataset,
    }


def cli_args(manifest, out_dir):
    """`leukoflow report` arguments for `manifest`, outputs under other names in `out_dir`."""
    args = ["report", "--manifest", json.dumps(manifest)]
    for option, name in (
        ("--table-csv", "t.csv"),
        ("--table-md", "t.md"),
        ("--dvc-metrics", "m.json"),
        ("--plots", "figures"),
        ("--html", "page.html"),
    ):
        args += [option, str(out_dir / name)]
    return args


@pytest.fixture(scope="module")
def timing_record():
    """A real timing record of a tiny model (the report reads device and latency from it)."""
    from leukoflow.evaluate.timing import time_model
    from leukoflow.models import build_model

    return time_model(
        build_model("SimpleNet", 32), warmup=1, calls=5, batch_size=4, jit_compile="off"
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, timing_record):
    root = tmp_path_factory.mktemp("results")
    make_tree(root, timing_record, folds=2)
    table = build_report(tree_inputs(root, ARCHS, folds=2), tree_outputs(root))
    return root, table


@pytest.mark.slow
def test_table1_contract(rendered):
    root, table = rendered
    csv = pd.read_csv(root / "table1.csv")
    for column in (
        "architecture",
        "time_ms",
        "precision",
        "recall",
        "f1",
        "delta_f1_pct",
        "weighted_f1",
        "macro_f1",
        "roc_auc",
        "f1_lo",
        "f1_hi",
        "p_best_better",
        "paper_f1",
        "paper_time_ms",
        "f1_cv_mean",
        "f1_cv_sd",
    ):
        assert column in csv.columns, column
    assert list(csv["architecture"]) == ARCHS + list(ENSEMBLES)
    assert list(csv["kind"]) == ["architecture"] * 3 + ["ensemble"] * 2
    mean_f1 = csv["f1"][:3].mean()  # ΔF1 is relative to the architectures' mean F1
    assert np.allclose(csv["delta_f1_pct"], (csv["f1"] - mean_f1) / mean_f1 * 100)
    assert csv.loc[csv["architecture"] == "VGG16", "paper_f1"].item() == 0.80
    best = csv.loc[csv["f1"][:3].idxmax(), "architecture"]
    assert best == "Xception" and csv["is_best"].sum() == 1
    archs = csv["kind"] == "architecture"
    assert (csv.loc[archs & ~csv["is_best"], "p_best_better"] > 0.5).all()  # worse by design
    assert csv.loc[~archs, "p_best_better"].notna().all()  # ensembles against the best single
    times = csv.set_index("architecture")["time_ms"]
    # table1.csv keeps 6 significant digits: the sum of rounded times, within that rounding
    assert times["Ensemble"] == pytest.approx(times[ARCHS].sum(), rel=1e-5)
    for arch in [*ARCHS, *ENSEMBLES]:
        folder = "evaluate" if arch in ARCHS else "ensemble"
        metrics = json.loads((root / "main" / folder / arch / "metrics.json").read_text())
        row = csv[csv["architecture"] == arch].iloc[0]
        assert row["f1"] == pytest.approx(metrics["test"]["f1"])
    for arch in ARCHS:
        metrics = json.loads((root / "main" / "evaluate" / arch / "metrics.json").read_text())
        row = csv[csv["architecture"] == arch].iloc[0]
        assert row["f1"] == pytest.approx(metrics["test"]["f1"])
        folds = [
            json.loads((root / f"fold{k}/evaluate/{arch}/metrics.json").read_text()) for k in (0, 1)
        ]
        assert row["f1_cv_mean"] == pytest.approx(np.mean([f["test"]["f1"] for f in folds]))
    md = (root / "table1.md").read_text()
    assert all(f"| {a} " in md or f"| **{a}** " in md for a in [*ARCHS, *ENSEMBLES])
    assert "CPU" in md  # says what the time was measured on
    assert "Data: SYNTHETIC cells from leukoflow's own generator" in md
    assert "14 subjects x 10 images" in md and "test 8 subjects, 96 images" in md
    assert "Stacked: an ensemble, a logistic regression on the validation logits" in md
    assert "Verdicts:" in md and "Stacked (an ensemble): F1" in md
    assert "Ablation, SimpleNet, split random against subject" in md


@pytest.mark.slow
def test_dvc_metrics_and_plot_data(rendered):
    root, _ = rendered
    metrics = json.loads((root / "metrics.json").read_text())
    assert set(metrics) == {*ARCHS, *ENSEMBLES}
    for values in metrics.values():
        assert {"precision", "recall", "f1", "weighted_f1", "macro_f1", "roc_auc"} <= set(values)
        assert {"temperature", "ece_uncalibrated", "share_referred"} <= set(values)
        assert all(not isinstance(v, dict | list) for v in values.values())
    for arch in ARCHS:
        roc = pd.read_csv(root / "plots" / "roc" / f"{arch}.csv")
        assert roc["fpr"].is_monotonic_increasing and roc["tpr"].iloc[-1] == 1
        assert list(pd.read_csv(root / "plots" / "confusion" / f"{arch}.csv").columns) == [
            "actual",
            "predicted",
        ]
    for name in (
        "roc",
        "pr",
        "confusion",
        "calibration",
        "per_subject",
        "training_curves",
        "cv_f1",
        "saliency",
        "augmentation",
        "stain",
        "paper_comparison",
        "risk_coverage",
        "ablation",
    ):
        with Image.open(root / "plots" / f"{name}.png") as image:
            assert image.width > 100 and image.height > 50, name


def chromium(args, tmp_path):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_opens_in_chromium(rendered, tmp_path):
    root, _ = rendered
    page = root / "report.html"
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    sources = re.findall(r'<img[^>]*src="([^"]*)"', dom)
    assert len(sources) == 13
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100
    table = dom[dom.index('id="table1"') :]
    for arch in [*ARCHS, *ENSEMBLES]:
        assert re.search(rf"<tr[^>]*><td>{arch}</td>", table), arch
    assert "paper 0.8" in table and "Saliency" in dom and "od_spread" in dom
    for section in ("Calibration", "Referral", "Ablation"):
        assert f"<h2>{section}</h2>" in dom, section
    header = dom[: dom.index("</header>")]
    assert "SYNTHETIC" in header  # the data is named before anything else
    assert "http" not in re.sub(r'xmlns="http[^"]*"', "", dom)  # nothing fetched from outside
    chromium(
        ["--screenshot=" + str(tmp_path / "page.png"), "--window-size=1280,2400", page.as_uri()],
        tmp_path,
    )
    with Image.open(tmp_path / "page.png") as shot:
        pixels = np.asarray(shot.convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank page


@pytest.mark.slow
def test_missing_optional_inputs_leave_notes(tmp_path, timing_record):
    make_tree(tmp_path, timing_record, spread=False)
    (tmp_path / "main" / "timing" / "VGG16.json").unlink()
    shutil.rmtree(tmp_path / "main" / "saliency" / "Xception")
    table = build_report(tree_inputs(tmp_path, ARCHS), tree_outputs(tmp_path / "out"))
    page = (tmp_path / "out" / "report.html").read_text()
    assert "stain spread numbers not found" in page and "timing of VGG16 not found" in page
    assert "saliency of Xception not found" in page
    assert pd.isna(table.loc[table["architecture"] == "VGG16", "time_ms"]).all()
    assert "f1_cv_mean" not in table.columns


def test_missing_evaluation_is_an_error(tmp_path):
    with pytest.raises(LeukoflowError, match="ResNet152V2.*leukoflow evaluate"):
        build_report(tree_inputs(tmp_path, ["ResNet152V2"]), tree_outputs(tmp_path))


def test_paired_comparison_needs_same_test_images(tmp_path):
    a = predictions(4, 5, 1.0, 0).assign(predicted=1)
    b = a.assign(path=a["path"] + "x")
    with pytest.raises(LeukoflowError, match="same test subset"):
        aligned_predictions({"A": a, "B": b})


def test_delta_f1_matches_the_paper():
    paper_f1 = [PAPER_TABLE[a][3] for a in PAPER_TABLE]
    paper_delta = [PAPER_TABLE[a][4] for a in PAPER_TABLE]
    # the paper's ΔF1 comes from unrounded F1s: ours from its rounded F1s is within 2 points
    assert np.allclose(delta_f1_pct(paper_f1), paper_delta, atol=2.0)


@pytest.mark.slow
def test_page_is_written_by_cli_from_a_manifest_matched_by_name(rendered, tmp_path):
    """Models are matched to their files by name: the manifest's models, and each model's
    files, in another order give the same rows, in the manifest's order."""
    from leukoflow.cli import main

    root, table = rendered
    manifest = manifest_of(tree_inputs(root, ARCHS, folds=2))
    shuffled = {
        **manifest,
        "architectures": {
            arch: dict(reversed(manifest["architectures"][arch].items()))
            for arch in reversed(ARCHS)
        },
        "ensembles": dict(reversed(manifest["ensembles"].items())),
    }
    out = tmp_path / "cli"
    assert main(cli_args(shuffled, out)) == 0
    for name in ("t.csv", "t.md", "m.json", "page.html", "figures/roc.png", "figures/cv_f1.png"):
        assert (out / name).is_file(), name
    assert not (out / "report.html").exists()  # written where named, nowhere else
    rows = pd.read_csv(out / "t.csv")
    assert rows["architecture"].tolist() == [*reversed(ARCHS), *reversed(ENSEMBLES)]
    kept = table.set_index("architecture").loc[rows["architecture"]].reset_index()
    for column in ("precision", "recall", "f1", "weighted_f1", "delta_f1_pct"):
        assert np.allclose(rows[column], kept[column], equal_nan=True), column
    nothing = manifest_of(tree_inputs(tmp_path / "nothing", ["VGG16"]))
    assert main(cli_args(nothing, tmp_path / "none")) == 2
    # an ensemble of an architecture the report does not have is refused
    two = manifest_of(tree_inputs(root, ARCHS[:2], folds=2))
    assert main(cli_args(two, tmp_path / "other")) == 2


def test_the_manifest_names_what_is_missing_or_unknown(tmp_path, capsys):
    from leukoflow.cli import main

    manifest = manifest_of(tree_inputs(tmp_path, ARCHS, folds=2))
    out = tmp_path / "out"
    broken = json.loads(json.dumps(manifest))
    del broken["architectures"]["VGG16"]["timing"]
    assert main(cli_args(broken, out)) == 2
    assert "architectures.VGG16: missing timing, unknown none" in capsys.readouterr().err
    broken = json.loads(json.dumps(manifest))
    broken["architectures"]["Xception"]["fold_metrics"].pop()
    assert main(cli_args(broken, out)) == 2
    assert "architectures.Xception.fold_metrics: 1 files for folds: 2" in capsys.readouterr().err
    broken = {**manifest, "ensembles": {"Ensemble": {"metrics": "m.json", "saliency": "s"}}}
    assert main(cli_args(broken, out)) == 2
    assert "ensembles.Ensemble: missing predictions, unknown saliency" in capsys.readouterr().err
    assert main(cli_args({**manifest, "tables": []}, out)) == 2
    assert "manifest: missing none, unknown tables" in capsys.readouterr().err
    assert not out.exists()


def test_paper_numbers_are_printed_as_in_the_paper():
    assert [
        fmt_paper(410, 0),
        fmt_paper(790, 0),
        fmt_paper(0.80),
        fmt_paper(9, 1),
        fmt_paper(-19.2, 1),
    ] == [
        "410",
        "790",
        "0.8",
        "9",
        "-19.2",
    ]


@pytest.mark.slow
def test_verdicts_name_the_models_that_did_not_learn(tmp_path):
    """A model at chance that calls every cell `all` is named, with its training settings."""
    for arch, skill in (("SimpleNet", 2.0), ("VGG16", 0.0)):
        val = predictions(6, 10, skill, seed=100)
        test = predictions(8, 12, skill, seed=200)
        if skill == 0.0:
            val, test = (f.assign(probability_all=0.7) for f in (val, test))
        out = tmp_path / "main" / "evaluate" / arch
        out.mkdir(parents=True)
        val, test = write_evaluation(out, val, test, arch, "main")
    write_split_table(tmp_path, val, test)
    inputs = tree_inputs(tmp_path, ["SimpleNet", "VGG16"], ensembles=())
    build_report(inputs, tree_outputs(tmp_path / "out"))
    md = (tmp_path / "out" / "table1.md").read_text()
    verdicts = md[md.index("Verdicts:") :]
    assert "Did not learn: VGG16: the 95% CI of the test ROC-AUC includes 0.5" in verdicts
    assert "VGG16: from scratch, 3 epoch(s), 64 px" in verdicts
    assert "on 60 training images" in verdicts and "expected at demo scale" in verdicts
    assert "VGG16 calls every test cell `all`" in verdicts
    assert "Learned (test ROC-AUC CI above 0.5): SimpleNet" in verdicts
    page = (tmp_path / "out" / "report.html").read_text()
    summary = page[page.index('id="summary"') : page.index('id="table1"')]
    assert "Did not learn: VGG16" in summary and "SYNTHETIC" in summary
