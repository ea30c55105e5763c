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
        subjects=config["dataset"]["synthetic"]["subjects"],
        images=config["dataset"]["synthetic"]["images_per_subject"],
        size=config["dataset"]["synthetic"]["size"],
        seed=config["dataset"]["synthetic"]["seed"],
    shell:
        "leukoflow synth {output.dataset:q} --subjects {params.subjects:q}"
        " --images-per-subject {params.images:q} --size {params.size:q}"
        " --seed {params.seed:q} --threads {threads} > {log:q} 2>&1"


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
        on_bad=config["ingest"]["on_bad"],
    shell:
        "leukoflow ingest {input.dataset:q} --out {output.manifest:q}"
        " --quarantine {output.quarantine:q} --on-bad {params.on_bad:q}"
        " --threads {threads} > {log:q} 2>&1"


rule split:
    input:
        manifest=rules.ingest.output.manifest,
    output:
        split="results/split/split.csv",
    log:
        "logs/split.log",
    conda:
        ENV
    params:
        mode=config["split"]["mode"],
        seed=config["split"]["seed"],
        val=config["split"]["val_fraction"],
        test=config["split"]["test_fraction"],
        folds=CV_FOLDS,
        train_folds=config["split"]["train_folds"],
        val_folds=config["split"]["val_folds"],
        test_folds=config["split"]["test_folds"],
    shell:
        "leukoflow split {input.manifest:q} --out {output.split:q} --mode {params.mode:q}"
        " --seed {params.seed:q} --val-fraction {params.val:q}"
        " --test-fraction {params.test:q} --k {params.folds:q}"
        " --train-folds {params.train_folds:q} --val-folds {params.val_folds:q}"
        " --test-folds {params.test_folds:q} > {log:q} 2>&1"


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
        seed=config["split"]["seed"],
    shell:
        "leukoflow split-random {input.split:q} --out {output.split:q}"
        " --seed {params.seed:q} > {log:q} 2>&1"
