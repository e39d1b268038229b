"""dlib's ``.dat`` model files from the installed ``face_recognition_models``.

The package's ``__init__`` imports ``pkg_resources``, which Python 3.12+ venvs no
longer carry (setuptools is not installed there) and newer setuptools drop; the files
are found through the import system's spec instead, without running that module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

RESNET = "dlib_face_recognition_resnet_model_v1.dat"
FIVE_POINT = "shape_predictor_5_face_landmarks.dat"


def dat_path(name: str) -> Path | None:
    """The installed file, or None where ``face_recognition_models`` is absent."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    return None


def require_dat(name: str) -> Path:
    """The installed file; skips the test, saying why, where it is absent."""
    path = dat_path(name)
    if path is None:
        pytest.skip(
            f"face_recognition_models (which holds {name}) is not installed",
            allow_module_level=True,
        )
    return path
