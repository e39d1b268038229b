"""``lfr demo`` end to end: real photos, real models, a verified audit log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lfr.cli import main
from lfr.cli._demo import find_data

#: The start of a PNG file, or of a JPEG file with a JFIF or Exif header: none may
#: lie in the work directory (long enough not to occur in ciphertext by chance).
IMAGE_MAGIC = re.compile(
    rb"\x89PNG\r\n\x1a\n|\xff\xd8\xff\xe0..JFIF\x00|\xff\xd8\xff\xe1..Exif\x00",
    re.DOTALL,
)


def lfr_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def demo(
    lfw_dir: Path,
    yunet_path: Path,
    embedder_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "work"
    # The default lookup: lfw-dev under LFR_DATA_DIR.
    run = lfr_cli(
        "demo",
        "--out",
        str(out),
        "--seed",
        "0",
        env={"LFR_DATA_DIR": str(lfw_dir.parent)},
    )
    return run, out


@pytest.mark.data
def test_demo_alerts_every_enrolled_person_and_no_one_else(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run, out = demo
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = run.stdout
    assert f"work directory: {out}" in text
    assert "enrolled people alerted: 4 of 4" in text
    assert "unknown people alerted: 0 of 4" in text
    assert "no unknown person was stored" in text
    assert "faces wiped from lfr's locked memory at once" in text
    assert "no trace" not in text  # no more than docs/data-handling.md shows
    assert "verified, no violations" in text
    assert "shows faces" in text
    assert "was deleted" in text
    assert text.rstrip().splitlines()[-1].startswith("OK: every enrolled person")
    alerts = [line for line in text.splitlines() if "ALERT" in line]
    assert len(alerts) >= 4
    assert all("(enrolled)" in line for line in alerts)
    assert "# Live facial recognition: deployment record" in text
    for name in ("watchlist.lfrw", "alerts.db", "audit.log", "audit.pub"):
        assert str(out / name) in text


@pytest.mark.data
def test_demo_leaves_its_files_and_no_face_image(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run, out = demo
    assert run.returncode == 0, run.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {
        "watchlist.lfrw",
        "alerts.db",
        "audit.log",
        "audit.pub",
        "keys",  # the keys: not in the audit log's folder
        "deployment-record.json",
        "deployment-record.md",
    } <= names
    assert {p.name for p in (out / "keys").iterdir()} == {
        "watchlist.key",
        "store.key",
        "audit.key",
    }
    assert "audit.key" not in names
    for path in out.rglob("*"):
        if path.is_dir():  # audit.log.live/: the running deployments' lock files
            continue
        assert path.suffix.lower() not in {".jpg", ".jpeg", ".png", ".avi", ".mp4"}
        found = IMAGE_MAGIC.search(path.read_bytes())
        assert found is None, f"{path.name} holds a plaintext image"
    # The published record names no one enrolled.
    enrolled = re.findall(r"^\s+(\S+): alerted$", run.stdout, re.MULTILINE)
    assert len(enrolled) == 4
    record = (out / "deployment-record.md").read_text() + (
        out / "deployment-record.json"
    ).read_text()
    assert not [name for name in enrolled if name in record]


@pytest.mark.data
def test_the_demo_audit_log_verifies(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    run, out = demo
    assert run.returncode == 0, run.stderr[-3000:]
    check = lfr_cli(
        "audit",
        "verify",
        str(out / "audit.log"),
        "--public-key",
        str(out / "audit.pub"),
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "result: OK" in check.stdout
    assert "4 alerts" in check.stdout


@pytest.mark.data
def test_the_demo_keeps_the_watchlist_key_and_the_store_key_apart(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Two key files: the printed commands work, the watchlist's cannot open alerts."""
    run, out = demo
    assert run.returncode == 0, run.stderr[-3000:]
    printed = re.search(r"see the alerts:\s+lfr (alerts list .*)$", run.stdout, re.M)
    assert printed is not None, run.stdout[-3000:]
    assert "--store-key" in printed.group(1)
    listed = lfr_cli(*printed.group(1).split(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert len([ln for ln in listed.stdout.splitlines() if ln.strip()]) >= 4
    shown = re.search(
        r"see the watchlist:\s+lfr (watchlist list .*)$", run.stdout, re.M
    )
    assert shown is not None
    assert lfr_cli(*shown.group(1).split(), timeout=120).returncode == 0
    # Enrolment staff's key opens the watchlist, never the alerts.
    refused = lfr_cli(
        "alerts", "list", "--store", str(out / "alerts.db"),
        "--key-file", str(out / "keys" / "watchlist.key"), timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "was created with key" in refused.stderr
    assert "its own key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (
        "Watchlist and alert store keys | separate"
        in (out / "deployment-record.md").read_text()
    )


@pytest.mark.data
def test_keep_video_keeps_it_and_data_without_unknowns(
    lfw_dir: Path, yunet_path: Path, embedder_path: Path, tmp_path: Path
) -> None:
    data = tmp_path / "photos"
    (data / "identities").mkdir(parents=True)
    for folder in sorted((lfw_dir / "identities").iterdir())[:8]:
        (data / "identities" / folder.name).symlink_to(folder)
    out = tmp_path / "work"
    run = lfr_cli(
        "demo",
        "--data",
        str(data),
        "--out",
        str(out),
        "--enrolled",
        "2",
        "--unknown",
        "2",
        "--seed",
        "1",
        "--keep-video",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "enrolled people alerted: 2 of 2" in run.stdout
    assert "unknown people alerted: 0 of 2" in run.stdout
    assert "was kept (--keep-video)" in run.stdout
    assert (out / "demo-video.avi").stat().st_size > 0
    # A video of faces: readable by its owner only, in a folder only they enter.
    assert (out / "demo-video.avi").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700


def test_no_data_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("LFR_DATA_DIR", str(missing))
    assert main(["demo", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "no photos found" in err
    assert str(missing) in err
    assert "LFR_DATA_DIR" in err
    assert not (tmp_path / "out").exists()
    assert main(["demo", "--data", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def test_data_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "data" / "lfw-dev" / "identities").mkdir(parents=True)
    (tmp_path / "own" / "identities").mkdir(parents=True)
    (tmp_path / "main").mkdir()
    monkeypatch.delenv("LFR_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "main")
    lfw = (tmp_path / "shared" / "data" / "lfw-dev").resolve()
    assert find_data() == lfw
    assert find_data(tmp_path / "shared" / "data") == lfw
    assert find_data(tmp_path / "own") == (tmp_path / "own").resolve()
    monkeypatch.setenv("LFR_DATA_DIR", str(tmp_path / "own"))
    assert find_data() == (tmp_path / "own").resolve()


def test_out_must_be_new_and_outside_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data" / "lfw-dev"
    (data / "identities").mkdir(parents=True)
    assert main(["demo", "--data", str(data), "--out", str(data / "out")]) == 1
    assert "inside the photo data" in capsys.readouterr().err
    assert main(["demo", "--data", str(data), "--out", str(tmp_path / "data")]) == 1
    assert "inside the photo data" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["demo", "--data", str(data), "--out", str(busy)]) == 1
    assert "new or empty" in capsys.readouterr().err


def test_too_many_enrolled_leaves_no_work_directory(
    tmp_path: Path, lfw_dir: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"LFR_DATA_DIR": str(lfw_dir.parent), "TMPDIR": str(temp)}
    out = lfr_cli("demo", "--enrolled", "5000", env=env)
    assert out.returncode == 1
    assert "5000 asked for" in out.stderr
    assert list(temp.iterdir()) == []  # no empty lfr-demo-* left behind
