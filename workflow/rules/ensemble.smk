# Ensembles of the main run's architectures: their predictions combined and evaluated like
# one model (Table I row, plots), and bundled for `leukoflow predict`.


localrules:
    bundle_ensemble,


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


rule bundle_ensemble:
    input:
        bundles=member_files("results/models/{arch}"),
        metrics=rules.ensemble.output.metrics,
        reference=expand(rules.stain_reference.output.reference, split="main"),
        split=rules.split.output.split,
    output:
        bundle=directory("results/models/{ensemble}"),
    log:
        "logs/bundle/{ensemble}.log",
    conda:
        ENV
    params:
        members=members,
        settings=get_ensemble_settings,
        config_hash=get_ensemble_hash,
        data=json.dumps(
            {"dataset": config["dataset"], "split": config["split"]}, sort_keys=True
        ),
        backend=BACKEND,
    shell:
        keras_shell(
            "leukoflow bundle-ensemble --name {wildcards.ensemble:q}"
            " --members {params.members:q} --models {input.bundles:q}"
            " --settings {params.settings:q} --metrics {input.metrics:q}"
            " --reference {input.reference:q} --config-hash {params.config_hash:q}"
            " --split {input.split:q} --data {params.data:q}"
            " --out {output.bundle:q} > {log:q} 2>&1"
        )
