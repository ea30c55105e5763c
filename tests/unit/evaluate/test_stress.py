"""The stress test: each acquisition shift against a hand-made expectation, the registry
against the config schema and the README, the paired changes, and the stress job of a real
model and of an ensemble."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from leukoflow.core.errors import ConfigError, LeukoflowError
from leukoflow.data import synth
from leukoflow.evaluate import shifts, stress
from leukoflow.evaluate.calibration import apply_temperature
from leukoflow.evaluate.metrics import weighted_metrics

REPO = Path(__file__).resolve().parents[3]


def cell(size=32):
    """A hand-made cell: a bright disc with a darker nucleus on black, smooth edges."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    body = np.clip(size / 3 - r, 0, 1)[..., None] * np.array([190.0, 160.0, 210.0])
    nucleus = np.clip(size / 6 - r, 0, 1)[..., None] * np.array([-90.0, -100.0, -40.0])
    return np.clip(np.rint(body + nucleus), 0, 255).astype(np.uint8)


def shifted(image, name, **params):
    return shifts.SHIFTS[name].apply(image, np.random.default_rng(0), **params)


def test_exposure_scales_and_clips():
    image = cell()
    np.testing.assert_array_equal(shifted(image, "exposure", factor=1.0), image)
    darker = shifted(image, "exposure", factor=0.5)
    np.testing.assert_array_equal(darker, np.rint(image * 0.5).astype(np.uint8))
    brighter = shifted(image, "exposure", factor=2.0)
    assert brighter.max() == 255 and (brighter[image == 0] == 0).all()


def test_defocus_keeps_the_mean_and_flattens():
    image = cell()
    blurred = shifted(image, "defocus", sigma=0.05)
    assert abs(blurred.mean() - image.mean()) < 0.5  # a blur moves light, it adds none
    assert blurred.std() < image.std()
    flat = np.full((16, 16, 3), 120, np.uint8)
    np.testing.assert_array_equal(shifted(flat, "defocus", sigma=0.1), flat)


def test_jpeg_quality_100_is_near_identity_and_20_is_not():
    image = cell()
    near = np.abs(shifted(image, "jpeg", quality=100).astype(int) - image).mean()
    far = np.abs(shifted(image, "jpeg", quality=20).astype(int) - image).mean()
    assert near < 1.5 and far > 2 * near


def test_resolution_averages_fine_detail_and_keeps_flat_images():
    checker = ((np.indices((16, 16)).sum(axis=0) % 2) * 200).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, axis=2)
    out = shifted(checker, "resolution", factor=2)
    np.testing.assert_array_equal(out, np.full_like(checker, 100))  # 2x2 boxes: mean 100
    flat = np.full((16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(shifted(flat, "resolution", factor=4), flat)


def test_stain_jitter_is_seeded_moves_the_cell_only_and_zero_is_identity():
    image = cell()
    assert np.abs(shifted(image, "stain", sigma=0.0).astype(int) - image).max() <= 1
    batch = np.stack([image, image])
    a = shifts.shift_images(batch, "stain", "strong", seed=3)
    np.testing.assert_array_equal(a, shifts.shift_images(batch, "stain", "strong", seed=3))
    assert not np.array_equal(a[0], a[1])  # one draw per store row
    np.testing.assert_array_equal(  # the row, not the batch, decides the draw
        shifts.shift_images(batch[1:], "stain", "strong", seed=3, first_row=1)[0], a[1]
    )
    assert (a[:, image.max(axis=2) == 0] == 0).all()  # background stays black
    assert np.abs(a.astype(int) - batch).mean() > 1


def test_chosen_strengths_follow_the_registry_and_name_bad_keys():
    every = shifts.chosen_strengths(None)
    assert every == [(n, s) for n, shift in shifts.SHIFTS.items() for s in shift.strengths]
    some = shifts.chosen_strengths({"jpeg": ["q20"], "stain": [], "defocus": ["mild"]})
    assert ("jpeg", "q20") in some and ("jpeg", "q50") not in some
    assert not [p for p in some if p[0] == "stain"] and ("stain_off", "off") in some
    with pytest.raises(ConfigError, match="unknown shift.*blur"):
        shifts.chosen_strengths({"blur": ["mild"]})
    with pytest.raises(ConfigError, match=r"stress.strengths.jpeg.*q5"):
        shifts.chosen_strengths({"jpeg": ["q5"]})


def test_schema_demo_and_readme_follow_the_registry():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    names = schema["properties"]["stress"]["properties"]["strengths"]["propertyNames"]["enum"]
    assert names == list(shifts.SHIFTS)
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    shifts.chosen_strengths(demo["stress"]["strengths"])
    assert shifts.shifts_markdown() in (REPO / "README.md").read_text()


def predictions(n_subjects=8, per=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_subjects) % 2, per)
    p = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1.2, len(y)))))
    subject = np.repeat([f"s{i}" for i in range(n_subjects)], per)
    return pd.DataFrame(
        {
            "row": np.arange(len(y)),
            "path": [f"c{i}.bmp" for i in range(len(y))],
            "subject": subject,
            "y": y,
            "probability_all": p,
        }
    )


