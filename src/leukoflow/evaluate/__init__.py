"""The evaluate stage (rules in workflow/rules/evaluate.smk).

Metrics, calibration, referral, ensembles, timing, saliency and the ablation. Importing
this package loads no numpy (the Snakefile imports `ablation`).
"""
