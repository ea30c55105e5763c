# leukoflow: train and compare CNNs telling ALL lymphoblasts from normal cells (C-NMC 2019).
#   snakemake --cores all --resources gpu=1                          # config/demo.yaml
#   snakemake --cores all --resources gpu=1 --configfile config/config.yaml


# The embedded default, unless a config file is given with --configfile (which then replaces
# it rather than being merged into it, so its `architectures` are exactly the ones run).
if not workflow.overwrite_configfiles:

    configfile: "config/demo.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stain.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
