"""maskgate: a face-mask gate for shop doors (device package; never imports TensorFlow)."""

__version__ = "0.1.0"

LABELS = ("with_mask", "without_mask", "incorrect_mask")
"""The product's one vocabulary for a face's verdict."""
