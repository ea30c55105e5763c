"""What a reader must not miss: the data the run used, and which models learnt anything.

`data_line` names the data (synthetic, with the generator's settings, or the dataset folder,
with subjects and images per subset), so that a synthetic run is never read as a C-NMC
result. `verdicts` names the models whose test ROC-AUC CI includes 0.5 (they did not learn)
and those that call every test cell one class, says why from their training settings, and
adds what the ensembles and the ablation show. With too few test subjects of a class for
an interval (evaluate's `ci_note`), no verdict on learning or on which model is better is
given: the first sentence says the test subset is too small to judge, with its subjects.
Table I's Markdown (which `make demo` prints) and the report's summary both carry these
sentences.
"""

import pandas as pd

from leukoflow.data.synth import describe_settings
from leukoflow.report.collect import ReportData
from leukoflow.report.table import ci_note, fmt

DEMO_EPOCHS = 10  # at most this many epochs is a demonstration run, not a training


def data_line(data: ReportData) -> str:
    """One sentence naming the data of the run.

    Args:
        data: the collected report data (`dataset`, `subsets`).

    Returns:
        "Data: SYNTHETIC cells ..." or "Data: the dataset folder ...", with the subjects and
        images of each subset.
    """
    if data.subsets is not None:
        counts = "; ".join(
            f"{row.subset} {row.subjects} subjects, {row.images} images "
            f"({row.all_images} all, {row.hem_images} hem)"
            for row in data.subsets.itertuples()
        )
    else:
        counts = "subset counts not given"
    dataset = data.dataset
    if dataset.get("source") == "synthetic":
        return (
            "Data: SYNTHETIC cells from leukoflow's own generator (`leukoflow synth`: "
            f"{describe_settings(dataset.get('synthetic', {}))}), not C-NMC 2019 images: these "
            f"numbers test the workflow, not the architectures on leukaemia cells. {counts}."
        )
    if dataset.get("source") == "folder":
        return f"Data: the dataset folder {dataset.get('path')}. {counts}."
    return f"Data: {counts}."


def _signed(value):
    """A difference with its sign, 3 decimals; '–' when undefined."""
    return "–" if value is None or pd.isna(value) else f"{value:+.3f}"


def too_small(data: ReportData) -> str | None:
    """The verdict that the test subset is too small to judge, or None when it is not.

    Args:
        data: the collected report data (the first architecture's `ci_note`,
            `test_subjects` and `min_subjects_per_class`: every model has the same test
            subset).

    Returns:
        The sentence, naming the test subjects of each class and the minimum.
    """
    metrics = data.metrics[data.archs[0]]
    if not metrics.get("ci_note"):
        return None
    counts = metrics.get("test_subjects", {})
    return (
        f"The test subset is too small to judge: {metrics.get('n_test_subjects', '?')} "
        f"subjects ({counts.get('all', '?')} all, {counts.get('hem', '?')} hem), fewer than "
        f"{metrics.get('min_subjects_per_class', '?')} of each class "
        "(evaluate.min_subjects_per_class). No interval is given, so no model is said to "
        "have learned or not, nor to be better than another: the figures describe these "
        "few subjects only."
    )


def _did_not_learn(row):
    """True when the test ROC-AUC's CI reaches down to 0.5 (or the AUC is undefined)."""
    lo = row["roc_auc_lo"]
    return lo is None or pd.isna(lo) or lo <= 0.5


def _one_class(data, name):
    """'all' or 'hem' when the model calls every test cell that class, else None."""
    (tn, fp), (fn, tp) = data.metrics[name]["test"]["confusion"]
    if tn + fn == 0:
        return "all"
    if tp + fp == 0:
        return "hem"
    return None


