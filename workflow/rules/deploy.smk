# Bundles: each model and each ensemble packaged for `leukoflow predict` (Keras and ONNX
# files, bundle.json, the model card).


localrules:
    bundle_ensemble,


rule bundle:
    input:
        model=expand(rules.train.output.model, split="main", allow_missing=True),
        metrics=expand(rules.evaluate.output.metrics, split="main", allow_missing=True),
        reference=expand(
            rules.stain_reference.output.reference, split="main", allow_missing=True
        ),
        split=rules.split.output.split,
        patients="results/main/patients/{arch}/patients.json",
        stress="results/main/stress/{arch}/stress.csv" if STRESS else [],
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
            "leukoflow bundle --refer-model --model {input.model:q} --metrics {input.metrics:q}"
            " --reference {input.reference:q} --settings {params.settings:q}"
            " --config-hash {params.config_hash:q} --split {input.split:q}"
            " --data {params.data:q} --patients {input.patients:q}"
            " --stress {input.stress:q} --out {output.bundle:q} > {log:q} 2>&1"
        )


rule bundle_ensemble:
    input:
        bundles=member_files("results/models/{arch}"),
        metrics=rules.ensemble.output.metrics,
        reference=expand(rules.stain_reference.output.reference, split="main"),
        split=rules.split.output.split,
        patients="results/main/patients/{ensemble}/patients.json",
        stress="results/main/stress/{ensemble}/stress.csv" if STRESS else [],
    output:
        bundle=directory("results/models/{ensemble}"),
    log:
        "logs/bundle/{ensemble}.log",
    conda:
        ENV
    params:
        models=member_file_map("results/models/{arch}"),
        settings=get_ensemble_settings,
        config_hash=get_ensemble_hash,
        data=json.dumps(
            {"dataset": config["dataset"], "split": config["split"]}, sort_keys=True
        ),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow bundle-ensemble --name {wildcards.ensemble:q}"
            " --models {params.models:q}"
            " --settings {params.settings:q} --metrics {input.metrics:q}"
            " --reference {input.reference:q} --config-hash {params.config_hash:q}"
            " --split {input.split:q} --data {params.data:q}"
            " --patients {input.patients:q} --stress {input.stress:q}"
            " --out {output.bundle:q} > {log:q} 2>&1"
        )
