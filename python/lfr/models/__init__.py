"""Models: provisioning, and lfr's own readers and writers of model files.

Nothing downloads at import or at first use; ``lfr models fetch`` (or :func:`fetch`)
installs each pinned model into :func:`model_dir` once. The submodules:

* :mod:`lfr.models.provision`: the pinned models (:data:`MODELS`), fetching,
  checking and locating them (this package's public API, re-exported here).
* :mod:`lfr.models.dlib_resnet`: reads dlib's ResNet descriptor (``.dat``) and
  writes it as ONNX, float32 or int8.
* :mod:`lfr.models.shape_predictor`: reads dlib's 5-point shape predictor
  (``.dat``) into the native landmark predictor.
* :mod:`lfr.models.onnx_writer` and :mod:`lfr.models.protobuf`: the subset of ONNX
  and of the protobuf wire format those conversions need (no ``onnx`` package).
* :mod:`lfr.models.ort`: onnxruntime sessions configured the way lfr runs a model.

Only :mod:`~lfr.models.provision` is imported with this package; the converters
load when a model is fetched.
"""

from __future__ import annotations

from lfr.models.provision import (
    MODELS,
    ModelSpec,
    ModelStatus,
    Progress,
    Source,
    fetch,
    model_dir,
    path,
    status,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "ModelStatus",
    "Progress",
    "Source",
    "fetch",
    "model_dir",
    "path",
    "status",
]
