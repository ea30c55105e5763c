"""The report's tables beyond Table I: calibration, referral, and the ablation matrix.

Each function renders one section's table (HTML) from the collected data; `html` places
them in their sections beside the figures of `beyond_plots`.
"""

import html

import pandas as pd

from leukoflow.evaluate.referral import describe_rule
from leukoflow.report.collect import ReportData
from leukoflow.report.markup import caption, table_html
from leukoflow.report.table import fmt


def with_ci(value, ci, digits=3, signed=False, note=None) -> str:
    """A value and its CI as HTML, the interval small and muted.

    Args:
        value: the value (None: '–').
        ci: [lo, hi], or None.
        digits: decimals.
        signed: write the value with its sign (a difference).
        note: why there is no interval ("CI: too few test subjects (...)"), printed
            instead of it; None to print the interval.

    Returns:
        'value<span class="ci">[lo, hi]</span>'.
    """
    lo, hi = ci if ci else (None, None)
    number = f"{value:+.{digits}f}" if signed and value is not None else fmt(value, digits)
    interval = note or f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"
    return f'{html.escape(number)}<span class="ci">{html.escape(interval)}</span>'


def html_calibration(data: ReportData) -> str:
    """Temperature, Brier score and ECE before and after calibration, with CIs.

    Args:
        data: the collected report data.

    Returns:
        The table and its caption (HTML).
    """
    rows = []
    for name in data.models:
        cal, note = data.metrics[name]["calibration"], data.metrics[name].get("ci_note")
        rows.append(
            [html.escape(name), fmt(cal["temperature"], 2)]
            + [
                with_ci(
                    cal[arm][metric], cal[arm][f"{metric}_ci"], signed=arm == "change", note=note
                )
                for metric in ("brier", "ece")
                for arm in ("before", "after", "change")
            ]
        )
    header = ["Model", "Temperature"] + [
        f"{metric}, {arm}" for metric in ("Brier", "ECE") for arm in ("before", "after", "change")
    ]
    text = (
        "Temperature scaling: the calibrated probability is sigmoid(logit(p) / T), with the "
        "temperature T fitted on the validation subset (negative log-likelihood); T > 1 "
        "softens an over-confident model, T < 1 sharpens an under-confident one. The order "
        "of the probabilities, and so ROC-AUC and every decision, stays the same. Brier score "
        "and ECE (10 bins) on the test subset before and after, and the change (after - "
        "before), with 95% CIs from the same subject resamples. T is searched from 0.05 to "
        "20: at either end, scaling alone cannot calibrate the model (e.g. probabilities that "
        "rank well but are all shifted to one side). `leukoflow predict` writes the "
        "calibrated probabilities."
    )
    return table_html(header, rows) + caption(text)


def html_referral(data: ReportData) -> str:
    """The referral band of each model: chosen on validation, applied to test, with CIs.

    Args:
        data: the collected report data.

    Returns:
        The table and its caption (HTML).
    """
    rows = []
    first = data.metrics[data.models[0]]["referral"]
    metric = first["metric"]
    for name in data.models:
        referral, note = data.metrics[name]["referral"], data.metrics[name].get("ci_note")
        test = referral["test"]
        met = "yes" if referral["met"] else "<b>no</b>"
        rows.append(
            [
                html.escape(name),
                html.escape(describe_rule(referral)),
                f"{fmt(referral['val_value'])} ({met})",
                fmt(referral["val_share_referred"], 3),
                with_ci(test["share_referred"], test["share_referred_ci"], note=note),
            ]
            + [
                with_ci(test["rest"][m], test["rest_ci"][m], note=note)
                for m in dict.fromkeys((metric, "sensitivity", "specificity", "f1"))
            ]
            + [fmt(data.metrics[name]["risk_coverage"]["aurc"], 3)]
        )
    rest = [f"{m} of the rest" for m in dict.fromkeys((metric, "sensitivity", "specificity", "f1"))]
    header = [
        "Model",
        "Rule (refer when)",
        f"Val {metric} (target met)",
        "Val share referred",
        "Test share referred",
        *rest,
        "AURC",
    ]
    text = (
        "Referral: a cell the rule names is left to a person: by probability, a cell whose "
        "calibrated probability p lies in a band around the threshold; by uncertainty, a cell "
        "whose uncertainty reaches a cut, on the column that ranks the validation errors "
        "best (evaluate.referral.by). The rule is chosen on the validation subset as the one "
        f"that refers the fewest cells while the {metric} of the cells not referred reaches "
        f"{fmt(first['target'], 2)}; the test columns apply it to the test subset (95% CIs "
        "over subjects). AURC: area under the risk-coverage curve with cells ranked by "
        "|p - threshold| (error rate of the most confident cells against their share; lower "
        "is better; the risk-coverage figure shows it for each uncertainty too). `leukoflow "
        "predict` writes the `refer` column from the same rule."
    )
    return table_html(header, rows) + caption(text)


def _effect_cells(row, metrics, signed):
    note = row.get("ci_note")
    return [
        with_ci(
            None if pd.isna(row[m]) else row[m],
            [None if pd.isna(row[f"{m}_{e}"]) else row[f"{m}_{e}"] for e in ("lo", "hi")],
            signed=signed,
            note=note if isinstance(note, str) else None,
        )
        for m in metrics
    ]


def html_ablation(data: ReportData) -> str:
    """The ablation's effects and each combination's own test metrics.

    Args:
        data: the collected report data (`ablation`, `ablation_combinations`).

    Returns:
        Both tables and their captions (HTML), or '' without an ablation.
    """
    if data.ablation is None:
        return ""
    metrics = ("f1", "weighted_f1", "roc_auc")
    labels = ["F1", "weighted F1", "ROC-AUC"]
    rows = [
        [
            html.escape(row["architecture"]),
            html.escape(f"{row['factor']}: {row['level']} vs {row['reference']}"),
            f"{row['shared_images']} ({row['shared_subjects']})",
            *_effect_cells(row, metrics, signed=True),
            html.escape(row["reading"]),
        ]
        for row in data.ablation.to_dict("records")
    ]
    header = ["Architecture", "Factor: level vs reference", "Shared test cells (subjects)"]
    header += [f"Δ{label}" for label in labels] + ["Reading"]
    text = (
        "Effect of each factor's level against its reference (the main run's level): the mean, "
        "over the settings of the other factors, of the difference between two models that "
        "differ in that factor only, each scored on the test cells both hold; 95% CIs from "
        "one paired bootstrap over subjects. The random split's test cells differ from the "
        "subject split's: the two are compared on the cells that are test cells in both, "
        "whose subjects the random split's model saw in training (other cells of them) and "
        "the subject split's model never saw."
    )
    out = table_html(header, rows) + caption(text)
    if data.ablation_combinations is not None:
        combos = data.ablation_combinations.to_dict("records")
        rows = [
            [
                html.escape(row["architecture"]),
                html.escape(row["combination"]),
                html.escape(row["run"]),
                str(row["n_test"]),
                *_effect_cells(row, metrics, signed=False),
            ]
            for row in combos
        ]
        header = ["Architecture", "Combination", "Run", "Test cells", *labels]
        text = (
            "Each combination on its own test subset, as it would be reported alone (the "
            "random split's subset differs from the others'). Run main: the main run's model "
            "and evaluation, reused rather than trained again."
        )
        out += table_html(header, rows) + caption(text)
    return out
