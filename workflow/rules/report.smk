# The report: Table I (architectures and ensembles), plots, the ablation, the HTML page and
# the metrics file DVC compares.
from pathlib import Path

import leukoflow


rule report:
    input:
        manifest_files(report_manifest()),
        code=sorted((Path(leukoflow.__file__).parent / "report").glob("*.py")),
    output:
        table_csv=report(
            "results/table1.csv", category="Table I", caption="../report/table1.rst"
        ),
        table_md="results/table1.md",
        html="results/report.html",
        metrics="results/metrics.json",
        plots=report(
            directory("results/plots"),
            patterns=["{name}.png"],
            category="Plots",
            caption="../report/plots.rst",
        ),
    log:
        "logs/report.log",
    conda:
        ENV
    params:
        # the report's one input: every file by name (common.smk), in table order
        manifest=json.dumps(report_manifest()),
    shell:
        "leukoflow report --manifest {params.manifest:q}"
        " --table-csv {output.table_csv:q} --table-md {output.table_md:q}"
        " --dvc-metrics {output.metrics:q} --plots {output.plots:q}"
        " --html {output.html:q} > {log:q} 2>&1"
