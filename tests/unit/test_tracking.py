"""The tracker on hand-made sequences whose answers are known."""

from __future__ import annotations

import doctest
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import numpy as np
import numpy.typing as npt
import pytest

import lfr.tracking
from lfr.tracking import FaceDecision, Tracker, TrackerConfig, iou_matrix

T0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
Match = Optional[tuple[str, float]]


def at(frame: int) -> datetime:
    return T0 + timedelta(milliseconds=40 * frame)


def box(x: float, y: float = 100.0, size: float = 100.0) -> list[float]:
    return [x, y, x + size, y + size]


def boxes(*rows: list[float]) -> npt.NDArray[np.float32]:
    return np.array(rows, np.float32).reshape(-1, 4)


NONE = np.zeros((0, 4), np.float32)


def step(
    tracker: Tracker, frame: int, rows: Sequence[list[float]], matches: Sequence[Match]
) -> list[FaceDecision]:
    return tracker.update(frame, at(frame), boxes(*rows), matches)


def test_one_face_matched_every_frame_alerts_once() -> None:
    cfg = TrackerConfig()
    tracker = Tracker(cfg)
    decisions = [
        step(tracker, f, [box(100 + 5 * f)], [("alice", 0.5)])[0] for f in range(20)
    ]
    assert {d.track_id for d in decisions} == {0}
    alerts = [f for f, d in enumerate(decisions) if d.alert]
    assert alerts == [cfg.confirm_hits - 1]
    assert all(d.subject_id == "alice" and d.score == 0.5 for d in decisions)
    # Equal scores are never better than the stored crop.
    assert not any(d.best for d in decisions)
    assert [d.keep for d in decisions] == [d.alert for d in decisions]
    assert tracker.active == 1
    assert tracker.ended() == []
    tracker.flush()
    assert tracker.active == 0
    [summary] = tracker.ended()
    assert summary.track_id == 0
    assert (summary.first_frame, summary.last_frame) == (0, 19)
    assert (summary.first_time, summary.last_time) == (at(0), at(19))
    assert (summary.frames, summary.matched) == (20, 20)
    assert summary.subjects == ("alice",)
    assert summary.subject == "alice"
    assert summary.best_score == 0.5
    assert tracker.ended() == []


def test_two_faces_crossing_paths_keep_their_tracks() -> None:
    # A walks right along y=100, B walks left along y=150: their boxes overlap
    # for several frames (IoU up to 1/3 at the crossing), each moves 10 px a frame.
    tracker = Tracker()
    ids_a, ids_b = [], []
    alerts: list[tuple[int, int, str | None]] = []
    for f in range(31):
        a = box(100 + 10 * f, y=100)
        b = box(400 - 10 * f, y=150)
        # The detector orders faces by score: make the order change mid-way.
        rows, matches = [a, b], [("alice", 0.7), None]
        if f % 2:
            rows, matches = rows[::-1], matches[::-1]
        decisions = step(tracker, f, rows, matches)
        if f % 2:
            decisions = decisions[::-1]
        ids_a.append(decisions[0].track_id)
        ids_b.append(decisions[1].track_id)
        assert decisions[0].subject_id == "alice"
        assert decisions[1].subject_id is None
        alerts += [(f, d.track_id, d.subject_id) for d in decisions if d.alert]
    assert iou_matrix(boxes(box(250, 100)), boxes(box(250, 150)))[0, 0] == (
        pytest.approx(1 / 3)
    )
    assert set(ids_a) == {0}
    assert set(ids_b) == {1}
    assert alerts == [(1, 0, "alice")]
    assert tracker.active == 2


