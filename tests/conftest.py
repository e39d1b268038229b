"""Shared fixtures: the face-data location and reference computations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from lfr import models
from lfr.errors import ModelError

# Matcher calls allocate thread pools and large buffers on first use: timing-based
# deadlines would only measure the machine.
settings.register_profile("lfr", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lfr"))

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuses a release build: the forensic tests need the scanner compiled in."""
    from lfr import _core

    absent = [
        name
        for name in ("scan_memory", "scan_process", "read_bandwidth", "peak_flops")
        if not hasattr(_core, name)
    ]
    if absent:
        raise pytest.UsageError(
            f"lfr._core lacks {', '.join(absent)}: the test suite needs the build "
            "with the bench-probes and forensic-scan cargo features (bash "
            "scripts/setup.sh); a release wheel is smoke-tested by "
            "scripts/test-pythons.sh instead"
        )


def data_root() -> Path:
    """The face-data directory: ``LFR_DATA_DIR`` or ``../shared/data``."""
    configured = os.environ.get("LFR_DATA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """``lfw-dev`` under the data directory; skips where it is absent."""
    path = data_root() / "lfw-dev"
    if not (path / "identities").is_dir():
        pytest.skip(f"face data not found at {path} (set LFR_DATA_DIR)")
    return path


def installed_model(name: str) -> Path:
    """``lfr.models.path(name)``; skips the test, with the fix, where it is missing."""
    try:
        return models.path(name)
    except ModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    """The installed YuNet detector; skips without it."""
    return installed_model("yunet")


@pytest.fixture(scope="session")
def embedder_path() -> Path:
    """The default embedder for this CPU (and the shape predictor); skips without."""
    from lfr.embed import default_model

    installed_model("dlib-shape5")
    return installed_model(default_model())
