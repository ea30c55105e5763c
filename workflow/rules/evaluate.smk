# Each trained model scored on the test subset (with what is fitted on validation), timed and
# explained; ensembles of the main run's architectures evaluated like one model; the ablation
# matrix's table of each factor's effect (its combinations train and evaluate through the rules
# of train.smk and this file, in runs `ablation/{combination}` on data variants
# `ablation/data/{split}-{stain}`; leukoflow.evaluate.ablation, common.smk maps a run to its
# data and settings).


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


rule ensemble:
    input:
        val=member_files("results/main/evaluate/{arch}/val_predictions.csv"),
        test=member_files("results/main/evaluate/{arch}/test_predictions.csv"),
    output:
        metrics="results/main/ensemble/{ensemble}/metrics.json",
        test_predictions="results/main/ensemble/{ensemble}/test_predictions.csv",
        val_predictions="results/main/ensemble/{ensemble}/val_predictions.csv",
    log:
        "logs/ensemble/{ensemble}.log",
    benchmark:
        "benchmarks/ensemble/{ensemble}.tsv"
    conda:
        ENV
    params:
        method=lambda wildcards: ENSEMBLES[wildcards.ensemble]["method"],
        members=members,
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow ensemble --name {wildcards.ensemble:q} --method {params.method:q}"
        " --members {params.members:q} --val {input.val:q} --test {input.test:q}"
        " --evaluate {params.evaluate:q} --metrics {output.metrics:q}"
        " --val-predictions {output.val_predictions:q}"
        " --test-predictions {output.test_predictions:q} > {log:q} 2>&1"


rule ablation:
    input:
        metrics=ablation_files("metrics.json"),
        predictions=ablation_files("test_predictions.csv"),
    output:
        effects="results/ablation/effects.csv",
        combinations="results/ablation/combinations.csv",
        markdown="results/ablation/effects.md",
    log:
        "logs/ablation.log",
    benchmark:
        "benchmarks/ablation.tsv"
    conda:
        ENV
    params:
        plan=ablation_plan(),
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
    shell:
        "leukoflow ablation --plan {params.plan:q} --metrics {input.metrics:q}"
        " --predictions {input.predictions:q} --bootstrap {params.bootstrap:q}"
        " --seed {params.seed:q} --effects {output.effects:q}"
        " --combinations {output.combinations:q} --markdown {output.markdown:q}"
        " > {log:q} 2>&1"