@pytest.mark.parametrize(("gap", "same"), [(5, True), (6, False)])
def test_gap_of_max_missed_keeps_the_track(gap: int, same: bool) -> None:
    tracker = Tracker(TrackerConfig(max_missed=5))
    first = [step(tracker, f, [box(100)], [("bob", 0.6)])[0] for f in range(2)]
    assert [d.alert for d in first] == [False, True]
    for f in range(2, 2 + gap):
        assert step(tracker, f, [], []) == []
    assert tracker.active == (1 if same else 0)
    back = [
        step(tracker, f, [box(100)], [("bob", 0.6)])[0] for f in range(2 + gap, 4 + gap)
    ]
    if same:
        assert [d.track_id for d in back] == [0, 0]
        assert not any(d.alert for d in back)
        assert tracker.ended() == []
    else:
        # A new track, which confirms and alerts again.
        assert [d.track_id for d in back] == [1, 1]
        assert [d.alert for d in back] == [False, True]
        [summary] = tracker.ended()
        assert (summary.track_id, summary.last_frame, summary.frames) == (0, 1, 2)


def test_skipped_frame_indices_count_as_missed() -> None:
    tracker = Tracker(TrackerConfig(max_missed=2))
    assert step(tracker, 0, [box(0)], [None])[0].track_id == 0
    assert step(tracker, 3, [box(0)], [None])[0].track_id == 0
    assert step(tracker, 7, [box(0)], [None])[0].track_id == 1
    assert [s.track_id for s in tracker.ended()] == [0]


@pytest.mark.parametrize(
    ("matched", "alert_at"),
    [((0, 4), 4), ((0, 6), None), ((0, 5), None), ((3, 7), 7), ((0, 5, 6), 6)],
)
def test_k_of_n(matched: tuple[int, ...], alert_at: int | None) -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=2, confirm_window=5))
    alerts = []
    for f in range(12):
        match: Match = ("carol", 0.8) if f in matched else None
        [d] = step(tracker, f, [box(50 + f)], [match])
        assert d.track_id == 0
        if d.alert:
            alerts.append(f)
    assert alerts == ([] if alert_at is None else [alert_at])


def test_k_of_n_counts_frames_where_the_face_was_missed() -> None:
    # The window is in frame indices: matches at 0 and 4 confirm even if the face
    # was not detected in frames 1..3.
    tracker = Tracker(TrackerConfig(confirm_hits=2, confirm_window=5))
    assert not step(tracker, 0, [box(0)], [("d", 0.9)])[0].alert
    for f in (1, 2, 3):
        step(tracker, f, [], [])
    assert step(tracker, 4, [box(0)], [("d", 0.9)])[0].alert


def test_confirm_hits_one_alerts_on_first_match() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=1, confirm_window=1))
    assert not step(tracker, 0, [box(0)], [None])[0].alert
    assert step(tracker, 1, [box(0)], [("e", 0.9)])[0].alert
    assert not step(tracker, 2, [box(0)], [("e", 0.9)])[0].alert


def test_unmatched_faces_never_alert_or_keep() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=1, confirm_window=1))
    for f in range(30):
        rows = [box(10 * i + f, y=200 * i) for i in range(3)]
        for d in step(tracker, f, rows, [None, None, None]):
            assert (d.subject_id, d.score) == (None, None)
            assert (d.alert, d.best, d.keep) == (False, False, False)
    tracker.flush()
    summaries = tracker.ended()
    assert len(summaries) == 3
    assert all(s.subjects == () and s.subject is None for s in summaries)
    assert all(s.best_score is None and s.matched == 0 for s in summaries)


def test_best_flags_only_after_the_alert_and_only_on_improvement() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=2, confirm_window=5))
    scores = [0.9, 0.6, 0.7, 0.65, 0.7, 0.8, None, 0.85, 0.95]
    decisions = []
    for f, s in enumerate(scores):
        match: Match = None if s is None else ("frank", s)
        decisions.append(step(tracker, f, [box(0)], [match])[0])
    assert [d.alert for d in decisions] == [f == 1 for f in range(9)]
    # The alert stored the crop of frame 1 (0.6); frame 0 (0.9) was wiped.
    assert [f for f, d in enumerate(decisions) if d.best] == [2, 5, 7, 8]
    assert [f for f, d in enumerate(decisions) if d.keep] == [1, 2, 5, 7, 8]
    tracker.flush()
    [summary] = tracker.ended()
    assert summary.best_score == 0.95
    assert (summary.frames, summary.matched) == (9, 8)


