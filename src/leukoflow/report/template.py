"""The HTML page of the report, as a `string.Template` (a module, so it is always packaged).

Placeholders: title, generated, summary, notes, table, more, sections (all HTML, escaped by the
caller). The page is self-contained: inline CSS, images as data URIs, no scripts.
"""

from string import Template

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
  :root { --ink: #1d2430; --muted: #5b6575; --line: #d9dee7; --accent: #2b5fab; --bg: #f6f7f9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: var(--bg); }
  header { background: #18325c; color: #fff; padding: 22px 32px 18px; }
  header h1 { margin: 0 0 4px; font-size: 24px; }
  header p { margin: 0; color: #c9d6ee; font-size: 13px; }
  main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 48px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
            padding: 16px 22px; margin: 18px 0; }
  h2 { font-size: 19px; margin: 4px 0 10px; color: #18325c; }
  h3 { font-size: 15px; margin: 14px 0 6px; }
  p.caption, p.note, ul.summary { color: var(--muted); font-size: 13.5px; }
  p.note { border-left: 3px solid #d9a400; padding: 4px 10px; background: #fffaf0; }
  .table-wrap { overflow-x: auto; }
  table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
  th, td { border-bottom: 1px solid var(--line); padding: 5px 9px; text-align: right;
           white-space: nowrap; }
  th { background: #eef2f8; position: sticky; top: 0; }
  td:first-child, th:first-child { text-align: left; font-weight: 600; }
  tr.best td { background: #eef7ee; }
  td .ci, td .paper { display: block; color: var(--muted); font-size: 11.5px; font-weight: 400; }
  div.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
  div.row figure { flex: 1 1 420px; }
  figure { margin: 10px 0 4px; }
  figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
               background: #fff; }
  figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
</style>
</head>
<body>
<header>
  <h1>$title</h1>
  <p>$generated</p>
</header>
<main>
<section id="summary">
  <h2>Summary</h2>
  $summary
  $notes
</section>
<section id="table1">
  <h2>Table I: test-set comparison, ours beside the paper's</h2>
  $table
</section>
<section id="more-metrics">
  <h2>Further test metrics</h2>
  $more
</section>
$sections
</main>
</body>
</html>
"""
)
