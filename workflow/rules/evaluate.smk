# Per architecture: evaluation on the test subset, timing, saliency, and the model bundle.


rule evaluate:
    input:
        model=rules.train.output.model,
        val=store("val"),
        test=store("test"),
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
    threads: max(1, workflow.cores)
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(60),
    params:
        settings=settings,
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
        backend=config["backend"],
    shell:
        "KERAS_BACKEND={params.backend} leukoflow evaluate --model {input.model}"
        " --val {input.val} --test {input.test} --settings '{params.settings}'"
        " --evaluate '{params.evaluate}' --out-dir $(dirname {output.metrics}) > {log} 2>&1"


rule timing:
    input:
        model="results/main/train/{arch}/model.keras",
    output:
        timing="results/main/timing/{arch}.json",
    log:
        "logs/timing/{arch}.log",
    benchmark:
        "benchmarks/timing/{arch}.tsv"
    conda:
        ENV
    threads: max(1, workflow.cores)
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(30),
    params:
        settings=settings,
        warmup=config["timing"]["warmup"],
        calls=config["timing"]["calls"],
        batch=config["timing"]["batch_size"],
        backend=config["backend"],
    shell:
        "KERAS_BACKEND={params.backend} leukoflow timing --model {input.model}"
        " --settings '{params.settings}' --warmup {params.warmup} --calls {params.calls}"
        " --batch-size {params.batch} --out {output.timing} > {log} 2>&1"


rule saliency:
    input:
        model="results/main/train/{arch}/model.keras",
        test=lambda wc: f"results/main/stores/{arch_size(wc.arch)}px/test.npy",
    output:
        measures="results/main/saliency/{arch}/saliency.json",
        figure="results/main/saliency/{arch}/saliency.png",
    log:
        "logs/saliency/{arch}.log",
    benchmark:
        "benchmarks/saliency/{arch}.tsv"
    conda:
        ENV
    threads: max(1, workflow.cores)
    resources:
        **gpu_resources(),
        mem_mb=attempt_scaled(4000),
        runtime=attempt_scaled(30),
    params:
        settings=settings,
        saliency=json.dumps(config["saliency"], sort_keys=True),
        backend=config["backend"],
    shell:
        "KERAS_BACKEND={params.backend} leukoflow saliency --model {input.model}"
        " --test {input.test} --settings '{params.settings}' --saliency '{params.saliency}'"
        " --out-dir $(dirname {output.measures}) > {log} 2>&1"


rule bundle:
    input:
        model="results/main/train/{arch}/model.keras",
        metrics="results/main/evaluate/{arch}/metrics.json",
        reference="results/main/stain/reference.json",
    output:
        model="results/models/{arch}/model.keras",
        bundle="results/models/{arch}/bundle.json",
    log:
        "logs/bundle/{arch}.log",
    conda:
        ENV
    params:
        settings=settings,
        config_hash=lambda wc: arch_config_hash(config, wc.arch),
        backend=config["backend"],
    shell:
        "KERAS_BACKEND={params.backend} leukoflow bundle --model {input.model} --metrics {input.metrics}"
        " --reference {input.reference} --settings '{params.settings}'"
        " --config-hash {params.config_hash} --out-dir $(dirname {output.bundle}) > {log} 2>&1"