def test_subject_change_is_counted_per_subject() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=2, confirm_window=3))
    # Flicker A, B, A, B...: A's matches at 0 and 2 lie within 3 frames, so A
    # confirms at 2; B's at 1 and 3 confirm B at 3, in the same track.
    pattern = ["A", "B", "A", "B", "A", "B", "B", "B"]
    decisions = [
        step(tracker, f, [box(0)], [(s, 0.5 + 0.01 * f)])[0]
        for f, s in enumerate(pattern)
    ]
    assert [(f, d.subject_id) for f, d in enumerate(decisions) if d.alert] == [
        (2, "A"),
        (3, "B"),
    ]
    # Bests are per subject: B at 5, 6, 7 improve on B's stored 0.53; A at 4 on 0.52.
    assert [(f, d.subject_id) for f, d in enumerate(decisions) if d.best] == [
        (4, "A"),
        (5, "B"),
        (6, "B"),
        (7, "B"),
    ]
    tracker.flush()
    [summary] = tracker.ended()
    assert summary.subjects == ("A", "B")
    assert summary.subject == "A"


def test_subject_flicker_with_tight_window_never_confirms() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=2, confirm_window=2))
    for f in range(20):
        s = "A" if f % 2 == 0 else "B"
        assert not step(tracker, f, [box(0)], [(s, 0.9)])[0].alert
    assert tracker.active == 1


def test_greedy_association_prefers_highest_iou() -> None:
    tracker = Tracker(TrackerConfig(iou_threshold=0.1))
    step(tracker, 0, [box(0), box(60)], [None, None])
    # The box at x=35 overlaps both tracks: track 1 (x=60) with IoU 0.6, track 0
    # (x=0) with 0.48. It goes to track 1; the box at x=-30 then takes track 0
    # (IoU 0.54; 0.05 with track 1).
    d = step(tracker, 1, [box(35), box(-30)], [None, None])
    assert [x.track_id for x in d] == [1, 0]
    iou = iou_matrix(boxes(box(0), box(60)), boxes(box(35), box(-30)))
    np.testing.assert_allclose(iou, [[0.48148, 0.53846], [0.6, 0.05263]], atol=1e-4)


def test_new_faces_start_new_tracks_in_input_order() -> None:
    tracker = Tracker()
    d = step(tracker, 0, [box(0), box(500), box(1000)], [None, None, None])
    assert [x.track_id for x in d] == [0, 1, 2]
    d = step(tracker, 1, [box(1500), box(1000), box(2000)], [None, None, None])
    assert [x.track_id for x in d] == [3, 2, 4]
    assert tracker.active == 5


