"""The model card of a bundle (`README.md`, Hugging Face layout), made from its bundle.json.

`render_card(meta)` reads nothing but the bundle's metadata (`leukoflow.deploy.bundle`, format 2:
one model or an ensemble of members), so the card cannot say anything the bundle does not
hold; `leukoflow bundle` and `leukoflow bundle-ensemble` write it beside bundle.json.
`data_summary` is what bundle.json records about the training data: the dataset and split
configuration and, from the split table, the subjects and images of each subset. The body's
sections are in `leukoflow.deploy.modelcard_sections`.

Layout: YAML front matter (library_name, tags, pipeline_tag, metrics, model-index with
the test metrics), then the sections intended use, training data, preprocessing,
architecture and training (an ensemble: its members, method and weights), evaluation,
decision threshold, calibration (the temperature; ECE and Brier before and after), referral,
patients (the subject-level call and the cells it needs, when the bundle has one), ONNX
(each member's file or why it has none), known limitations, versions and provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from leukoflow.data.split import SUBSETS, read_manifest, subset_rows
from leukoflow.deploy.modelcard_sections import (
    CARD_METRICS,
    architecture_section,
    calibration_section,
    evaluation_section,
    fmt,
    is_ensemble,
    members_of,
    onnx_file,
    onnx_section,
    patients_section,
    referral_section,
    robustness_section,
    table,
    threshold_section,
    training_data_section,
    uncertainty_section,
)
from leukoflow.evaluate.referral import describe_rule

CARD_FILE = "README.md"
FEW_TEST_SUBJECTS = 10
FEW_EPOCHS = 20


def data_summary(split_path: str | Path, dataset: Mapping, split: Mapping) -> dict:
    """What a bundle records about its training data.

    Args:
        split_path: the split table (`leukoflow split`; columns subject, label, subset).
        dataset: the configuration's `dataset` block.
        split: the configuration's `split` block.

    Returns:
        {"dataset", "split": the blocks, "subsets": {subset: {"subjects", "images",
        "all", "hem"}}} for the main split.
    """
    table = read_manifest(split_path)
    subsets = {}
    for subset in SUBSETS:
        rows = subset_rows(table, "main", subset)
        subsets[subset] = {
            "subjects": int(rows["subject"].nunique()),
            "images": len(rows),
            "all": int((rows["label"] == "all").sum()),
            "hem": int((rows["label"] == "hem").sum()),
        }
    return {"dataset": dict(dataset), "split": dict(split), "subsets": subsets}


def limitations(meta: Mapping) -> list[str]:
    """The known limitations of the bundle's model, from its own metadata."""
    from leukoflow.models.registry import ARCHITECTURES

    data = meta.get("data", {})
    evaluation = meta.get("evaluation", {})
    found = []
    if data.get("dataset", {}).get("source") == "synthetic":
        found.append(
            "Trained and tested on synthetic cells: its numbers show that the workflow "
            "runs, not how it would classify real blood smears."
        )
    subjects = evaluation.get("n_test_subjects")
    if subjects is not None and subjects < FEW_TEST_SUBJECTS:
        found.append(
            f"Demo scale: {subjects} test subjects ({evaluation.get('n_test')} images); the "
            "confidence intervals are wide and the point estimates unstable."
        )
    for member in members_of(meta):
        who = f"{member['architecture']}: " if is_ensemble(meta) else ""
        epochs = (member.get("settings") or {}).get("epochs")
        if epochs is not None and epochs < FEW_EPOCHS:
            found.append(f"{who}Trained for {epochs} epochs only (the paper trains 200).")
        spec = ARCHITECTURES.get(member["architecture"])
        size = member.get("input_size") or (spec.native_size if spec else 0)
        if spec is not None and size < spec.native_size:
            found.append(
                f"{who}Input {size} px, below the architecture's native {spec.native_size} px."
            )
    found += [
        "Segmented single cells on a black background, stain-normalised to the bundle's "
        "reference; other stains, scanners, magnifications or unsegmented smears are untested.",
        "Images of one subject are correlated: the intervals resample subjects, and new "
        "patients may differ more than the test subjects did.",
    ]
    return found


