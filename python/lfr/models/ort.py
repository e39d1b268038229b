"""onnxruntime sessions configured the way lfr runs every model."""

from __future__ import annotations

import importlib
import os
from typing import Any

from lfr.errors import ModelError

__all__ = ["session"]


def session(path: str | os.PathLike[str], threads: int) -> Any:
    """A CPU inference session for the model at ``path``.

    ``threads`` intra-op threads, one inter-op thread, sequential execution, full
    graph optimisation, and spinning off: idle workers sleep instead of burning the
    cores that the detector and the embedder share.

    Raises:
        ModelError: onnxruntime cannot load the file.
    """
    # onnxruntime ships no type information; imported on first use, so that
    # ``import lfr`` stays fast.
    ort: Any = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own, untyped errors
        raise ModelError(f"onnxruntime cannot load {path}: {exc}") from None
