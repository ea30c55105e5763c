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
        seed=config["augment"]["seed"],
        balance="--balance" if config["augment"]["balance"] else "--no-balance",
        copies=config["augment"]["copies_per_image"],
        rotation="--rotation" if config["augment"]["rotation"] else "--no-rotation",
        flip="--flip" if config["augment"]["flip"] else "--no-flip",
        noise=config["augment"]["noise_std"],
        brightness=config["augment"]["brightness"],
        contrast=config["augment"]["contrast"],
        stain_jitter=config["augment"]["stain_jitter"],
        subjects=get_subject_disjoint,
    shell:
        "leukoflow augment {input.store:q} --out {output.images:q}"
        " --index {output.index:q} --examples {output.examples:q}"
        " --seed {params.seed:q} {params.balance:q}"
        " --copies-per-image {params.copies:q} {params.rotation:q} {params.flip:q}"
        " --noise-std {params.noise:q} --brightness {params.brightness:q}"
        " --contrast {params.contrast:q} --stain-jitter {params.stain_jitter:q}"
        " {params.subjects:q} --threads {threads} > {log:q} 2>&1"
