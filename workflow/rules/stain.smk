# Stain normalisation reference (training subjects only) and the image stores, per data
# variant (`{split}`: main, fold{k}, or an ablation's ablation/data/{split}-{stain}).
# Both are cacheable between workflows (`--cache`); Snakemake forbids `benchmark:` on
# cacheable rules, so their logs record the wall time instead.


rule stain_reference:
    input:
        split=get_split_table,
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
        stain=get_stain_settings,
        max_pixels=config["ingest"]["max_pixels"],
    shell:
        "leukoflow stain-reference {input.split:q} --dataset {input.dataset:q}"
        " --split-id {wildcards.split:q} --stain {params.stain:q}"
        " --max-pixels {params.max_pixels:q}"
        " --out {output.reference:q} --spread {output.spread:q}"
        " --examples {output.examples:q} > {log:q} 2>&1"


rule stores:
    input:
        split=get_split_table,
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
    threads: ALL_CORES
    resources:
        mem_mb=attempt_scaled(2000),
    params:
        max_pixels=config["ingest"]["max_pixels"],
    shell:
        "leukoflow stores {input.split:q} --dataset {input.dataset:q}"
        " --reference {input.reference:q} --split-id {wildcards.split:q}"
        " --subset {wildcards.subset:q} --size {wildcards.size:q}"
        " --max-pixels {params.max_pixels:q}"
        " --out {output.images:q} --index {output.index:q}"
        " --threads {threads} > {log:q} 2>&1"
