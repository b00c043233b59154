"""The classifier architectures maskgate-convert can train.

- ``seed``: the reference CNN from the product brief, exactly: grayscale 100x100, Conv 200 3x3
  ReLU, MaxPool 2x2, Conv 100 3x3 ReLU, MaxPool 2x2, Flatten, Dense 50 ReLU, Dense 2 softmax;
  Adam, categorical cross-entropy; two classes (with / without mask).
- ``seed-rgb128``: the same layers on 128x128 RGB.
- ``default``: maskgate's design. 64x64 RGB, a 24-filter stem convolution and six depthwise-separable
  blocks (BatchNorm with momentum 0.9, so its statistics settle within a short training budget,
  folded at conversion; ReLU), global average pooling, one dense softmax over
  ``with_mask, without_mask, incorrect_mask, no_face``. About 2.9 M multiply-adds and 96 k
  parameters: a 141 KB int8 file (the budget is 150 KB), about 60x faster per face than ``seed``
  (the target is 50x). A wider and deeper variant (233 k parameters, 7.9 M multiply-adds; not kept
  in the repository) scored higher but broke both budgets (306 KB, 35x); see
  ``reports/model-experiments.md``. Every op (CONV_2D, DEPTHWISE_CONV_2D, MEAN, FULLY_CONNECTED, SOFTMAX, MUL/ADD from
  the input rescale) is integer-only and on the Edge TPU's supported list.
- ``mobilenetv2``: MobileNetV2 (alpha 1.0, 224x224 RGB) with a 2-class head, like the most popular
  open mask detector's classifier; written for speed comparisons (architecture only).

Every model takes raw 0..255 pixels and rescales inside, so the int8 input is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maskgate.crop import InputSpec

from .dataset import NO_FACE

LABELS_2 = ("with_mask", "without_mask")
LABELS_4 = ("with_mask", "without_mask", "incorrect_mask", NO_FACE)


@dataclass(frozen=True)
class Arch:
    name: str
    spec: InputSpec
    labels: tuple[str, ...]
    learning_rate: float
    augment: bool


ARCHS = {
    "seed": Arch("seed", InputSpec(100, 100, "gray"), LABELS_2, 1e-3, False),
    "seed-rgb128": Arch("seed-rgb128", InputSpec(128, 128, "rgb"), LABELS_2, 1e-3, False),
    "default": Arch("default", InputSpec(64, 64, "rgb"), LABELS_4, 2e-3, True),
    "mobilenetv2": Arch("mobilenetv2", InputSpec(224, 224, "rgb"), LABELS_2, 1e-3, False),
}


# (pointwise filters, depthwise stride) of each separable block of ``default``, after a 24-filter stem
DEFAULT_STEM = 24
DEFAULT_BLOCKS = ((48, 2), (64, 2), (96, 1), (128, 2), (160, 1), (256, 1))


def build_model(arch: Arch) -> Any:
    import keras
    from keras import layers

    inp = keras.Input(shape=arch.spec.shape, name="face")
    if arch.name in ("seed", "seed-rgb128"):
        x = layers.Rescaling(1.0 / 255.0)(inp)
        x = layers.Conv2D(200, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(100, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(50, activation="relu")(x)
        out = layers.Dense(len(arch.labels), activation="softmax")(x)
    elif arch.name == "default":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
        x = layers.Conv2D(DEFAULT_STEM, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        for filters, stride in DEFAULT_BLOCKS:
            x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
            x = layers.Conv2D(filters, 1, use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.2)(x)
        out = layers.Dense(len(arch.labels), activation="softmax")(x)
    elif arch.name == "mobilenetv2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
        base = keras.applications.MobileNetV2(input_shape=arch.spec.shape, alpha=1.0, include_top=False,
                                              weights=None)
        x = base(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(128, activation="relu")(x)
        out = layers.Dense(len(arch.labels), activation="softmax")(x)
    else:
        raise ValueError(f"unknown architecture {arch.name!r}")
    model = keras.Model(inp, out, name=arch.name.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(arch.learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def multiply_adds(model: Any) -> int:
    """Multiply-adds of one forward pass (conv, depthwise and dense layers)."""
    from keras import layers

    total = 0
    for layer in model.layers:
        sub = getattr(layer, "layers", None)
        if sub:
            total += multiply_adds(layer)
            continue
        if isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
