"""The data stage (rules in workflow/rules/data.smk).

The one image reader, ingest, the subject-disjoint and random splits, and the one generator
of synthetic cells.
"""
