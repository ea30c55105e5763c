"""`leukoflow bench`: what each step of the workflow costs, against a baseline in the same run.

One module per kind (`ingest`, `stain`, `loader`, `augment`, `inference`, `predict`, `plan`,
`dvc`, `prepare`), each with `run(**options)` returning a flat dict of figures; their
options, and running one or all of them, in `kinds`; what they share (the machine line,
timers, the synthetic dataset, the tables) in `common`. `training` holds the training-step
rate the loader is compared with; `scaling` the subsets, fits and plot of `prepare`.
"""
