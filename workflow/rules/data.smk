# Dataset: synthetic generation, ingest (manifest + quarantine), subject-disjoint split.


rule synth:
    output:
        dataset=directory("results/data/synthetic"),
    log:
        "logs/synth.log",
    benchmark:
        "benchmarks/synth.tsv"
    conda:
        ENV
    threads: max(1, workflow.cores)
    params:
        subjects=config["dataset"]["synthetic"]["subjects"],
        images=config["dataset"]["synthetic"]["images_per_subject"],
        size=config["dataset"]["synthetic"]["size"],
        seed=config["dataset"]["synthetic"]["seed"],
    shell:
        "leukoflow synth {output.dataset} --subjects {params.subjects}"
        " --images-per-subject {params.images} --size {params.size} --seed {params.seed}"
        " --threads {threads} > {log} 2>&1"


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
    threads: max(1, workflow.cores)
    params:
        on_bad=config["ingest"]["on_bad"],
    shell:
        "leukoflow ingest {input.dataset} --out {output.manifest}"
        " --quarantine {output.quarantine} --on-bad {params.on_bad}"
        " --threads {threads} > {log} 2>&1"


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
        train_folds=" ".join(config["split"]["train_folds"]),
        val_folds=" ".join(config["split"]["val_folds"]),
        test_folds=" ".join(config["split"]["test_folds"]),
    shell:
        "leukoflow split {input.manifest} --out {output.split} --mode {params.mode}"
        " --seed {params.seed} --val-fraction {params.val} --test-fraction {params.test}"
        " --k {params.folds} --train-folds {params.train_folds}"
        " --val-folds {params.val_folds} --test-folds {params.test_folds} > {log} 2>&1"
