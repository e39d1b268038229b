"""lfr.demo on LFW photos: the video, its ground truth, and what the detector sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.demo import DemoPeople, DemoTruth, compose_video, pick_people
from lfr.tracking import iou_matrix

pytestmark = pytest.mark.data

SIZE = (1280, 720)


@pytest.fixture(scope="module")
def chosen(lfw_dir: Path) -> DemoPeople:
    return pick_people(lfw_dir, enrolled=3, unknown=2, seed=0)


@pytest.fixture(scope="module")
def people(chosen: DemoPeople) -> list[list[Path]]:
    return [*chosen.probe.values(), *[[p] for p in chosen.unknown]]


@pytest.fixture(scope="module")
def video(
    people: list[list[Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DemoTruth]:
    out = tmp_path_factory.mktemp("demo") / "demo.avi"
    return out, compose_video(people, out, size=SIZE, fps=10, seed=0)


def frames_of(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield np.asarray(frame, np.uint8)
    finally:
        capture.release()


def test_pick_people(lfw_dir: Path, chosen: DemoPeople) -> None:
    enrol, probe, unknown = chosen
    assert list(enrol) == list(probe)
    assert len(enrol) == 3
    assert len(unknown) == len(set(unknown)) == 2
    for name in enrol:
        assert enrol[name]
        assert probe[name]
        assert not set(enrol[name]) & set(probe[name])
        assert all(p.parent.name == name for p in enrol[name] + probe[name])
    assert all(p.parent == lfw_dir / "unknowns" for p in unknown)
    assert pick_people(lfw_dir, 3, 2, seed=0) == chosen
    assert pick_people(lfw_dir, 3, 2, seed=1) != chosen
    with pytest.raises(ValueError, match="asked for"):
        pick_people(lfw_dir, 3, 100_000)


def test_video_has_the_frames_and_size(video: tuple[Path, DemoTruth]) -> None:
    path, truth = video
    assert truth.size == SIZE
    assert truth.fps == 10
    assert 40 <= truth.frames <= 120
    count = 0
    for frame in frames_of(path):
        assert frame.shape == (SIZE[1], SIZE[0], 3)
        count += 1
    assert count == truth.frames


def test_truth_is_sound(
    video: tuple[Path, DemoTruth], people: list[list[Path]]
) -> None:
    _, truth = video
    assert sorted(a.person for a in truth.appearances) == list(range(len(people)))
    width, height = SIZE
    for appearance in truth.appearances:
        assert appearance.photo in {str(p) for p in people[appearance.person]}
        assert appearance.last_frame - appearance.first_frame >= 10
        for x1, y1, x2, y2 in appearance.boxes:
            assert 0 <= x1 < x2 <= width
            assert 0 <= y1 < y2 <= height
            assert 79.5 <= x2 - x1 <= 220.5
    widths = [b[2] - b[0] for a in truth.appearances for b in a.boxes]
    assert max(widths) - min(widths) > 50  # different sizes
    shown = [len(truth.boxes_at(f)) for f in range(truth.frames)]
    assert min(shown) >= 1
    assert max(shown) <= 3
    assert max(shown) >= 2  # several people at once
    for frame in range(truth.frames):
        boxes = np.array([b for _, b in truth.boxes_at(frame)])
        overlap = iou_matrix(boxes, boxes) - np.eye(len(boxes))
        assert (overlap <= 0).all()
    moved = [
        abs(a.boxes[-1][0] - a.boxes[0][0]) + abs(a.boxes[-1][1] - a.boxes[0][1])
        for a in truth.appearances
    ]
    assert min(moved) > 50  # everyone walks across
    assert DemoTruth.from_json(json.loads(json.dumps(truth.to_json()))) == truth


def test_same_seed_same_video(
    video: tuple[Path, DemoTruth], people: list[list[Path]], tmp_path: Path
) -> None:
    path, truth = video
    again = compose_video(people, tmp_path / "again.avi", size=SIZE, fps=10, seed=0)
    assert again == truth
    assert (tmp_path / "again.avi").read_bytes() == path.read_bytes()
    other = compose_video(people, tmp_path / "other.avi", size=SIZE, fps=10, seed=1)
    assert other.appearances != truth.appearances


def test_the_detector_finds_the_drawn_faces(
    video: tuple[Path, DemoTruth], yunet_path: Path
) -> None:
    path, truth = video
    best: list[float] = []
    with lfr.FaceDetector(yunet_path) as detector:
        for index, frame in enumerate(frames_of(path)):
            if index % 3:
                continue
            wanted = [b for _, b in truth.boxes_at(index) if b[2] - b[0] >= 80]
            if not wanted:
                continue
            faces = detector.detect(frame)
            if len(faces) == 0:
                best.extend(0.0 for _ in wanted)
                continue
            best.extend(iou_matrix(np.array(wanted), faces.boxes).max(axis=1))
    assert len(best) >= 20
    found = np.mean(np.array(best) > 0.5)
    assert found >= 0.9, f"{found:.0%} of {len(best)} drawn faces found"


def test_the_background_shows_no_face(yunet_path: Path, tmp_path: Path) -> None:
    truth = compose_video([], tmp_path / "empty.avi", size=SIZE, seed=3)
    assert truth.frames == 1
    assert truth.appearances == ()
    (frame,) = frames_of(tmp_path / "empty.avi")
    with lfr.FaceDetector(yunet_path) as detector:
        assert len(detector.detect(frame)) == 0
