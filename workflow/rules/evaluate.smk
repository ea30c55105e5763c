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
        timing=json.dumps(config["timing"], sort_keys=True),
        tta=config["evaluate"]["tta"],
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow timing --model {input.model:q}"
            " --settings {params.settings:q} --timing {params.timing:q}"
            " --tta {params.tta:q} --out {output.timing:q} > {log:q} 2>&1"
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
        val=member_file_map("results/main/evaluate/{arch}/val_predictions.csv"),
        test=member_file_map("results/main/evaluate/{arch}/test_predictions.csv"),
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow ensemble --name {wildcards.ensemble:q} --method {params.method:q}"
        " --members {params.members:q} --val {params.val:q} --test {params.test:q}"
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
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow ablation --plan {params.plan:q} --metrics {input.metrics:q}"
        " --predictions {input.predictions:q} --evaluate {params.evaluate:q}"
        " --effects {output.effects:q}"
        " --combinations {output.combinations:q} --markdown {output.markdown:q}"
        " > {log:q} 2>&1"


# The stress test (leukoflow.evaluate.stress): each main-run model on the test subset under
# the acquisition shifts of leukoflow.evaluate.shifts, in one job per model; an ensemble's
# job combines its members' shifted probabilities.
rule stress:
    input:
        model=expand(rules.train.output.model, split="main", allow_missing=True),
        test=lambda wildcards: store_path("main", arch_size(wildcards.arch), "test"),
        metrics=expand(rules.evaluate.output.metrics, split="main", allow_missing=True),
        test_predictions=expand(
            rules.evaluate.output.test_predictions, split="main", allow_missing=True
        ),
        reference=expand(
            rules.stain_reference.output.reference, split="main", allow_missing=True
        ),
        dataset=dataset_input(),
    output:
        table="results/main/stress/{arch}/stress.csv",
        shifted="results/main/stress/{arch}/shifted_predictions.csv",
    log:
        "logs/stress/{arch}.log",
    benchmark:
        "benchmarks/stress/{arch}.tsv"
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
        stress=json.dumps(config["stress"], sort_keys=True),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow stress --model {input.model:q} --test {input.test:q}"
            " --metrics {input.metrics:q} --test-predictions {input.test_predictions:q}"
            " --reference {input.reference:q} --dataset {input.dataset:q}"
            " --settings {params.settings:q} --evaluate {params.evaluate:q}"
            " --stress {params.stress:q} --table {output.table:q}"
            " --shifted {output.shifted:q} > {log:q} 2>&1"
        )


rule stress_ensemble:
    input:
        shifted=member_files("results/main/stress/{arch}/shifted_predictions.csv"),
        metrics=rules.ensemble.output.metrics,
        test_predictions=rules.ensemble.output.test_predictions,
    output:
        table="results/main/stress/{ensemble}/stress.csv",
    log:
        "logs/stress_ensemble/{ensemble}.log",
    benchmark:
        "benchmarks/stress_ensemble/{ensemble}.tsv"
    conda:
        ENV
    params:
        members=members,
        shifted=member_file_map("results/main/stress/{arch}/shifted_predictions.csv"),
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow stress-ensemble --name {wildcards.ensemble:q} --members {params.members:q}"
        " --shifted {params.shifted:q} --metrics {input.metrics:q}"
        " --test-predictions {input.test_predictions:q} --evaluate {params.evaluate:q}"
        " --table {output.table:q} > {log:q} 2>&1"


# Cells aggregated by subject (leukoflow.evaluate.patients): each main-run model's and
# ensemble's subject-level call, fitted on the validation subjects, and the cells-needed
# curve. CPU-light: run where Snakemake runs.
localrules:
    patients,
    patients_ensemble,


rule patients:
    input:
        val=expand(
            rules.evaluate.output.val_predictions, split="main", allow_missing=True
        ),
        test=expand(
            rules.evaluate.output.test_predictions, split="main", allow_missing=True
        ),
    output:
        subjects="results/main/patients/{arch}/subjects.csv",
        curve="results/main/patients/{arch}/curve.csv",
        summary="results/main/patients/{arch}/patients.json",
    log:
        "logs/patients/{arch}.log",
    benchmark:
        "benchmarks/patients/{arch}.tsv"
    conda:
        ENV
    params:
        patients=json.dumps(config["patients"], sort_keys=True),
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow patients --name {wildcards.arch:q} --val {input.val:q}"
        " --test {input.test:q} --patients {params.patients:q}"
        " --evaluate {params.evaluate:q} --subjects {output.subjects:q}"
        " --curve {output.curve:q} --summary {output.summary:q} > {log:q} 2>&1"


rule patients_ensemble:
    input:
        val=rules.ensemble.output.val_predictions,
        test=rules.ensemble.output.test_predictions,
    output:
        subjects="results/main/patients/{ensemble}/subjects.csv",
        curve="results/main/patients/{ensemble}/curve.csv",
        summary="results/main/patients/{ensemble}/patients.json",
    log:
        "logs/patients/{ensemble}.log",
    benchmark:
        "benchmarks/patients/{ensemble}.tsv"
    conda:
        ENV
    params:
        patients=json.dumps(config["patients"], sort_keys=True),
        evaluate=json.dumps(config["evaluate"], sort_keys=True),
    shell:
        "leukoflow patients --name {wildcards.ensemble:q} --val {input.val:q}"
        " --test {input.test:q} --patients {params.patients:q}"
        " --evaluate {params.evaluate:q} --subjects {output.subjects:q}"
        " --curve {output.curve:q} --summary {output.summary:q} > {log:q} 2>&1"
