"""The TFLite runtime: ai-edge-litert, else tflite-runtime; never TensorFlow.

An optional Coral Edge TPU delegate (``libedgetpu.so.1``) is tried when asked for, with a logged
fall back to the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError, RuntimeUnavailableError

log = logging.getLogger(__name__)

EDGETPU_LIB = "libedgetpu.so.1"


def _modules() -> tuple[str, Any]:
    try:
        from ai_edge_litert import interpreter as litert
        return "ai-edge-litert", litert
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tfl
        return "tflite-runtime", tfl
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "no TFLite runtime: install ai-edge-litert (`pip install ai-edge-litert`) or "
            "tflite-runtime (needs numpy<2)") from exc


@dataclass
class LoadedInterpreter:
    interpreter: Any
    runtime: str
    delegate: str
    path: Path


def load_interpreter(model: Path, threads: int = 1, delegate: str = "cpu",
                     edgetpu_model: Path | None = None, xnnpack: bool = True) -> LoadedInterpreter:
    """Build one interpreter for ``model`` (once, not per frame) and allocate its tensors.

    ``xnnpack=False`` runs TFLite's own kernels instead of the default XNNPACK delegate, which keeps
    a second, repacked copy of the weights: for a large model asked rarely, memory over speed."""
    name, mod = _modules()
    if delegate not in ("cpu", "edgetpu"):
        raise ModelError(f"delegate must be 'cpu' or 'edgetpu' (got {delegate!r})")
    if delegate == "edgetpu":
        if edgetpu_model is None:
            log.warning("Edge TPU requested but the bundle has no _edgetpu.tflite model; using CPU")
        else:
            try:
                dlg = mod.load_delegate(EDGETPU_LIB)
                interp = mod.Interpreter(model_path=str(edgetpu_model), experimental_delegates=[dlg])
                interp.allocate_tensors()
                log.info("runtime %s with Edge TPU delegate (%s)", name, edgetpu_model)
                return LoadedInterpreter(interp, name, "edgetpu", edgetpu_model)
            except (ValueError, OSError, RuntimeError) as exc:
                log.warning("Edge TPU delegate unavailable (%s); falling back to CPU", exc)
    try:
        kw: dict[str, Any] = {}
        if not xnnpack:
            kw["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interp = mod.Interpreter(model_path=str(model), num_threads=threads, **kw)
        interp.allocate_tensors()
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{model}: the TFLite runtime refused the model ({exc})") from exc
    log.info("runtime %s on CPU%s, %d thread(s) (%s)", name, "" if xnnpack else " without XNNPACK", threads, model)
    return LoadedInterpreter(interp, name, "cpu", model)
