"""The augment stage (rule in workflow/rules/augment.smk).

`transforms`: one augmented copy of a cell (its parameters drawn from a seed, the
transformation); `offline`: the deterministic, class-balanced augmented training store.
"""
