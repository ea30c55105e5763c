"""leukoflow: train and compare CNNs telling leukemic lymphoblasts (ALL) from normal cells."""

__version__ = "0.1.0"

CLASS_NAMES = ("hem", "all")  # index = label: 0 = hem (normal), 1 = all (the positive class)
POSITIVE_CLASS = "all"