def long_frame(base, pairs):
    """SHIFTED_COLUMNS rows: each (shift, strength) with its probabilities."""
    return pd.concat(
        [base.assign(shift=n, strength=s, probability_all=p) for (n, s), p in pairs.items()],
        ignore_index=True,
    )[stress.SHIFTED_COLUMNS]


def test_stress_table_pairs_the_resamples_and_refits_nothing():
    base = predictions()
    noisy = np.clip(base["probability_all"] + np.linspace(-0.4, 0.4, len(base)), 0.01, 0.99)
    frame = long_frame(base, {("jpeg", "q50"): base["probability_all"], ("jpeg", "q20"): noisy})
    table = stress.stress_table(base, frame, temperature=1.3, threshold=0.45, n_bootstrap=200)
    same = table.iloc[0]
    for m in stress.STRESS_METRICS:  # the same predictions: no change in any resample
        assert same[f"delta_{m}"] == 0 and same[f"delta_{m}_lo"] == 0 == same[f"delta_{m}_hi"]
    row = table.iloc[1]
    p = apply_temperature(noisy, 1.3)  # the given temperature and threshold, nothing refitted
    direct = weighted_metrics(base["y"], p, p >= 0.45, np.ones((1, len(base))))
    assert row["f1"] == pytest.approx(direct["f1"][0])
    assert row["delta_f1_lo"] <= row["delta_f1"] <= row["delta_f1_hi"]
    assert json.loads(row["params"]) == {"quality": 20}
    flipped = base.assign(y=1 - base["y"])  # other test labels: the same decisions scored
    table_flipped = stress.stress_table(
        flipped,
        long_frame(flipped, {("jpeg", "q20"): noisy}),
        temperature=1.3,
        threshold=0.45,
        n_bootstrap=200,
    )
    assert table_flipped.iloc[0]["roc_auc"] == pytest.approx(1 - row["roc_auc"])
    with pytest.raises(LeukoflowError, match="other images"):
        stress.stress_table(base, frame.iloc[1:], 1.0, 0.5, n_bootstrap=100)
    few = base[base["subject"].isin(["s0", "s1", "s2", "s3"])]  # two subjects of each class
    table_few = stress.stress_table(
        few,
        long_frame(few, {("jpeg", "q20"): noisy[: len(few)]}),
        temperature=1.3,
        threshold=0.45,
        n_bootstrap=200,
    )
    assert table_few.iloc[0]["ci_note"].startswith("CI: too few test subjects (2 all, 2 hem)")
    assert np.isnan(table_few.iloc[0]["delta_f1_lo"]) and not np.isnan(table_few.iloc[0]["f1"])


def write_raw_cells(root, n, size, seed):
    """Raw cell files and their split rows (4 subjects, labels alternating)."""
    images, labels, subjects = synth.cells(n, size, seed=seed, subjects=4)
    rows = []
    for i, (image, label, subject) in enumerate(zip(images, labels, subjects)):
        rel = f"cells/cell_{seed}_{i}.bmp"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        name = "all" if label == 1 else "hem"
        rows.append([rel, name, f"s{seed}_{subject}", "0", f"{seed}{i:063x}"])
    return pd.DataFrame(rows, columns=["path", "label", "subject", "fold", "sha256"])


