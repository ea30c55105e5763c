# Class-balanced, deterministic offline augmentation of the training store.


rule augment:
    input:
        store="results/{split}/stores/{size}px/train.npy",
    output:
        multiext(
            "results/{split}/stores/{size}px/train_aug", images=".npy", index=".csv"
        ),
        examples="results/{split}/stores/{size}px/train_aug_examples.png",
    log:
        "logs/augment/{split}/{size}px.log",
    benchmark:
        "benchmarks/augment/{split}/{size}px.tsv"
    conda:
        ENV
    threads: ALL_CORES
    params:
        augment=json.dumps(config["augment"], sort_keys=True),
        subjects=get_subject_disjoint,
    shell:
        "leukoflow augment {input.store:q} --out {output.images:q}"
        " --index {output.index:q} --examples {output.examples:q}"
        " --augment {params.augment:q} {params.subjects:q}"
        " --threads {threads} > {log:q} 2>&1"
