"""Full-integer int8 conversion and the checks the bundle depends on."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Operations the Edge TPU runs, from Coral's "TensorFlow models on the Edge TPU" page,
# section "Supported operations" (https://coral.ai/docs/edgetpu/models-intro/#supported-operations),
# for Edge TPU Compiler 16.0 / runtime 14+. Names as TFLite's builtin operator codes.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
EDGETPU_OPS_SOURCE = ("Coral, 'TensorFlow models on the Edge TPU', Supported operations "
                      "(Edge TPU Compiler 16.0), https://coral.ai/docs/edgetpu/models-intro/")


def to_int8(model: Any, representative: np.ndarray) -> bytes:
    """Convert a Keras model to a full-integer int8 TFLite flatbuffer (int8 in, int8 out)."""
    import tensorflow as tf

    def rep() -> Iterator[list[np.ndarray]]:
        for x in representative:
            yield [x[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def to_float(model: Any) -> bytes:
    import tensorflow as tf

    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _interpreter(path: Path) -> Any:
    """An interpreter without the default XNNPACK delegate, so the op list is the model's own."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def op_names(path: Path) -> list[str]:
    it = _interpreter(path)
    return sorted({d["op_name"] for d in it._get_ops_details()})


def check_integer_model(path: Path) -> dict[str, Any]:
    """Every tensor integer, every op on the Edge TPU list; returns the findings for the manifest."""
    it = _interpreter(path)
    float_tensors = [d["name"] for d in it.get_tensor_details()
                     if np.dtype(d["dtype"]).kind == "f"]
    ops = sorted({d["op_name"] for d in it._get_ops_details()})
    not_tpu = [o for o in ops if o not in EDGETPU_OPS]
    return {"all_integer": not float_tensors, "float_tensors": float_tensors, "ops": ops,
            "ops_not_on_edgetpu_list": not_tpu, "edgetpu_ops_source": EDGETPU_OPS_SOURCE}


def compile_edgetpu(path: Path) -> dict[str, Any]:
    """Run ``edgetpu_compiler`` when it is on PATH; say so plainly when it is not."""
    exe = shutil.which("edgetpu_compiler")
    if not exe:
        return {"compiled": False, "reason": "not compiled: edgetpu_compiler not on PATH"}
    res = subprocess.run([exe, "-s", "-o", str(path.parent), str(path)], capture_output=True, text=True,
                         check=False)
    out = path.with_name(path.stem + "_edgetpu.tflite")
    if res.returncode != 0 or not out.exists():
        return {"compiled": False, "reason": f"edgetpu_compiler failed: {res.stderr.strip()[-500:]}"}
    return {"compiled": True, "file": out.name, "log": res.stdout[-2000:]}
