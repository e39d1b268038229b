"""The frame step shows a face sharp only once its track's alert is stored.

A match is not an alert: the tracker names the subject of every face that scored
above the threshold, also before its k-of-n rule is met. These tests drive a real
:class:`~lfr.pipeline.frame_step.FrameStep` (real tracker, watchlist, matcher and
quality gate; a detector and an embedder that return fixed faces and vectors, so
that which frame matches is chosen exactly) and record what it asks the preview
to show. Negative control in each: the tracker's own decision names the subject
(``subject_id is not None``: the old rule kept that face sharp and labelled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

import lfr
from lfr.detect import Detections
from lfr.pipeline.frame_step import FrameStep, Handover
from lfr.pipeline.stats import Counts
from lfr.quality import QualityGate
from lfr.sources import open_source
from lfr.tracking import FaceDecision, Tracker

DIM = 8
H, W = 120, 160
BOX = (40.0, 30.0, 100.0, 100.0)
# Plausible landmarks inside BOX: eyes, nose, mouth corners.
LANDMARKS = [(55.0, 55.0), (85.0, 55.0), (70.0, 70.0), (58.0, 85.0), (82.0, 85.0)]
# Every vector the fake embedder returns, by name; S-0001 and S-0002 are enrolled.
VECTORS = {"S-0001": 0, "S-0002": 1, "nobody": 2}


class OneFace:
    """A detector that finds the same face in every frame."""

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        return Detections(
            boxes=np.array([BOX], np.float32),
            scores=np.array([0.99], np.float32),
            landmarks=np.array([LANDMARKS], np.float32),
        )


class Scripted:
    """An embedder that returns, frame by frame, the vector of a scripted name."""

    model_id = "test/scripted"
    dim = DIM

    def __init__(self, script: Sequence[str]) -> None:
        self._script = list(script)

    def embed(
        self,
        frame: npt.NDArray[np.uint8],
        faces: Detections,
        out: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.float32]:
        assert out is not None
        out[:] = 0.0
        out[:, VECTORS[self._script.pop(0)]] = 1.0
        return out


class Recording(Tracker):
    """The real tracker, keeping each decision (for the negative control)."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[FaceDecision] = []

    def update(
        self,
        frame_index: int,
        time: datetime,
        boxes: npt.NDArray[np.float32],
        matches: Sequence[tuple[str, float] | None],
    ) -> list[FaceDecision]:
        out = super().update(frame_index, time, boxes, matches)
        self.decisions.extend(out)
        return out


class Shown:
    """A renderer that records what it was asked to keep sharp, and the labels."""

    def __init__(self) -> None:
        self.keep: list[bool] = []
        self.labels: list[str | None] = []

    def render(
        self,
        frame: npt.NDArray[np.uint8],
        boxes: npt.NDArray[np.float32],
        keep: npt.NDArray[np.bool_],
        labels: list[str | None],
    ) -> None:
        assert len(keep) == len(labels) == 1
        self.keep.append(bool(keep[0]))
        self.labels.append(labels[0])

    def close(self) -> None:
        pass


def run_frames(
    tmp_path: Path,
    script: Sequence[str],
    alert_stored: Callable[[tuple[int, str]], bool] | None = None,
    shown: Shown | None = None,
) -> tuple[Shown, Recording, list[Handover], Counts]:
    """Runs one frame per scripted name through a real FrameStep."""
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), model_id=Scripted.model_id, dim=DIM
    )
    for name in ("S-0001", "S-0002"):
        vector = np.zeros((1, DIM), np.float32)
        vector[0, VECTORS[name]] = 1.0
        wl.add(name, vector)
    shown = shown or Shown()
    tracker, counts = Recording(), Counts()
    handed: list[Handover] = []
    gate = QualityGate(
        min_score=0.0, min_eye_distance=0.0, max_yaw=10.0,
        pitch_range=(0.0, 10.0), max_roll=180.0, min_sharpness=0.0,
    )  # fmt: skip
    step = FrameStep(
        detector=OneFace(),
        embedder=Scripted(script),
        gate=gate,
        tracker=tracker,
        watchlist=wl,
        matcher=wl.matcher(),
        threshold=0.9,
        hand_over=handed.append,
        preview=shown,
        alert_stored=alert_stored,
    )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in script]
    with open_source(images) as source:
        for frame in source.frames():
            with frame:
                step.run(frame, counts)
    step.finish()
    for item in handed:
        item.discard()
    assert len(tracker.decisions) == len(script)  # every face passed the gate
    return shown, tracker, handed, counts