@pytest.mark.slow
def test_stress_job_of_a_model_and_of_its_self_ensemble(tmp_path):
    """A real SimpleNet: each shift's probabilities are the model's on the shifted store (the
    stain_off one on the store prepared without normalisation), and a mean ensemble of the
    model with itself has the model's stress table."""
    import keras

    from leukoflow.evaluate.ensemble import run_ensemble
    from leukoflow.evaluate.job import run_evaluate
    from leukoflow.models import build_model
    from leukoflow.models.inference import compiled_inference, predict_store
    from leukoflow.stain.normalize import fit_reference, save_reference
    from leukoflow.stain.stores import build_store, open_store

    keras.utils.set_random_seed(0)
    build_model("SimpleNet", 32).save(tmp_path / "model.keras")
    data = tmp_path / "data"
    rows = {subset: write_raw_cells(data, 12, 48, seed) for seed, subset in enumerate("vt")}
    reference = fit_reference(
        [np.asarray(Image.open(data / p)) for p in rows["v"]["path"]], "macenko"
    )
    save_reference(reference, tmp_path / "reference.json")
    for subset, frame in rows.items():
        build_store(frame, data, reference, 32, tmp_path / f"{subset}.npy", progress=False)
    ev = tmp_path / "evaluate"
    settings = {"architecture": "SimpleNet", "batch_size": 5}
    config = {
        "threshold": "max_f1",
        "bootstrap": 100,
        "seed": 0,
        "tta": "dihedral",
        "mc_dropout": 2,
    }
    files = [ev / "metrics.json", ev / "val.csv", ev / "test.csv"]
    run_evaluate(
        tmp_path / "model.keras", tmp_path / "v.npy", tmp_path / "t.npy", settings, config, *files
    )
    chosen = {
        "stain": ["strong"],
        "exposure": ["darker"],
        "defocus": [],
        "jpeg": [],
        "resolution": [],
        "stain_off": ["off"],
    }
    out = tmp_path / "stress"
    table = stress.run_stress(
        tmp_path / "model.keras",
        tmp_path / "t.npy",
        files[0],
        files[2],
        tmp_path / "reference.json",
        data,
        settings,
        config,
        {"strengths": chosen, "seed": 1},
        out / "stress.csv",
        out / "shifted.csv",
    )
    assert list(zip(table["shift"], table["strength"])) == shifts.chosen_strengths(chosen)
    written = pd.read_csv(out / "stress.csv")
    assert list(written["model"].unique()) == ["SimpleNet"] and len(written) == 3
    shifted_p = pd.read_csv(out / "shifted.csv")
    fn = compiled_inference(keras.saving.load_model(tmp_path / "model.keras"))
    images, _ = open_store(tmp_path / "t.npy")
    exposed = shifts.shift_images(np.asarray(images), "exposure", "darker", 1)
    got = shifted_p.query("shift == 'exposure'")["probability_all"].to_numpy()
    np.testing.assert_allclose(got, predict_store(fn, exposed, 5, "dihedral"), atol=1e-5)
    none = fit_reference([], "none") | {"params": reference["params"]}
    build_store(rows["t"], data, none, 32, tmp_path / "raw.npy", progress=False)
    raw, _ = open_store(tmp_path / "raw.npy")
    got = shifted_p.query("shift == 'stain_off'")["probability_all"].to_numpy()
    np.testing.assert_allclose(got, predict_store(fn, np.asarray(raw), 5, "dihedral"), atol=1e-5)
    evaluated = pd.read_csv(files[2])  # evaluate wrote the uncertainty of each cell
    assert (evaluated["tta_spread"] > 0).all() and (evaluated["mc_std"] > 0).all()

    ens = tmp_path / "ensemble"
    run_ensemble(
        "Self",
        "mean",
        ["SimpleNet", "Copy"],
        [files[1]] * 2,
        [files[2]] * 2,
        config,
        ens / "metrics.json",
        ens / "val.csv",
        ens / "test.csv",
    )
    both = stress.run_stress_ensemble(
        "Self",
        ["SimpleNet", "Copy"],
        [out / "shifted.csv"] * 2,
        ens / "metrics.json",
        ens / "test.csv",
        config,
        ens / "stress.csv",
    )
    columns = [c for c in table.columns if c != "model"]
    pd.testing.assert_frame_equal(both[columns], table[columns], atol=1e-9)
    with pytest.raises(LeukoflowError, match="one per member"):
        stress.run_stress_ensemble(
            "Self",
            ["SimpleNet", "Copy"],
            [out / "shifted.csv"],
            ens / "metrics.json",
            ens / "test.csv",
            config,
            ens / "stress.csv",
        )


