"""Enrolment from real photos with the real models, and the watchlist CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.errors import EnrolmentError

pytestmark = pytest.mark.data

U8 = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def tools(
    yunet_path: Path, embedder_path: Path
) -> tuple[lfr.FaceDetector, lfr.FaceEmbedder]:
    return lfr.FaceDetector(), lfr.FaceEmbedder()


@pytest.fixture(scope="module")
def people(
    lfw_dir: Path, tools: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> list[list[Path]]:
    """Four photos each of six identities, each photo with one usable face."""
    detector, gate = tools[0], lfr.QualityGate()
    out = []
    for folder in sorted((lfw_dir / "identities").iterdir()):
        files = []
        for file in sorted(folder.glob("*.jpg")):
            image = np.asarray(cv2.imread(str(file)), np.uint8)
            if gate.assess(image, detector.detect(image)).passed.sum() == 1:
                files.append(file)
        if len(files) >= 4:
            out.append(files[:4])
        if len(out) == 6:
            return out
    pytest.fail("lfw-dev has fewer than six identities with four clean photos")


def test_enrolled_subjects_are_found(
    tmp_path: Path,
    people: list[list[Path]],
    tools: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    detector, embedder = tools
    key = lfr.Key.generate()
    wl = lfr.Watchlist.create(tmp_path / "w.lfrw", key, embedder=embedder)
    for i, files in enumerate(people):
        wl.enroll(
            f"S-{i}", files[:3], reason="test", detector=detector, embedder=embedder
        )
    wl.save()
    again = lfr.Watchlist.open(wl.path, key, model_id=embedder.model_id)
    matcher = again.matcher()
    assert matcher.secure
    assert len(matcher) == 3 * len(people)
    for i, files in enumerate(people):
        probe = np.asarray(cv2.imread(str(files[3])), np.uint8)
        faces = detector.detect(probe)
        centre = np.array(probe.shape[1::-1]) / 2
        mid = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
        j = int(np.argmin(np.linalg.norm(mid - centre, axis=1)))
        one = faces[j : j + 1]
        ids, _ = matcher.search(embedder.embed(probe, one), k=1)
        assert again.subject_ids(ids[:, 0]) == [f"S-{i}"]
    # The file holds none of the real templates in clear.
    raw = wl.path.read_bytes()
    for row in again.templates_of("S-0"):
        for start in range(0, row.size - 4, 4):
            assert row[start : start + 4].tobytes() not in raw
    subject = again.subject("S-0")
    assert subject.templates == 3
    assert subject.source is not None
    assert subject.source.startswith("files: ")


def test_enrolment_is_all_or_nothing(
    tmp_path: Path,
    people: list[list[Path]],
    tools: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    detector, embedder = tools
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), embedder=embedder
    )
    good = np.asarray(cv2.imread(str(people[0][0])), np.uint8)
    other = np.asarray(cv2.imread(str(people[1][0])), np.uint8)
    blank = np.full((250, 250, 3), 128, np.uint8)
    pair = np.hstack([good, other])
    with pytest.raises(EnrolmentError) as info:
        wl.enroll(
            "S-x",
            [good, blank, pair, tmp_path / "missing.jpg", np.zeros((5, 5), np.uint8)],
            detector=detector,
            embedder=embedder,
        )
    reasons = dict(info.value.failures)
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[1] == "no face found"
    assert "exactly one" in reasons[2]
    assert "cannot read" in reasons[3]
    assert "uint8" in reasons[4]
    assert "S-x" not in wl
    assert wl.templates == 0
    wl.enroll("S-x", [good], detector=detector, embedder=embedder)
    assert wl.templates == 1


def test_enrolment_refuses_another_embedder(
    tmp_path: Path,
    people: list[list[Path]],
    tools: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    detector, embedder = tools
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), model_id="other", dim=embedder.dim
    )
    with pytest.raises(lfr.errors.WatchlistError, match="embedder 'other'"):
        wl.enroll("S", people[0][:1], detector=detector, embedder=embedder)


def lfr_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_watchlist_cli(
    tmp_path: Path,
    people: list[list[Path]],
    tools: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    key, wl = tmp_path / "site.key", tmp_path / "w.lfrw"
    out = lfr_cli("keys", "create", key)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert lfr_cli("keys", "create", key).returncode == 1  # never overwritten
    assert lfr_cli("watchlist", "create", wl, "--key-file", key).returncode == 0
    out = lfr_cli(
        "watchlist",
        "enroll",
        wl,
        "--key-file",
        key,
        "--subject",
        "S-1",
        "--reason",
        "wanted",
        "--added-by",
        "PC 1",
        *people[0][:2],
    )
    assert out.returncode == 0, out.stderr
    assert "enrolled S-1: 2 template(s)" in out.stdout
    out = lfr_cli(
        "watchlist",
        "enroll",
        wl,
        "--key-file",
        key,
        "--subject",
        "S-2",
        people[1][0],
        tmp_path / "nothing.jpg",
    )
    assert out.returncode == 1
    assert "nothing.jpg" in out.stderr
    out = lfr_cli("watchlist", "list", wl, "--key-file", key, "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["subject_id"] for r in rows] == ["S-1"]
    assert rows[0]["reason"] == "wanted"
    assert rows[0]["added_by"] == "PC 1"
    assert set(rows[0]) == {
        "subject_id",
        "reason",
        "source",
        "added_by",
        "added_at",
        "expires",
        "templates",
    }
    info = json.loads(lfr_cli("watchlist", "info", wl, "--json").stdout)
    assert (info["subjects"], info["templates"], info["dim"]) == (1, 2, 128)
    other = tmp_path / "other.key"
    lfr_cli("keys", "create", other)
    out = lfr_cli("watchlist", "list", wl, "--key-file", other)
    assert out.returncode == 1
    assert "wrong key" in out.stderr
    assert lfr_cli("watchlist", "remove", wl, "--key-file", key, "S-9").returncode == 1
    assert lfr_cli("watchlist", "remove", wl, "--key-file", key, "S-1").returncode == 0
    assert (
        json.loads(lfr_cli("watchlist", "info", wl, "--json").stdout)["subjects"] == 0
    )
