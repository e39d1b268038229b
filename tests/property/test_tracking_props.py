"""Hypothesis: the tracker agrees with a plain model of who walked past and when.

Faces walk along separate horizontal lanes (boxes in different lanes never overlap,
boxes of one lane move a few pixels a frame and overlap by far more than the IoU
threshold), so the right association is known: a lane's faces form one person's
track until the lane is empty for more than ``max_missed`` frames. Each face gets a
random match (or none). A few lines of Python then say which faces must alert
(k-of-n per track and subject), which are ``best`` and what each ended track sums
up to; the tracker must agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr.tracking import FaceDecision, Tracker, TrackerConfig, TrackSummary

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
SIZE = 60.0
LANE_PITCH = 200.0
Match = Optional[tuple[str, float]]


@dataclass
class Face:
    frame: int
    lane: int
    box: tuple[float, float, float, float]
    match: Match


@dataclass
class Segment:
    """One person's visit to a lane: what their track must report."""

    faces: list[Face] = field(default_factory=list)
    alerts: dict[int, str] = field(default_factory=dict)  # frame -> subject
    bests: set[int] = field(default_factory=set)  # frames


@dataclass
class Scenario:
    config: TrackerConfig
    frames: list[int]
    faces: dict[int, list[Face]]  # frame -> faces, in input order


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    hits = draw(st.integers(1, 4))
    config = TrackerConfig(
        max_missed=draw(st.integers(0, 4)),
        confirm_hits=hits,
        confirm_window=draw(st.integers(hits, hits + 4)),
    )
    lanes = draw(st.integers(1, 4))
    # Mostly consecutive frame indices, sometimes a skipped frame or two.
    steps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 3]), min_size=1, max_size=40))
    frames = list(np.cumsum(steps).tolist())
    subjects = st.sampled_from(["A", "B", "C"][: draw(st.integers(1, 3))])
    # Few distinct scores, so that equal scores (never "best") happen often.
    scores = st.integers(1, 6).map(lambda s: s / 10)
    absent = st.just("absent")
    what = st.one_of(absent, st.none(), st.tuples(subjects, scores))
    x = [0.0] * lanes
    faces: dict[int, list[Face]] = {}
    for frame in frames:
        here = []
        for lane in range(lanes):
            match = draw(what)
            if match == "absent":
                continue
            assert not isinstance(match, str)
            # The box moves only while visible: a returning face overlaps its last
            # box (IoU >= 52 / 68 after a step of 8).
            x[lane] += draw(st.integers(0, 8))
            y = lane * LANE_PITCH
            box = (x[lane], y, x[lane] + SIZE, y + SIZE)
            here.append(Face(frame, lane, box, match))
        faces[frame] = draw(st.permutations(here))
    return Scenario(config, frames, faces)


def model(scenario: Scenario) -> list[Segment]:
    """The tracks a correct tracker makes, with their alerts and best faces."""
    cfg = scenario.config
    current: dict[int, Segment] = {}
    segments: list[Segment] = []
    for frame in scenario.frames:
        for face in sorted(scenario.faces[frame], key=lambda f: f.lane):
            seg = current.get(face.lane)
            if seg is None or frame - seg.faces[-1].frame - 1 > cfg.max_missed:
                seg = current[face.lane] = Segment()
                segments.append(seg)
            seg.faces.append(face)
    for seg in segments:
        stored: dict[str, float] = {}  # alerted subject -> score of the kept crop
        for face in seg.faces:
            if face.match is None:
                continue
            subject, score = face.match
            if subject in stored:
                if score > stored[subject]:
                    seg.bests.add(face.frame)
                    stored[subject] = score
                continue
            recent = [
                f.frame
                for f in seg.faces
                if f.match is not None
                and f.match[0] == subject
                and face.frame - cfg.confirm_window < f.frame <= face.frame
            ]
            if len(recent) >= cfg.confirm_hits:
                seg.alerts[face.frame] = subject
                stored[subject] = score
    return segments


def live_lanes(scenario: Scenario, frame: int) -> int:
    """Lanes whose last face up to ``frame`` is at most ``max_missed`` frames old."""
    last: dict[int, int] = {}
    for f in scenario.frames:
        if f > frame:
            break
        for face in scenario.faces[f]:
            last[face.lane] = f
    return sum(frame - f <= scenario.config.max_missed for f in last.values())


