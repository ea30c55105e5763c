# The report: Table I, plots, the HTML page and the metrics file DVC compares.
from pathlib import Path

import leukoflow


rule report:
    input:
        metrics=expand(
            "results/{split}/evaluate/{arch}/metrics.json", split=SPLITS, arch=ARCHS
        ),
        histories=expand(
            "results/{split}/train/{arch}/history.csv", split=SPLITS, arch=ARCHS
        ),
        timing=expand("results/main/timing/{arch}.json", arch=ARCHS),
        saliency=expand("results/main/saliency/{arch}/saliency.json", arch=ARCHS),
        stain="results/main/stain/spread.json",
        augment=expand(
            "results/main/stores/{size}px/train_aug_examples.png",
            size=sorted({arch_size(arch) for arch in ARCHS})[:1],
        ),
        code=Path(leukoflow.__file__).parent / "report.py",
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
        archs=" ".join(ARCHS),
        folds=CV_FOLDS,
    shell:
        "leukoflow report --results results --archs {params.archs} --folds {params.folds}"
        " --out-dir results > {log} 2>&1"
