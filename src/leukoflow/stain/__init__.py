"""The stain stage (rules in workflow/rules/stain.smk).

The normalisation methods (one entry each in `registry`, one module each: `reinhard`,
`macenko`; what they share in `normalize`), the reference fitted on training subjects
(`reference`), and the stain-normalised image stores (`stores`: `prepare_image`, the one
preparation of a cell).
"""