def test_a_single_frame_match_is_blurred_and_unlabelled(tmp_path: Path) -> None:
    shown, tracker, handed, counts = run_frames(
        tmp_path, ["S-0001", "nobody", "nobody"]
    )
    # Negative control: the tracker names the subject of the one-frame match;
    # the old rule (keep = subject_id is not None) showed it sharp and labelled.
    assert tracker.decisions[0].subject_id == "S-0001"
    assert not any(d.alert for d in tracker.decisions)
    assert shown.keep == [False, False, False]
    assert shown.labels == [None, None, None]
    assert handed == []  # nothing alerted, nothing stored
    assert (counts.alerts, counts.wiped) == (0, 3)  # counted like any passer-by


class StoredAfterTheAlertFrame(Shown):
    """A renderer that marks track 0's S-0001 alert stored after frame 1.

    Stands in for the writer storing the alert while the next frame is read.
    """

    def __init__(self, stored: set[tuple[int, str]]) -> None:
        super().__init__()
        self._stored = stored

    def render(
        self,
        frame: npt.NDArray[np.uint8],
        boxes: npt.NDArray[np.float32],
        keep: npt.NDArray[np.bool_],
        labels: list[str | None],
    ) -> None:
        super().render(frame, boxes, keep, labels)
        if len(self.keep) == 2:
            self._stored.add((0, "S-0001"))


def test_sharp_and_labelled_only_once_the_alert_is_stored(tmp_path: Path) -> None:
    stored: set[tuple[int, str]] = set()
    script = ["S-0001", "S-0001", "S-0001", "S-0002", "nobody", "S-0001"]
    shown, tracker, handed, counts = run_frames(
        tmp_path,
        script,
        alert_stored=lambda track: track in stored,
        shown=StoredAfterTheAlertFrame(stored),
    )
    assert [d.alert for d in tracker.decisions] == [False, True] + [False] * 4
    assert {d.track_id for d in tracker.decisions} == {0}
    # Negative control: frames 0 (not yet confirmed) and 3 (a second subject
    # the track has not confirmed) name a subject: the old rule showed them.
    assert tracker.decisions[0].subject_id == "S-0001"
    assert tracker.decisions[3].subject_id == "S-0002"
    # Frame 1 is the alert, its write not yet stored; frame 4 matched nobody.
    assert shown.keep == [False, False, True, False, False, True]
    assert shown.labels == [None, None, "S-0001", None, None, "S-0001"]
    assert handed[0].kind == "alert"
    assert (counts.alerts, counts.wiped) == (1, 5)


def test_an_alert_that_was_not_stored_is_never_sharp(tmp_path: Path) -> None:
    # A write failure: the writer never reports the pair as stored.
    shown, tracker, handed, _ = run_frames(
        tmp_path, ["S-0001"] * 5, alert_stored=lambda track: False
    )
    assert tracker.decisions[1].alert
    assert all(d.subject_id == "S-0001" for d in tracker.decisions)  # control
    assert shown.keep == [False] * 5
    assert shown.labels == [None] * 5
    assert handed[0].kind == "alert"


def test_without_a_writer_an_alert_is_sharp_from_its_own_frame(
    tmp_path: Path,
) -> None:
    # alert_stored=None: a hand_over that stores before it returns.
    shown, _, _, _ = run_frames(tmp_path, ["S-0001", "S-0001", "S-0001"])
    assert shown.keep == [False, True, True]
    assert shown.labels == [None, "S-0001", "S-0001"]