def _front_matter(meta):
    """The YAML front matter (Hugging Face model-card metadata)."""
    test = meta.get("test_metrics", {})
    dataset = meta.get("data", {}).get("dataset", {})
    dataset_name = (
        "synthetic C-NMC-like cells" if dataset.get("source") == "synthetic" else ("C-NMC 2019")
    )
    onnx = all(onnx_file(member) for member in members_of(meta))
    front = {
        "library_name": "keras",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "keras", "leukoflow", "leukemia", "c-nmc-2019"]
        + (["onnx"] if onnx else [])
        + (["ensemble"] if is_ensemble(meta) else [])
        + (["synthetic-data"] if dataset.get("source") == "synthetic" else []),
        "metrics": [key for key, _ in CARD_METRICS if test.get(key) is not None],
        "model-index": [
            {
                "name": f"leukoflow-{meta['architecture']}",
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {"name": dataset_name, "type": dataset.get("source", "")},
                        "metrics": [
                            {"type": key, "value": round(float(test[key]), 4), "name": name}
                            for key, name in CARD_METRICS
                            if test.get(key) is not None
                        ],
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n"


def key_lines(meta: Mapping) -> dict[str, str]:
    """The card's key lines, for the report's summary of every model's card.

    Args:
        meta: the bundle's metadata (bundle.json).

    Returns:
        {"models", "training data", "threshold", "test F1", "calibration", "referral",
        "ONNX", "limitations", "config hash": plain text}.
    """
    data = meta.get("data") or {}
    subsets = data.get("subsets", {})
    counts = ", ".join(
        f"{name} {subsets[name]['subjects']} subjects / {subsets[name]['images']} images"
        for name in SUBSETS
        if name in subsets
    )
    source = data.get("dataset", {}).get("source")
    test = meta.get("test_metrics", {})
    lo, hi = (meta.get("evaluation", {}).get("ci", {}).get("f1") or [None, None])[:2]
    onnx = [
        onnx_file(m) or f"none: {(m.get('onnx') or {}).get('reason', 'made before ONNX export')}"
        for m in members_of(meta)
    ]
    calibration = meta.get("evaluation", {}).get("calibration") or {}
    before = calibration.get("before") or {}
    band = meta.get("referral")
    combiner = meta.get("combiner") or {}
    models = (
        f"{combiner.get('method')} of "
        + ", ".join(
            f"{name} ({fmt(weight, 3)})"
            for name, weight in zip(combiner.get("members", []), combiner.get("weights", []))
        )
        if is_ensemble(meta)
        else str(meta["architecture"])
    )
    return {
        "models": models,
        "training data": (f"{source}: {counts}" if data else "not recorded"),
        "threshold": f"{fmt(meta['threshold'], 4)} "
        f"({meta.get('evaluation', {}).get('threshold_rule', 'rule not recorded')})",
        "test F1": f"{fmt(test.get('f1'))} "
        f"[{meta.get('evaluation', {}).get('ci_note') or fmt(lo) + ', ' + fmt(hi)}]",
        "calibration": f"T {fmt(float(meta.get('temperature', 1.0)), 3)}: "
        + (f"ECE {fmt(before.get('ece'))} -> " if before else "")
        + f"ECE {fmt(test.get('ece'))}, Brier {fmt(test.get('brier'))}",
        "referral": describe_rule(band),
        "ONNX": "; ".join(onnx),
        "limitations": " ".join(limitations(meta)[:-2]) or "-",
        "config hash": str(meta.get("config_hash")),
    }


def render_card(meta: Mapping) -> str:
    """The model card (Markdown with YAML front matter) of a bundle's metadata.

    Args:
        meta: the bundle's metadata (bundle.json).

    Returns:
        The text of README.md.
    """
    reference = meta.get("stain_reference", {})
    versions = meta.get("versions", {})
    arch = meta["architecture"]
    sizes = sorted({m["input_size"] for m in members_of(meta)})
    resize = (
        f"{sizes[0]} x {sizes[0]} px"
        if len(sizes) == 1
        else f"each network's input ({', '.join(map(str, sizes))} px square)"
    )
    sections = [
        (
            "Intended use",
            "Research on telling leukemic lymphoblasts (`all`) from normal B-lymphoid cells "
            "(`hem`) in segmented single-cell microscopy images. **Not a medical device and "
            "not for diagnosis**: no decision about a patient may rest on it.",
        ),
        ("Training data", training_data_section(meta)),
        (
            "Preprocessing",
            f"Each image: the square frame centred on the cell, Lanczos resize to {resize}, "
            f"stain normalisation ({reference.get('method', '?')}) to the reference fitted on "
            "the training subjects only (embedded in bundle.json). `leukoflow predict` applies "
            "exactly this.",
        ),
        ("Architecture and training", architecture_section(meta)),
        ("Evaluation", evaluation_section(meta)),
        ("Decision threshold", threshold_section(meta)),
        ("Calibration", calibration_section(meta)),
        ("Referral", referral_section(meta)),
        *([("Patients", patients_section(meta))] if meta.get("patients") else []),
        *([("Uncertainty", uncertainty_section(meta))] if "tta" in meta else []),
        *([("Robustness", robustness_section(meta))] if meta.get("robustness") else []),
        ("ONNX", onnx_section(meta)),
        ("Known limitations", "\n".join(f"- {line}" for line in limitations(meta))),
        (
            "Versions and provenance",
            table(["package", "version"], sorted(versions.items()))
            + f"\n\nConfiguration hash `{meta.get('config_hash')}`, bundle format "
            f"{meta.get('format_version')}, created {meta.get('created')}.",
        ),
    ]
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections)
    what = "ensemble" if is_ensemble(meta) else "model"
    title = f"# leukoflow {what} {arch}: ALL vs normal (hem) cells"
    return f"{_front_matter(meta)}\n{title}\n\n{body}\n"
