"""Table I's columns: the one list from which table1.csv, table1.md and the HTML table come.

Each `Column` names the frame column that holds its value (a column of table1.csv), its
header, its format (decimals in Markdown and in HTML, the paper's value beside it) and the
source of its interval. `leukoflow.report.table.table1` fills the frame from this list (a
`metric` column's value is evaluate's test metric of that name, its interval evaluate's
subject bootstrap), `table.table_markdown` and `html.html_table1` render it. Adding a test
metric to Table I is one entry here (the metric must be one evaluate computes with a CI,
`leukoflow.evaluate.metrics.CI_METRICS`).
"""

from dataclasses import dataclass

KINDS = ("model", "time", "metric", "delta", "vs_best", "cv")


@dataclass(frozen=True)
class Column:
    """One column of Table I.

    Attributes:
        name: the frame's column (and table1.csv's) holding the value; `{name}_lo` and
            `{name}_hi` hold its interval, `paper_{name}` the paper's value.
        header: the header in Markdown and HTML (Markdown adds " [95% CI]" and " (paper)").
        kind: where the value comes from: `metric` (evaluate's test metric `name`), `delta`
            (ΔF1 from the F1s), `time` (the timing job; HTML adds its p95), `vs_best` (the
            paired comparison with the best architecture), `cv` (cross-validation mean ± sd
            of `name` without its `_cv` suffix, shown with cross-validation only), `model`.
        digits: decimals in Markdown.
        html_digits: decimals in HTML.
        ci: the interval's source: "bootstrap" (evaluate's subject bootstrap, `ci[name]` of
            its metrics.json), or None for no interval.
        markdown_ci: whether Markdown prints the interval too (HTML always does).
        paper_digits: decimals of the paper's value printed beside ours; None when the
            paper's Table I has no such column.
    """

    name: str
    header: str
    kind: str = "metric"
    digits: int = 2
    html_digits: int = 3
    ci: str | None = None
    markdown_ci: bool = True
    paper_digits: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: kind {self.kind!r} not in {KINDS}")
        if self.ci not in (None, "bootstrap"):
            raise ValueError(f"column {self.name}: ci {self.ci!r}; allowed: None, 'bootstrap'")


COLUMNS = (
    Column("architecture", "Model", kind="model"),
    Column("time_ms", "Time, ms", kind="time", digits=1, html_digits=1, paper_digits=0),
    Column("precision", "Precision", ci="bootstrap", markdown_ci=False, paper_digits=2),
    Column("recall", "Recall", ci="bootstrap", markdown_ci=False, paper_digits=2),
    Column("f1", "F1", ci="bootstrap", paper_digits=2),
    Column("delta_f1_pct", "ΔF1 %", kind="delta", digits=1, html_digits=1, paper_digits=1),
    Column("weighted_f1", "Weighted F1", ci="bootstrap"),
    Column("macro_f1", "Macro F1", ci="bootstrap", markdown_ci=False),
    Column("roc_auc", "ROC-AUC", ci="bootstrap"),
    Column("p_best_better", "P(best better)", kind="vs_best", digits=2, html_digits=2),
    Column("f1_cv", "F1 CV mean ± sd", kind="cv"),
)


def shown_columns(columns) -> list[Column]:
    """The columns of `COLUMNS` that a table with these frame columns shows.

    Args:
        columns: the frame's column names (a `cv` column is shown only when the frame has
            its `_mean`).

    Returns:
        The shown columns, in order.
    """
    columns = set(columns)
    return [
        c for c in COLUMNS if c.kind != "cv" or f"{c.name.removesuffix('_cv')}_cv_mean" in columns
    ]


def markdown_header(column: Column) -> str:
    """The Markdown header of a column: its header, " [95% CI]", " (paper)" as it has them."""
    text = column.header
    if column.ci and column.markdown_ci:
        text += " [95% CI]"
    if column.paper_digits is not None:
        text += " (paper)"
    return text
