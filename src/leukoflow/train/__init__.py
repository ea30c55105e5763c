"""The train stage (rules in workflow/rules/train.smk).

The training job, its schedule, checkpoint, data-parallel replicas, loader and live log.
"""
