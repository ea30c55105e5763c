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
        "leukoflow fetch-weights --arch {wildcards.arch:q} --out {output.weights:q}"
        " > {log:q} 2>&1"


rule train:
    input:
        train=get_train_store,
        val=get_val_store,
        weights=get_weights,
    output:
        model="results/{split}/train/{arch}/model.keras",
        history="results/{split}/train/{arch}/history.csv",
        val_predictions="results/{split}/train/{arch}/val_predictions.csv",
        live=directory("results/{split}/train/{arch}/dvclive"),
    log:
        "logs/train/{split}/{arch}.log",
    benchmark:
        "benchmarks/train/{split}/{arch}.tsv"
    # the trainings are the long jobs: start them all first, the jobs after them fill in
    priority: 1
    conda:
        ENV
    threads: get_train_threads
    resources:
        **gpu_resources(get_devices),
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(720),
    params:
        settings=get_settings,
        backend=BACKEND,
        # not an output: kept when the job dies, so a rerun resumes from it
        checkpoint="results/{split}/train/{arch}/checkpoint",
    shell:
        keras_shell(
            "leukoflow train --arch {wildcards.arch:q}"
            " --train {input.train:q} --val {input.val:q} --settings {params.settings:q}"
            " --weights-file={input.weights:q} --model {output.model:q}"
            " --history {output.history:q} --val-predictions {output.val_predictions:q}"
            " --checkpoint {params.checkpoint:q} --live {output.live:q} > {log:q} 2>&1"
        )