def test_report_names_the_most_and_least_robust_model_honestly(tmp_path):
    from leukoflow.report.collect import ReportData
    from leukoflow.report.robustness import html_robustness, plot_robustness, shift_verdicts

    def row(model, shift, strength, delta, lo, hi, note=""):
        return {
            "model": model,
            "shift": shift,
            "strength": strength,
            "delta_f1": delta,
            "delta_f1_lo": lo,
            "delta_f1_hi": hi,
            "ci_note": note,
        }

    few = "CI: too few test subjects (2 all, 1 hem)"
    stress_rows = pd.DataFrame(
        [
            row("A", "jpeg", "q50", -0.30, -0.4, -0.2),
            row("B", "jpeg", "q50", 0.0, -0.1, 0.1),
            row("A", "jpeg", "q20", -0.02, -0.05, 0.01),
            row("B", "jpeg", "q20", -0.20, -0.30, -0.10),
            row("A", "defocus", "strong", -0.05, -0.08, -0.02),
            row("B", "defocus", "strong", -0.10, -0.20, -0.09),
            row("A", "stain", "strong", -0.1, np.nan, np.nan, few),
            row("B", "stain", "strong", -0.2, np.nan, np.nan, few),
        ]
    )
    verdicts = {v["shift"]: v for v in shift_verdicts(stress_rows)}
    # each model at its worst strength: A -0.30 (q50), B -0.20 (q20)
    assert verdicts["jpeg"]["most"] == "B -0.200 [-0.300, -0.100] (q20)"
    assert verdicts["jpeg"]["least"] == "A -0.300 [-0.400, -0.200] (q50)"
    assert verdicts["jpeg"]["reading"].startswith("CIs overlap")
    assert verdicts["defocus"]["reading"] == "A is more robust than B (CIs apart)"
    assert verdicts["stain"]["reading"].endswith("no verdict")
    data = ReportData(archs=["A", "B"], folds=0, stress=stress_rows)
    assert plot_robustness(data, tmp_path) == [tmp_path / "robustness.png"]
    assert (tmp_path / "robustness.csv").exists()
    assert "CIs apart" in html_robustness(data) and "B -0.200" in html_robustness(data)
    assert html_robustness(ReportData(archs=["A"], folds=0)) == ""


def test_the_bundle_keeps_the_stress_rows_and_the_card_shows_them(tmp_path):
    from leukoflow.deploy.modelcard_sections import robustness_section

    base = predictions()
    shifted_p = np.clip(base["probability_all"] - 0.2, 0.01, 0.99)
    frame = long_frame(base, {("exposure", "darker"): shifted_p})
    table = stress.stress_table(base, frame, temperature=1.0, threshold=0.5, n_bootstrap=100)
    stress.write_table(table, "SimpleNet", tmp_path / "stress.csv")
    record = stress.robustness_record(tmp_path / "stress.csv")
    assert len(record) == 1 and record[0]["params"] == {"factor": 0.7}
    assert record[0]["ci_note"] == "" and record[0]["delta_f1"] == pytest.approx(
        table.iloc[0]["delta_f1"], abs=1e-5
    )
    json.dumps(record)  # bundle.json holds it
    card = robustness_section({"robustness": record})
    line = next(line for line in card.splitlines() if line.startswith("| exposure"))
    assert "factor=0.7" in line and f"{record[0]['delta_f1']:+.3f} [" in line
    (tmp_path / "bad.csv").write_text("shift,strength\njpeg,q20\n")
    with pytest.raises(LeukoflowError, match="bad.csv lacks column"):
        stress.robustness_record(tmp_path / "bad.csv")
