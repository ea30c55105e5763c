# Stain normalisation reference (training subjects only) and the image stores.
# Both are cacheable between workflows (`--cache`); Snakemake forbids `benchmark:` on
# cacheable rules, so their logs record the wall time instead.


rule stain_reference:
    input:
        split=rules.split.output.split,
        dataset=dataset_input(),
    output:
        reference="results/{split}/stain/reference.json",
        spread="results/{split}/stain/spread.json",
        examples="results/{split}/stain/examples.png",
    log:
        "logs/stain_reference/{split}.log",
    cache: "omit-software"
    conda:
        ENV
    params:
        method=config["stain"]["method"],
        images=config["stain"]["reference_images"],
        image=config["stain"]["reference_image"] or "",
        seed=config["stain"]["seed"],
    shell:
        "leukoflow stain-reference {input.split} --dataset {input.dataset}"
        " --split-id {wildcards.split} --method {params.method}"
        " --images {params.images} --image '{params.image}' --seed {params.seed}"
        " --out {output.reference} --spread {output.spread}"
        " --examples {output.examples} > {log} 2>&1"


rule stores:
    input:
        split=rules.split.output.split,
        reference=rules.stain_reference.output.reference,
        dataset=dataset_input(),
    output:
        multiext(
            "results/{split}/stores/{size}px/{subset}", images=".npy", index=".csv"
        ),
    log:
        "logs/stores/{split}/{size}px/{subset}.log",
    cache: "omit-software"
    conda:
        ENV
    threads: max(1, workflow.cores)
    resources:
        mem_mb=attempt_scaled(2000),
    shell:
        "leukoflow stores {input.split} --dataset {input.dataset}"
        " --reference {input.reference} --split-id {wildcards.split}"
        " --subset {wildcards.subset} --size {wildcards.size}"
        " --out {output.images} --threads {threads} > {log} 2>&1"
