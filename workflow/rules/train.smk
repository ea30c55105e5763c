# ImageNet weights (the one rule that downloads) and training, one job per architecture and split.


localrules:
    fetch_weights,
    report,
    bundle,


rule fetch_weights:
    output:
        weights=f"{config['weights_cache']}/{{arch}}.imagenet.notop.h5",
    log:
        "logs/fetch_weights/{arch}.log",
    conda:
        ENV
    shell:
        "leukoflow fetch-weights --arch {wildcards.arch} --out {output.weights} > {log} 2>&1"


rule train:
    input:
        train=train_store,
        val=store("val"),
        weights=weights_input,
    output:
        model="results/{split}/train/{arch}/model.keras",
        history="results/{split}/train/{arch}/history.csv",
        val_predictions="results/{split}/train/{arch}/val_predictions.csv",
    log:
        "logs/train/{split}/{arch}.log",
    benchmark:
        "benchmarks/train/{split}/{arch}.tsv"
    conda:
        ENV
    threads: max(1, workflow.cores)
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(720),
    params:
        settings=settings,
        backend=config["backend"],
    shell:
        "KERAS_BACKEND={params.backend} leukoflow train --arch {wildcards.arch}"
        " --train {input.train} --val {input.val} --settings '{params.settings}'"
        " --weights-file '{input.weights}'"
        " --out-dir $(dirname {output.model}) > {log} 2>&1"
