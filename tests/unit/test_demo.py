"""lfr.demo without face data: scheduling, truth, determinism, argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr.demo import Appearance, DemoTruth, compose_video, pick_people

SIZE = (480, 320)
WIDTHS = (30, 70)


@pytest.fixture
def photos(tmp_path: Path) -> list[list[Path]]:
    """Four 'people', two photos each: random 250x250 images (no faces needed)."""
    rng = np.random.default_rng(0)
    out = []
    for person in range(4):
        files = []
        for shot in range(2):
            path = tmp_path / f"p{person}_{shot}.png"
            image = rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
            assert cv2.imwrite(str(path), image)
            files.append(path)
        out.append(files)
    return out


def compose(people: list[list[Path]], out: Path, seed: int = 0) -> DemoTruth:
    return compose_video(
        people, out, size=SIZE, fps=5, seconds_per_person=2, face_widths=WIDTHS,
        per_frame=(1, 2), seed=seed,
    )  # fmt: skip


def test_small_video_and_truth(photos: list[list[Path]], tmp_path: Path) -> None:
    out = tmp_path / "v.avi"
    truth = compose(photos, out)
    capture = cv2.VideoCapture(str(out))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (SIZE[1], SIZE[0], 3)
        count += 1
    capture.release()
    assert count == truth.frames
    assert truth.fps == 5
    assert sorted(a.person for a in truth.appearances) == [0, 1, 2, 3]
    for a in truth.appearances:
        assert 7 <= len(a.boxes) <= 13  # 2 s at 5 fps, +-25 %
        assert list(a.frames) == list(range(a.first_frame, a.last_frame + 1))
        assert a.box_at(a.first_frame) == a.boxes[0]
        assert a.box_at(a.last_frame + 1) is None
        for x1, y1, x2, y2 in a.boxes:
            assert 0 <= x1 < x2 <= SIZE[0]
            assert 0 <= y1 < y2 <= SIZE[1]
            assert WIDTHS[0] - 0.5 <= x2 - x1 <= WIDTHS[1] + 0.5
    shown = [len(truth.boxes_at(f)) for f in range(truth.frames)]
    assert 1 <= min(shown) <= max(shown) <= 2
    assert DemoTruth.from_json(json.loads(json.dumps(truth.to_json()))) == truth


def test_deterministic_for_a_seed(photos: list[list[Path]], tmp_path: Path) -> None:
    first = compose(photos, tmp_path / "a.avi")
    assert compose(photos, tmp_path / "b.avi") == first
    assert (tmp_path / "a.avi").read_bytes() == (tmp_path / "b.avi").read_bytes()
    assert compose(photos, tmp_path / "c.avi", seed=1) != first


def test_arguments_are_checked(photos: list[list[Path]], tmp_path: Path) -> None:
    out = tmp_path / "v.avi"
    with pytest.raises(ValueError, match="per_frame"):
        compose_video(photos, out, per_frame=(3, 1))
    with pytest.raises(ValueError, match="do not fit"):
        compose_video(photos, out, size=(320, 240))
    with pytest.raises(ValueError, match="at least one photo"):
        compose_video([[]], out)
    with pytest.raises(ValueError, match="cannot read"):
        compose_video([[tmp_path / "missing.jpg"]], out, size=SIZE, face_widths=WIDTHS)
    with pytest.raises(ValueError, match="positive"):
        compose_video(photos, out, fps=0)
    with pytest.raises(ValueError, match="boxes"):
        Appearance(0, "x", 0, 1, ((0.0, 0.0, 1.0, 1.0),))
    with pytest.raises(ValueError, match="after the last frame"):
        DemoTruth(1, 5.0, SIZE, (Appearance(0, "x", 1, 1, ((0.0, 0.0, 1.0, 1.0),)),))


def test_pick_people_splits_photos(tmp_path: Path) -> None:
    for name, count in (("a", 5), ("b", 2), ("c", 1)):
        folder = tmp_path / "identities" / name
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"{name}_{i}.jpg").write_bytes(b"")
    (tmp_path / "unknowns").mkdir()
    for i in range(3):
        (tmp_path / "unknowns" / f"u{i}.jpg").write_bytes(b"")
    enrol, probe, unknown = pick_people(tmp_path, enrolled=2, unknown=3, seed=4)
    assert sorted(enrol) == ["a", "b"]  # "c" has one photo only
    assert [len(probe["a"]), len(enrol["a"])] == [2, 3]
    assert [len(probe["b"]), len(enrol["b"])] == [1, 1]
    assert not set(enrol["a"]) & set(probe["a"])
    assert sorted(p.name for p in unknown) == ["u0.jpg", "u1.jpg", "u2.jpg"]
    with pytest.raises(ValueError, match="two or more"):
        pick_people(tmp_path, enrolled=3, unknown=0)
