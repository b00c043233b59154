"""A pretrained face network for the second opinion: dlib's ResNet face descriptor, as a Keras model.

The weights are face-api.js's port of dlib's ``dlib_face_recognition_resnet_model_v1`` (29
convolutions, 5.6 M parameters, 150x150 RGB; Davis King released the weights into the public
domain, trained on about 3 million faces), as shipped in the npm package ``@vladmandic/face-api``
(MIT). The npm registry serves it at a pinned version, checked against its sha256; the build reads
the tarball directly (``package/model/face_recognition_model*``), nothing is unpacked.

:func:`trunk` rebuilds the forward pass with ordinary Keras layers (each convolution's affine
"scale" layer folded into it; the downsampling blocks' channel doubling as zero padding), from raw
0..255 RGB to the 256 globally pooled features, so the whole second-opinion classifier converts to
one full-integer TFLite model like the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.errors import ModelError
from maskgate.model_store import sha256_file

log = logging.getLogger(__name__)

NPM_URL = "https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz"
NPM_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
WEIGHTS = "package/model/face_recognition_model"
MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
"""face-api.js's per-channel mean, subtracted before scaling by 1/255."""
SIDE = 150
LICENCE = ("Second opinion: a head trained by maskgate-convert on the pooled features of dlib's ResNet face "
           "descriptor (dlib_face_recognition_resnet_model_v1, weights released into the public domain by "
           "Davis King), as ported to TensorFlow.js in the npm package @vladmandic/face-api 1.7.15 (MIT).")


def fetch_tarball(dest_dir: Path, url: str = NPM_URL) -> Path:
    """The face-api npm tarball in ``dest_dir``, downloaded once and checked against :data:`NPM_SHA256`."""
    dest = dest_dir / url.rsplit("/", 1)[-1]
    if dest.is_file() and sha256_file(dest) == NPM_SHA256:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except OSError as e:
        raise ModelError(f"cannot download {url}: {e}; download it elsewhere and pass --weights PATH") from e
    got = hashlib.sha256(data).hexdigest()
    if got != NPM_SHA256:
        raise ModelError(f"{url}: sha256 {got} is not the pinned {NPM_SHA256}")
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


def load_weights(tarball: Path) -> dict[str, np.ndarray]:
    """The descriptor's weights by name, dequantized, read from the npm tarball."""
    if sha256_file(tarball) != NPM_SHA256:
        raise ModelError(f"{tarball}: not the pinned face-api 1.7.15 tarball (sha256 {NPM_SHA256})")
    with tarfile.open(tarball, "r:gz") as tf:
        def read(name: str) -> bytes:
            f = tf.extractfile(name)
            if f is None:
                raise ModelError(f"{tarball}: {name} missing")
            return f.read()

        manifest = json.loads(read(WEIGHTS + "-weights_manifest.json"))
        out: dict[str, np.ndarray] = {}
        for group in manifest:
            buf = b"".join(read("package/model/" + p) for p in group["paths"])
            off = 0
            for w in group["weights"]:
                n = int(np.prod(w["shape"]))
                q = w.get("quantization")
                if q:
                    a = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * q["scale"] + q["min"]
                    off += n
                else:
                    a = np.frombuffer(buf, np.float32, n, off).copy()
                    off += 4 * n
                out[w["name"]] = a.reshape(w["shape"])
            if off != len(buf):
                raise ModelError(f"{tarball}: weights manifest does not match the weights ({off} != {len(buf)} bytes)")
    return out


BLOCKS = ("conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2", "conv64_3", "conv128_down",
          "conv128_1", "conv128_2", "conv256_down", "conv256_1", "conv256_2", "conv256_down_out")
"""The residual blocks after the stem, in order (``_down`` blocks halve the resolution)."""


def trunk_parts(weights: dict[str, np.ndarray], tail_blocks: int = 0) -> tuple[Any, Any]:
    """Two Keras models whose composition is :func:`trunk`: the front, and a tail of the last
    ``tail_blocks`` residual blocks plus the pooling (``tail_blocks`` 0: the pooling only).

    The build retrains the tail on face crops and keeps the front frozen, so the front's
    activations are computed once per crop."""
    import keras
    from keras import layers

    if not 0 <= tail_blocks <= len(BLOCKS):
        raise ValueError(f"tail_blocks must be 0..{len(BLOCKS)} (got {tail_blocks})")

    def conv(x: Any, p: str, stride: int, relu: bool, padding: str = "same") -> Any:
        w, b = weights[p + "/conv/filters"], weights[p + "/conv/bias"]
        s, t = weights[p + "/scale/weights"], weights[p + "/scale/biases"]
        layer = layers.Conv2D(w.shape[-1], w.shape[:2], strides=stride, padding=padding,
                              activation="relu" if relu else None, name=p.replace("/", "_"))
        y = layer(x)
        layer.set_weights([w * s, b * s + t])
        return y

    def residual(x: Any, p: str) -> Any:
        o = conv(conv(x, p + "/conv1", 1, True), p + "/conv2", 1, False)
        return layers.ReLU(name=p + "_out")(layers.Add()([o, x]))

    def residual_down(x: Any, p: str) -> Any:
        o = conv(conv(x, p + "/conv1", 2, True, "valid"), p + "/conv2", 1, False)
        pooled = layers.AveragePooling2D(2, 2, padding="valid")(x)
        if pooled.shape[1] != o.shape[1]:
            o = layers.ZeroPadding2D(((0, 1), (0, 1)))(o)
        if pooled.shape[3] != o.shape[3]:
            extra = int(o.shape[3] - pooled.shape[3])
            pooled = layers.Lambda(lambda t: keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [0, extra]]),
                                   name=p.replace("/", "_") + "_widen")(pooled)
        return layers.ReLU(name=p + "_out")(layers.Add()([o, pooled]))

    def blocks(x: Any, names: tuple[str, ...]) -> Any:
        for p in names:
            x = residual_down(x, p) if p.endswith(("_down", "_down_out")) else residual(x, p)
        return x

    cut = len(BLOCKS) - tail_blocks
    inp = keras.Input((SIDE, SIDE, 3))
    x = layers.Normalization(mean=MEAN_RGB, variance=np.full(3, 255.0 ** 2, np.float32))(inp)
    x = conv(x, "conv32_down", 2, True, "valid")
    x = layers.MaxPooling2D(3, 2, padding="valid")(x)
    front = keras.Model(inp, blocks(x, BLOCKS[:cut]), name="dlib_resnet_front")
    t_in = keras.Input(front.output.shape[1:])
    tail = keras.Model(t_in, layers.GlobalAveragePooling2D()(blocks(t_in, BLOCKS[cut:])), name="dlib_resnet_tail")
    return front, tail


def trunk(weights: dict[str, np.ndarray]) -> Any:
    """Keras model: (150, 150, 3) RGB 0..255 -> 256 pooled features (ReLU outputs, averaged)."""
    import keras

    front, tail = trunk_parts(weights)
    inp = keras.Input((SIDE, SIDE, 3))
    return keras.Model(inp, tail(front(inp)), name="dlib_resnet_trunk")


def descriptor(weights: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor from the pooled features (for checking the port)."""
    return features @ weights["fc"]

