"""The augment stage (rule in workflow/rules/augment.smk).

Deterministic, class-balanced offline augmentation of a training store.
"""
