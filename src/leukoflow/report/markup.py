"""HTML building blocks of the report page: tables and captions."""

import html


def table_html(header: list[str], rows: list[list[str]], row_classes=None) -> str:
    """An HTML table in a scrolling wrapper.

    Args:
        header: the column names (escaped here).
        rows: the cells of each row, HTML already.
        row_classes: a CSS class per row ('' for none), or None.

    Returns:
        The HTML.
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def caption(text: str) -> str:
    """A caption paragraph (escaped)."""
    return f'<p class="caption">{html.escape(text)}</p>'
