"""The report: Table I beside the paper's, plots, `metrics.json` for DVC and one HTML page.

`collect` reads the files the caller names in one manifest (`inputs_from_manifest`: evaluate,
ensembles, timing, saliency, training histories, cross-validation folds, stain and
augmentation examples, the split table, the ablation table), `table` builds Table I and
`metrics.json`, `verdicts` says what a reader must not miss (the data used, the models that
did not learn), `plots` and `beyond_plots` draw every figure, `html` and `beyond` render the
self-contained page (images inlined as data URIs) from the template in `template`. Optional
inputs that are missing leave a note in the report instead of failing it.
"""

import json
import logging

import pandas as pd

from leukoflow.core.atomic import atomic_dir, atomic_path, write_text
from leukoflow.report.beyond_plots import make_beyond_plots
from leukoflow.report.collect import (
    ArchFiles,
    EnsembleFiles,
    ReportInputs,
    ReportOutputs,
    collect,
    inputs_from_manifest,
)
from leukoflow.report.html import render_html
from leukoflow.report.patients import verdict_line
from leukoflow.report.plots import make_plots
from leukoflow.report.table import metrics_for_dvc, table1, table_markdown, table_notes
from leukoflow.report.verdicts import data_line, verdicts

__all__ = [
    "ArchFiles",
    "EnsembleFiles",
    "ReportInputs",
    "ReportOutputs",
    "build_report",
    "inputs_from_manifest",
]

log = logging.getLogger(__name__)


def build_report(inputs: ReportInputs, outputs: ReportOutputs) -> pd.DataFrame:
    """Write Table I (CSV and Markdown), metrics.json, the plots folder and the HTML page.

    Args:
        inputs: every file the report reads.
        outputs: every file and folder it writes (each written atomically; the plots
            folder is replaced as a whole).

    Returns:
        Table I as a frame (one row per architecture, in the order of `inputs.archs`, then
        one per ensemble).

    Raises:
        LeukoflowError: no architecture, a missing evaluation of one, or models scored on
            different test images.
    """
    data = collect(inputs)
    table = table1(data)
    notes = [data_line(data), *table_notes(table, data)]
    # the lab's question after the cells': each model's subject-level call
    said = verdicts(table, data) + [verdict_line(n, r) for n, r in data.patients.items()]
    with atomic_path(outputs.table_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_text(outputs.table_md, table_markdown(table, data, notes, said))
    metrics = metrics_for_dvc(table, data)
    write_text(outputs.metrics_json, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with atomic_dir(outputs.plots) as plots:
        figures = {**make_plots(data, table, plots), **make_beyond_plots(data, plots)}
        page = render_html(data, table, figures, notes, said)
    write_text(outputs.html, page)
    for note in data.notes:
        log.warning("%s", note)
    for line in said:
        log.info("verdict: %s", line)
    log.info("report: %s, %d figures", outputs.html, len(figures))
    return table
