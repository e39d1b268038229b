"""onnxruntime writes nothing under the user's home once lfr is imported."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# onnxruntime writes nothing where one of these says it runs in CI, which would leave
# the negative control below nothing to see: they are removed from the child's
# environment (the list is the one compiled into onnxruntime 1.32).
CI_VARIABLES = frozenset({
    "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS",
    "JENKINS_URL",
    "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
})  # fmt: skip


def files_after(code: str, home: Path, **env: str) -> list[Path]:
    hidden = CI_VARIABLES | {"ORT_DISABLE_TELEMETRY"}
    environ = {k: v for k, v in os.environ.items() if k not in hidden}
    environ.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return sorted(p for p in home.rglob("*") if p.is_file())


def _writes_a_device_id() -> bool:
    """Whether onnxruntime's extension holds the code that writes ``deviceid``."""
    spec = importlib.util.find_spec("onnxruntime")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    return any(b"deviceid" in so.read_bytes() for so in capi.glob("*.so"))


def test_importing_lfr_first_keeps_onnxruntime_from_writing_a_device_id(
    tmp_path: Path,
) -> None:
    ort = pytest.importorskip("onnxruntime")
    if not _writes_a_device_id():  # 1.19.2, the newest for Python 3.9, has none
        pytest.skip(
            f"onnxruntime {ort.__version__} has no device-id telemetry: nothing to "
            "keep from being written, and the negative control would see nothing"
        )
    lfr_first = tmp_path / "a"
    lfr_first.mkdir()
    assert files_after("import lfr, onnxruntime", lfr_first) == []
    # The negative control: onnxruntime alone writes its device id there.
    alone = tmp_path / "b"
    alone.mkdir()
    written = files_after("import onnxruntime", alone)
    assert any(p.name == "deviceid" for p in written), written
    # An operator's explicit choice stands.
    chosen = tmp_path / "c"
    chosen.mkdir()
    written = files_after("import lfr, onnxruntime", chosen, ORT_DISABLE_TELEMETRY="0")
    assert any(p.name == "deviceid" for p in written), written
