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
    threads: max(1, workflow.cores)
    params:
        seed=config["augment"]["seed"],
        balance="--balance" if config["augment"]["balance"] else "--no-balance",
        copies=config["augment"]["copies_per_image"],
        rotation="--rotation" if config["augment"]["rotation"] else "--no-rotation",
        flip="--flip" if config["augment"]["flip"] else "--no-flip",
        noise=config["augment"]["noise_std"],
        brightness=config["augment"]["brightness"],
        contrast=config["augment"]["contrast"],
    shell:
        "leukoflow augment {input.store} --out {output.images} --examples {output.examples}"
        " --seed {params.seed} {params.balance} --copies-per-image {params.copies}"
        " {params.rotation} {params.flip} --noise-std {params.noise}"
        " --brightness {params.brightness} --contrast {params.contrast}"
        " --threads {threads} > {log} 2>&1"
