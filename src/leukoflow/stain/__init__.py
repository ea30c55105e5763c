"""The stain stage (rules in workflow/rules/stain.smk).

The normalisation methods, the reference fitted on training subjects, and the
stain-normalised image stores (`prepare_image`, the one preparation of a cell).
"""
