"""A small results tree of bundles, shared by the export and serve tests: two SimpleNet model
bundles (32 px, with their ONNX files) and a mean ensemble of them that refers to their files,
as the workflow lays them out in results/models/, and eight synthetic cells: the ensemble's
threshold and referral band are set between the cells' probabilities, so that they get both
labels and some are referred; it has a patient-level call."""

import json

import pytest
from PIL import Image

from leukoflow.data import synth
from leukoflow.stain.normalize import fit_reference, save_reference

SIZE = 32


@pytest.fixture(scope="session")
def models_tree(tmp_path_factory):
    """{"models": results/models, "cells": the cell images folder, "root": the tree}."""
    import keras

    from leukoflow.deploy.bundle import load_bundle
    from leukoflow.deploy.bundle_write import write_bundle, write_ensemble_bundle
    from leukoflow.deploy.predict import iter_predictions
    from leukoflow.models import build_model

    root = tmp_path_factory.mktemp("models_tree")
    cells, _, _ = synth.cells(8, 64, seed=3, subjects=2, labels=[1, 0] * 4)
    (root / "cells").mkdir()
    files = [root / "cells" / f"cell{i}.bmp" for i in range(len(cells))]
    for cell, file in zip(cells, files, strict=True):
        Image.fromarray(cell).save(file)
    save_reference(fit_reference(cells, "macenko"), root / "reference.json")
    metrics = {
        "threshold": 0.5,
        "test": {"f1": 0.5},
        "calibration": {"temperature": 1.5},
        "referral": {"lo": 0.45, "hi": 0.55, "metric": "sensitivity", "target": 0.95},
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    combiner = {"method": "mean", "members": ["A", "B"], "weights": [0.5, 0.5], "intercept": 0.0}
    (root / "ensemble.json").write_text(json.dumps({**metrics, "ensemble": combiner}))
    models = root / "results" / "models"
    settings = {}
    for seed, name in enumerate(("A", "B")):
        keras.utils.set_random_seed(seed)
        build_model("SimpleNet", SIZE, weights="none", dropout=0.0).save(root / f"{name}.keras")
        settings[name] = {"architecture": "SimpleNet", "input_size": SIZE, "jit_compile": "off"}
        write_bundle(  # A as the workflow writes it: referring to the trained model's file
            root / f"{name}.keras", root / "metrics.json", root / "reference.json",
            settings[name], "h", models / name, refer=name == "A",
        )  # fmt: skip
    members = {"A": models / "A", "B": models / "B"}
    write_ensemble_bundle("Duo", members, settings, root / "ensemble.json",
                          root / "reference.json", "e", models / "Duo")  # fmt: skip
    # threshold and band between the cells' probabilities: 4 all and 4 hem, 3 referred
    rows = iter_predictions(load_bundle(models / "Duo", "onnx"), files, progress=False)
    p = sorted(row.probability for row in rows)
    metrics["threshold"] = (p[3] + p[4]) / 2
    metrics["referral"].update(lo=(p[1] + p[2]) / 2, hi=(p[4] + p[5]) / 2)
    (root / "ensemble.json").write_text(json.dumps({**metrics, "ensemble": combiner}))
    # a patient-level call: mean probability against the cell threshold, 3 cells needed
    patients = {"aggregator": "mean_probability", "threshold": metrics["threshold"],
                "cells_needed": {"n": 3, "target": 0.9, "draws": 10}}  # fmt: skip
    (root / "patients.json").write_text(json.dumps(patients))
    write_ensemble_bundle("Duo", members, settings, root / "ensemble.json",
                          root / "reference.json", "e", models / "Duo",
                          patients_path=root / "patients.json")  # fmt: skip
    return {"root": root, "models": models, "cells": root / "cells"}
