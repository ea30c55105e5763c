# Per architecture: evaluation on the test subset, timing, saliency, and the model bundle.


rule evaluate:
    input:
        model=rules.train.output.model,
        val=get_val_store,
        test=get_test_store,
    output:
        metrics="results/{split}/evaluate/{arch}/metrics.json",
        test_predictions="results/{split}/evaluate/{arch}/test_predictions.csv",
        val_predictions="results/{split}/evaluate/{arch}/val_predictions.csv",
    log:
        "logs/evaluate/{split}/{arch}.log",
    benchmark:
        "benchmarks/evaluate/{split}/{arch}.tsv"
    conda:
        ENV
    threads: GPU_THREADS
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(60),
    params:
        settings=get_settings,
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow evaluate --model {input.model:q}"
            " --val {input.val:q} --test {input.test:q} --settings {params.settings:q}"
            " --evaluate {params.evaluate:q} --split-id {wildcards.split:q}"
            " --metrics {output.metrics:q} --val-predictions {output.val_predictions:q}"
            " --test-predictions {output.test_predictions:q} > {log:q} 2>&1"
        )


rule timing:
    input:
        model=rules.train.output.model,
    output:
        timing="results/{split}/timing/{arch}.json",
    log:
        "logs/timing/{split}/{arch}.log",
    benchmark:
        "benchmarks/timing/{split}/{arch}.tsv"
    conda:
        ENV
    threads: GPU_THREADS
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(30),
    params:
        settings=get_settings,
        warmup=config["timing"]["warmup"],
        calls=config["timing"]["calls"],
        batch=config["timing"]["batch_size"],
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow timing --model {input.model:q}"
            " --settings {params.settings:q} --warmup {params.warmup:q}"
            " --calls {params.calls:q} --batch-size {params.batch:q}"
            " --out {output.timing:q} > {log:q} 2>&1"
        )


rule saliency:
    input:
        model=rules.train.output.model,
        test=get_test_store,
    output:
        measures="results/{split}/saliency/{arch}/saliency.json",
        figure="results/{split}/saliency/{arch}/saliency.png",
    log:
        "logs/saliency/{split}/{arch}.log",
    benchmark:
        "benchmarks/saliency/{split}/{arch}.tsv"
    conda:
        ENV
    threads: GPU_THREADS
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(30),
    params:
        settings=get_settings,
        saliency=json.dumps(config["saliency"], sort_keys=True),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow saliency --model {input.model:q}"
            " --test {input.test:q} --settings {params.settings:q}"
            " --saliency {params.saliency:q} --measures {output.measures:q}"
            " --figure {output.figure:q} > {log:q} 2>&1"
        )


rule bundle:
    input:
        model=expand(rules.train.output.model, split="main", allow_missing=True),
        metrics=expand(rules.evaluate.output.metrics, split="main", allow_missing=True),
        reference=expand(
            rules.stain_reference.output.reference, split="main", allow_missing=True
        ),
        split=rules.split.output.split,
    output:
        bundle=directory("results/models/{arch}"),
    log:
        "logs/bundle/{arch}.log",
    benchmark:
        "benchmarks/bundle/{arch}.tsv"
    conda:
        ENV
    params:
        settings=get_settings,
        config_hash=get_config_hash,
        data=json.dumps(
            {"dataset": config["dataset"], "split": config["split"]}, sort_keys=True
        ),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow bundle --model {input.model:q} --metrics {input.metrics:q}"
            " --reference {input.reference:q} --settings {params.settings:q}"
            " --config-hash {params.config_hash:q} --split {input.split:q}"
            " --data {params.data:q} --out {output.bundle:q} > {log:q} 2>&1"
        )