@settings(max_examples=300)
@given(scenarios())
def test_tracker_matches_the_model(scenario: Scenario) -> None:
    tracker = Tracker(scenario.config)
    decided: list[tuple[Face, FaceDecision]] = []
    summaries: list[TrackSummary] = []
    for frame in scenario.frames:
        faces = scenario.faces[frame]
        rows = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        time = T0 + timedelta(seconds=frame / 25)
        decisions = tracker.update(frame, time, rows, [f.match for f in faces])
        # Every face gets exactly one decision, in input order, on its own track.
        assert len(decisions) == len(faces)
        assert len({d.track_id for d in decisions}) == len(decisions)
        for face, d in zip(faces, decisions):
            assert (d.subject_id, d.score) == (face.match or (None, None))
            assert d.keep == (d.alert or d.best)
            decided.append((face, d))
        assert tracker.active == live_lanes(scenario, frame)
        summaries += tracker.ended()
    tracker.flush()
    assert tracker.active == 0
    summaries += tracker.ended()

    segments = model(scenario)
    # Faces of one person share a track; different people never do.
    track_of: dict[tuple[int, int], int] = {
        (face.lane, face.frame): d.track_id for face, d in decided
    }
    ids = [{track_of[(f.lane, f.frame)] for f in seg.faces} for seg in segments]
    assert all(len(s) == 1 for s in ids)
    track_ids = [next(iter(s)) for s in ids]
    assert len(set(track_ids)) == len(segments)

    alerts = [(d.track_id, d.subject_id) for _, d in decided if d.alert]
    assert len(alerts) == len(set(alerts))  # at most one per (track, subject)
    for seg, track_id in zip(segments, track_ids):
        got = {
            face.frame: d for face, d in decided if d.track_id == track_id
        }  # one face per frame and track
        assert {f: d.subject_id for f, d in got.items() if d.alert} == seg.alerts
        assert {f for f, d in got.items() if d.best} == seg.bests
        assert {f for f, d in got.items() if d.keep} == set(seg.alerts) | seg.bests

    # Each track ends exactly once, with the model's counts.
    assert sorted(s.track_id for s in summaries) == sorted(track_ids)
    by_id = {s.track_id: s for s in summaries}
    for seg, track_id in zip(segments, track_ids):
        s = by_id[track_id]
        matched = [f.match for f in seg.faces if f.match is not None]
        assert (s.first_frame, s.last_frame) == (
            seg.faces[0].frame,
            seg.faces[-1].frame,
        )
        assert s.first_time == T0 + timedelta(seconds=s.first_frame / 25)
        assert s.last_time == T0 + timedelta(seconds=s.last_frame / 25)
        assert (s.frames, s.matched) == (len(seg.faces), len(matched))
        assert s.subjects == tuple(seg.alerts[f] for f in sorted(seg.alerts))
        assert s.best_score == max((m[1] for m in matched), default=None)


@settings(max_examples=400)
@given(
    hits=st.integers(1, 4),
    extra=st.integers(0, 3),
    gaps=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 4)), max_size=12),
)
def test_one_face_in_view_alerts_by_k_of_n(
    hits: int, extra: int, gaps: list[tuple[int, int]]
) -> None:
    # One face in every frame; between its matches (subject "A", score s/10) lie
    # `gap` unmatched frames, so gaps near the window's size are frequent.
    window = hits + extra
    pattern: list[int | None] = []
    for gap, score in gaps:
        pattern += [None] * gap + [score]
    pattern += [None] * 3
    tracker = Tracker(TrackerConfig(confirm_hits=hits, confirm_window=window))
    alert_at = next(
        (
            f
            for f, s in enumerate(pattern)
            if s is not None
            and sum(p is not None for p in pattern[max(0, f - window + 1) : f + 1])
            >= hits
        ),
        None,
    )
    stored = None if alert_at is None else pattern[alert_at]
    for f, s in enumerate(pattern):
        match: Match = None if s is None else ("A", s / 10)
        box = np.array([[f, 0, f + SIZE, SIZE]], np.float32)
        [d] = tracker.update(f, T0 + timedelta(seconds=f), box, [match])
        assert d.track_id == 0
        assert d.alert == (f == alert_at)
        best = (
            alert_at is not None
            and f > alert_at
            and s is not None
            and stored is not None
            and s > stored
        )
        assert d.best == best
        if best:
            stored = s
        assert d.keep == (d.alert or d.best)
