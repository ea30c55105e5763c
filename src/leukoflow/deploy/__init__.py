"""The deploy stage (rules in workflow/rules/deploy.smk).

Model and ensemble bundles, their ONNX files and model cards, and `leukoflow predict`.
"""