def test_state_is_unchanged_when_update_raises() -> None:
    tracker = Tracker()
    step(tracker, 0, [box(0)], [("a", 0.9)])
    with pytest.raises(ValueError, match="one entry per box"):
        step(tracker, 1, [box(0)], [])
    with pytest.raises(ValueError, match="must increase"):
        step(tracker, 0, [box(0)], [None])
    # Frame 1 is still free, and the track still has its match of frame 0.
    assert step(tracker, 1, [box(0)], [("a", 0.9)])[0].alert


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"iou_threshold": 0.0}, ValueError, "iou_threshold"),
        ({"iou_threshold": 1.5}, ValueError, "iou_threshold"),
        ({"iou_threshold": float("nan")}, ValueError, "iou_threshold"),
        ({"iou_threshold": "0.3"}, TypeError, "iou_threshold"),
        ({"max_missed": -1}, ValueError, "max_missed"),
        ({"max_missed": 1.5}, TypeError, "max_missed"),
        ({"max_missed": True}, TypeError, "max_missed"),
        ({"confirm_hits": 0}, ValueError, "confirm_hits"),
        ({"confirm_hits": 3, "confirm_window": 2}, ValueError, "confirm_window"),
        ({"confirm_window": None}, TypeError, "confirm_window"),
    ],
)
def test_config_validation(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        TrackerConfig(**kwargs)


def test_config_defaults_and_normalisation() -> None:
    cfg = TrackerConfig()
    assert (cfg.iou_threshold, cfg.max_missed) == (0.3, 5)
    assert (cfg.confirm_hits, cfg.confirm_window) == (2, 5)
    cfg = TrackerConfig(iou_threshold=1, max_missed=np.int64(0))  # type: ignore[arg-type]
    assert type(cfg.iou_threshold) is float
    assert type(cfg.max_missed) is int
    assert Tracker().config == TrackerConfig()
    with pytest.raises(TypeError, match="TrackerConfig"):
        Tracker({"max_missed": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1, at(0), NONE, []), ValueError, "frame_index"),
        ((1.0, at(0), NONE, []), TypeError, "frame_index"),
        ((0, at(0).replace(tzinfo=None), NONE, []), ValueError, "aware"),
        ((0, "now", NONE, []), TypeError, "datetime"),
        ((0, at(0), [[0, 0, 1, 1]], [None]), TypeError, "numpy"),
        ((0, at(0), np.zeros((1, 5), np.float32), [None]), ValueError, "shape"),
        ((0, at(0), np.zeros(4, np.float32), [None]), ValueError, "shape"),
        ((0, at(0), boxes([0, 0, np.nan, 1]), [None]), ValueError, "NaN"),
        ((0, at(0), boxes([5, 0, 1, 1]), [None]), ValueError, "x1 <= x2"),
        ((0, at(0), boxes([0, 0, 1, 1]), [None, None]), ValueError, "one entry"),
        ((0, at(0), boxes([0, 0, 1, 1]), [("a",)]), TypeError, "tuple"),
        ((0, at(0), boxes([0, 0, 1, 1]), [["a", 0.5]]), TypeError, "tuple"),
        ((0, at(0), boxes([0, 0, 1, 1]), [(7, 0.5)]), TypeError, "subject_id"),
        ((0, at(0), boxes([0, 0, 1, 1]), [("", 0.5)]), ValueError, "subject_id"),
        ((0, at(0), boxes([0, 0, 1, 1]), [("a", "0.5")]), TypeError, "score"),
        ((0, at(0), boxes([0, 0, 1, 1]), [("a", np.inf)]), ValueError, "finite"),
        ((0, at(0), boxes([0, 0, 1, 1]), "a"), TypeError, "sequence"),
    ],
)
def test_update_validation(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    tracker = Tracker()
    with pytest.raises(error, match=message):
        tracker.update(*args)
    assert tracker.active == 0


def test_time_must_not_go_backwards() -> None:
    tracker = Tracker()
    tracker.update(5, at(5), NONE, [])
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(6, at(4), NONE, [])
    tracker.update(6, at(5), NONE, [])  # equal times are allowed


def test_face_decision_is_consistent() -> None:
    assert FaceDecision(1, "a", 0.5, alert=True).keep
    assert FaceDecision(1, "a", 0.5, best=True).keep
    assert not FaceDecision(1, "a", 0.5).keep
    with pytest.raises(ValueError, match="both"):
        FaceDecision(1, "a", None)
    with pytest.raises(ValueError, match="unmatched"):
        FaceDecision(1, None, None, alert=True)
    with pytest.raises(ValueError, match="alert and"):
        FaceDecision(1, "a", 0.5, alert=True, best=True)


def test_iou_matrix() -> None:
    a = boxes([0, 0, 10, 10], [0, 0, 0, 0])
    b = boxes([5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0])
    np.testing.assert_allclose(
        iou_matrix(a, b), [[1 / 3, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    assert iou_matrix(NONE, b).shape == (0, 4)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(lfr.tracking, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
