# The report: Table I (architectures and ensembles), plots, the ablation, the HTML page and
# the metrics file DVC compares.
from pathlib import Path

import leukoflow


rule report:
    input:
        metrics=expand("results/main/evaluate/{arch}/metrics.json", arch=ARCHS),
        predictions=expand(
            "results/main/evaluate/{arch}/test_predictions.csv", arch=ARCHS
        ),
        histories=expand("results/main/train/{arch}/history.csv", arch=ARCHS),
        timings=expand("results/main/timing/{arch}.json", arch=ARCHS),
        saliency=expand("results/main/saliency/{arch}/saliency.json", arch=ARCHS),
        saliency_figures=expand("results/main/saliency/{arch}/saliency.png", arch=ARCHS),
        bundles=expand("results/models/{arch}", arch=ARCHS),
        live=expand("results/main/train/{arch}/dvclive", arch=ARCHS),
        # K per architecture, architecture by architecture (the order `--fold-metrics` wants)
        fold_metrics=[
            f"results/{split}/evaluate/{arch}/metrics.json"
            for arch in ARCHS
            for split in SPLITS[1:]
        ],
        ensemble_metrics=expand(rules.ensemble.output.metrics, ensemble=ENSEMBLES),
        ensemble_predictions=expand(
            rules.ensemble.output.test_predictions, ensemble=ENSEMBLES
        ),
        ensemble_bundles=expand(rules.bundle_ensemble.output.bundle, ensemble=ENSEMBLES),
        split_table=rules.split.output.split,
        ablation_effects=rules.ablation.output.effects if ABLATION else [],
        ablation_combinations=rules.ablation.output.combinations if ABLATION else [],
        stain_spread="results/main/stain/spread.json",
        stain_examples="results/main/stain/examples.png",
        augment_examples=expand(
            "results/main/stores/{size}px/train_aug_examples.png",
            size=sorted({arch_size(arch) for arch in ARCHS})[:1],
        ),
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
        archs=ARCHS,
        folds=CV_FOLDS,
        ensembles=list(ENSEMBLES),
        dataset=json.dumps(config["dataset"], sort_keys=True),
    shell:
        "leukoflow report --archs {params.archs:q}"
        " --metrics {input.metrics:q} --predictions {input.predictions:q}"
        " --ensembles {params.ensembles:q} --ensemble-metrics {input.ensemble_metrics:q}"
        " --ensemble-predictions {input.ensemble_predictions:q}"
        " --ensemble-bundles {input.ensemble_bundles:q}"
        " --dataset {params.dataset:q} --split-table {input.split_table:q}"
        " --ablation-effects {input.ablation_effects:q}"
        " --ablation-combinations {input.ablation_combinations:q}"
        " --histories {input.histories:q} --timings {input.timings:q}"
        " --saliency {input.saliency:q} --saliency-figures {input.saliency_figures:q}"
        " --bundles {input.bundles:q} --live {input.live:q}"
        " --folds {params.folds} --fold-metrics {input.fold_metrics:q}"
        " --stain-spread {input.stain_spread:q} --stain-examples {input.stain_examples:q}"
        " --augment-examples {input.augment_examples:q}"
        " --table-csv {output.table_csv:q} --table-md {output.table_md:q}"
        " --dvc-metrics {output.metrics:q} --plots {output.plots:q}"
        " --html {output.html:q} > {log:q} 2>&1"
