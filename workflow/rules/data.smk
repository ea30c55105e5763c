# Dataset: synthetic generation, ingest (manifest + quarantine), the subject-disjoint split and
# the ablation's image-level random split.


rule synth:
    output:
        dataset=directory("results/data/synthetic"),
    log:
        "logs/synth.log",
    benchmark:
        "benchmarks/synth.tsv"
    conda:
        ENV
    threads: ALL_CORES
    params:
        synthetic=json.dumps(config["dataset"]["synthetic"], sort_keys=True),
    shell:
        "leukoflow synth {output.dataset:q} --synthetic {params.synthetic:q}"
        " --threads {threads} > {log:q} 2>&1"


rule ingest:
    input:
        dataset=dataset_input(),
    output:
        manifest="results/ingest/manifest.csv",
        quarantine="results/ingest/quarantine.csv",
    log:
        "logs/ingest.log",
    benchmark:
        "benchmarks/ingest.tsv"
    conda:
        ENV
    threads: ALL_CORES
    params:
        ingest=json.dumps(config["ingest"], sort_keys=True),
    shell:
        "leukoflow ingest {input.dataset:q} --out {output.manifest:q}"
        " --quarantine {output.quarantine:q} --ingest {params.ingest:q}"
        " --threads {threads} > {log:q} 2>&1"


rule split:
    input:
        manifest=rules.ingest.output.manifest,
        dataset=dataset_input(),
    output:
        split="results/split/split.csv",
    log:
        "logs/split.log",
    conda:
        ENV
    params:
        split=json.dumps(config["split"], sort_keys=True),
        cv=json.dumps(config["cv"], sort_keys=True),
        evaluate=json.dumps(
            {"min_subjects_per_class": config["evaluate"]["min_subjects_per_class"]}
        ),
    shell:
        "leukoflow split {input.manifest:q} --out {output.split:q}"
        " --split {params.split:q} --cv {params.cv:q} --evaluate {params.evaluate:q}"
        " --dataset {input.dataset:q} > {log:q} 2>&1"


rule split_random:
    input:
        split=rules.split.output.split,
    output:
        split="results/split/random.csv",
    log:
        "logs/split_random.log",
    conda:
        ENV
    params:
        split=json.dumps(config["split"], sort_keys=True),
    shell:
        "leukoflow split-random {input.split:q} --out {output.split:q}"
        " --split {params.split:q} > {log:q} 2>&1"