def _training_phrase(data, names):
    """How the models were trained, grouped: 'VGG16, ResNet152V2: from scratch, 3 epochs,
    64 px'; and whether every one of them is at demo scale."""
    groups, demo = {}, True
    for name in names:
        settings = data.metrics[name].get("settings") or {}
        if not settings:
            continue
        weights = settings.get("weights")
        start = "from scratch" if weights == "none" else f"from {weights} weights"
        epochs, size = settings.get("epochs"), settings.get("input_size")
        demo = demo and epochs is not None and epochs <= DEMO_EPOCHS
        groups.setdefault(f"{start}, {epochs} epoch(s), {size} px", []).append(name)
    phrase = "; ".join(f"{', '.join(members)}: {how}" for how, members in groups.items())
    return phrase, demo and bool(groups)


def _train_images(data):
    if data.subsets is None or "train" not in set(data.subsets["subset"]):
        return "the training images"
    images = int(data.subsets.set_index("subset").loc["train", "images"])
    return f"{images} training images (before augmentation)"


def verdicts(table: pd.DataFrame, data: ReportData) -> list[str]:
    """The sentences a reader must not miss, in order of importance.

    Args:
        table: Table I (`leukoflow.report.table.table1`).
        data: the collected report data.

    Returns:
        The models that did not learn and why, the ones that call every cell one class,
        the best ensemble against the best single model, and the ablation's readings.
    """
    rows = table.to_dict("records")
    small = too_small(data)
    failed = [] if small else [r["architecture"] for r in rows if _did_not_learn(r)]
    learned = [] if small else [r["architecture"] for r in rows if not _did_not_learn(r)]
    out = []
    if small:
        out.append(small)
    elif failed:
        text = (
            f"Did not learn: {', '.join(failed)}: the 95% CI of the test ROC-AUC includes 0.5 "
            "(chance), so their other figures mean nothing."
        )
        phrase, demo = _training_phrase(data, [n for n in failed if n in data.archs])
        if phrase:
            text += f" They were trained {phrase}, on {_train_images(data)}."
        if demo:
            text += (
                " That is expected at demo scale: large networks need ImageNet weights and "
                "many epochs (the paper: 200 epochs at their native 224-480 px), so read these "
                "rows as a check that the workflow runs, not as a comparison of architectures."
            )
        out.append(text)
    else:
        out.append("Every model learned: the 95% CI of each test ROC-AUC lies above 0.5.")
    one_class = {n: c for n in data.models if (c := _one_class(data, n))}
    for label in ("all", "hem"):
        names = [n for n, c in one_class.items() if c == label]
        if names:
            out.append(
                f"{', '.join(names)} call{'s' if len(names) == 1 else ''} every test cell "
                f"`{label}`: their recall or precision of `all` is an artefact of that."
            )
    if failed and learned:
        out.append(f"Learned (test ROC-AUC CI above 0.5): {', '.join(learned)}.")
    best = table.loc[table["is_best"]].iloc[0]
    for row in (r for r in rows if r["kind"] == "ensemble"):
        against = (
            "too few test subjects to say which is better."
            if small
            else f"P({best['architecture']} better) = {fmt(row['p_best_better'], 2)} over "
            "paired subject resamples."
        )
        out.append(
            f"{row['architecture']} (an ensemble): F1 {fmt(row['f1'], 3)} against "
            f"{best['architecture']}'s {fmt(best['f1'], 3)} (the best single model); {against}"
        )
    if data.ablation is not None:
        for row in data.ablation.to_dict("records"):
            note = ci_note(row)
            effect = " ".join(
                f"{label} {_signed(row[m])} "
                f"[{note or _signed(row[f'{m}_lo']) + ', ' + _signed(row[f'{m}_hi'])}]"
                for m, label in (("f1", "F1"), ("roc_auc", "ROC-AUC"))
            )
            out.append(
                f"Ablation, {row['architecture']}, {row['factor']} {row['level']} against "
                f"{row['reference']} on {row['shared_images']} shared test cells: {effect}; "
                f"{row['reading']}."
            )
    return out
