# The ablation matrix: the image-level random split, and the table of each factor's effect.
# Its combinations train and evaluate through the rules of train.smk and evaluate.smk, in
# runs `ablation/{combination}` on data variants `ablation/data/{split}-{stain}`
# (leukoflow.ablation; common.smk maps a run to its data and settings).


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


rule ablation:
    input:
        metrics=ablation_files("metrics.json"),
        predictions=ablation_files("test_predictions.csv"),
    output:
        effects="results/ablation/effects.csv",
        combinations="results/ablation/combinations.csv",
        markdown="results/ablation/effects.md",
    log:
        "logs/ablation.log",
    benchmark:
        "benchmarks/ablation.tsv"
    conda:
        ENV
    params:
        plan=ablation_plan(),
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["seed"],
    shell:
        "leukoflow ablation --plan {params.plan:q} --metrics {input.metrics:q}"
        " --predictions {input.predictions:q} --bootstrap {params.bootstrap:q}"
        " --seed {params.seed:q} --effects {output.effects:q}"
        " --combinations {output.combinations:q} --markdown {output.markdown:q}"
        " > {log:q} 2>&1"
