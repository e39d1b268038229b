"""Face tracking: one person walking past the camera gives one alert, not one a frame.

:class:`Tracker` follows faces from frame to frame by the overlap of their boxes and
turns per-face watchlist matches into per-person decisions. The live pipeline calls
:meth:`Tracker.update` once per processed frame, after detection, the quality gate,
embedding and one watchlist search, with every face's box and its best match above
the deployment's threshold (or ``None``). It gets back one :class:`FaceDecision` per
face that says which track the face belongs to, whether the face raises an alert and
whether its crop is kept.

How a frame is handled:

1. Tracks not seen for more than :attr:`TrackerConfig.max_missed` frames end.
2. Faces are assigned to live tracks greedily by intersection over union (IoU) of
   the face's box with the track's last box, highest IoU first (ties: older track,
   then earlier face), pairs below :attr:`TrackerConfig.iou_threshold` never.
   Every face left over starts a new track.
3. For a face matched to subject ``s`` the track counts its matched frames of ``s``
   within the last :attr:`TrackerConfig.confirm_window` frames (this one included);
   the first time that count reaches :attr:`TrackerConfig.confirm_hits` the face
   alerts (k-of-n confirmation). Each ``(track, subject)`` pair alerts at most once.
4. After that frame's faces are placed, tracks missed for more than ``max_missed``
   frames in a row end; :meth:`Tracker.ended` reports them.

All frame counts (``max_missed``, ``confirm_window``) are in frame indices: frames
the pipeline skips count as frames, as they do for the person walking on.

**A change of subject inside one track** (the person matched A for a while, then
B; or the matches flicker between two similar watchlist entries) is counted per
subject: frames matched to A do not count towards B, so a track that flickers may
confirm neither. A track that confirms A and later confirms B alerts twice, once
for each subject, so that a human reviews both candidates. A subject already
alerted by a track never alerts again in that track, however long it lasts; a new
track (the person left the view for more than ``max_missed`` frames) may alert
again.

**What a track holds (privacy).** No pixels and no embeddings: only the face's last
box (for the overlap test), the frame indices and times of its first and last
detection, the number of frames it was seen and matched, the frame indices of its
recent matches per subject (the last ``confirm_window`` frames only), and, per
alerted subject, the best score stored so far. For a person who never matches the
watchlist that is their last box, two frame indices and times and a count, kept
only until the track ends; :class:`TrackSummary` keeps no box at all.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

import numpy as np
import numpy.typing as npt

__all__ = ["FaceDecision", "TrackSummary", "Tracker", "TrackerConfig", "iou_matrix"]

F64 = npt.NDArray[np.float64]

# Evaluated at run time (Python 3.9 has no ``X | None`` outside annotations).
Match = Optional[tuple[str, float]]
"""A face's best watchlist match above threshold, ``(subject_id, score)``, or None."""


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


@dataclass(frozen=True)
class TrackerConfig:
    """How faces are followed and when a track alerts.

    The defaults suit 25 fps video of people walking towards a camera: a face's box
    moves a few pixels per frame, so consecutive boxes overlap far more than 0.3;
    a face may be lost for a fifth of a second (a missed detection, a face turned
    away, a quality-gate reject) and keep its track; and two matched frames among
    five are needed before an operator is disturbed, which suppresses most single
    frame false matches at little delay.

    Attributes:
        iou_threshold: Least intersection over union, in ``(0, 1]``, between a
            face's box and a track's last box for the face to continue the track.
        max_missed: Frames in a row, ``>= 0``, a track survives without a face: a
            face that reappears after at most this many frames continues its
            track, after more it starts a new one.
        confirm_hits: ``k`` of the k-of-n rule, ``>= 1``: matched frames of the
            same subject needed for an alert.
        confirm_window: ``n`` of the k-of-n rule, ``>= confirm_hits``: the
            matches counted are those in the last ``n`` frame indices, the
            current one included.

    Raises:
        TypeError: A value is not an int (``iou_threshold``: not a real number).
        ValueError: A value is outside its range.

    Examples:
        >>> from lfr.tracking import TrackerConfig
        >>> TrackerConfig(confirm_hits=3, confirm_window=10).max_missed
        5
        >>> TrackerConfig(confirm_hits=6, confirm_window=5)
        Traceback (most recent call last):
        ...
        ValueError: confirm_window must be >= confirm_hits (6), got 5
    """

    iou_threshold: float = 0.3
    max_missed: int = 5
    confirm_hits: int = 2
    confirm_window: int = 5

    def __post_init__(self) -> None:
        iou = self.iou_threshold
        if isinstance(iou, bool) or not isinstance(iou, numbers.Real):
            raise TypeError(
                f"iou_threshold must be a real number, got {type(iou).__name__}"
            )
        if not (math.isfinite(iou) and 0.0 < iou <= 1.0):
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou}")
        object.__setattr__(self, "iou_threshold", float(iou))
        missed = _as_int(self.max_missed, "max_missed")
        hits = _as_int(self.confirm_hits, "confirm_hits")
        window = _as_int(self.confirm_window, "confirm_window")
        if missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {missed}")
        if hits < 1:
            raise ValueError(f"confirm_hits must be >= 1, got {hits}")
        if window < hits:
            raise ValueError(
                f"confirm_window must be >= confirm_hits ({hits}), got {window}"
            )
        object.__setattr__(self, "max_missed", missed)
        object.__setattr__(self, "confirm_hits", hits)
        object.__setattr__(self, "confirm_window", window)


@dataclass(frozen=True)
class FaceDecision:
    """What to do with one face of a frame.

    How the pipeline uses it: when ``alert`` is true it stores the face's crop as a
    new alert for ``(track_id, subject_id)``; when ``best`` is true it replaces the
    crop of that same alert with this face's, which matched the subject better than
    the stored one; when :attr:`keep` is false (every other face, matched or not) it
    wipes the face's crop, chip and embedding at once.

    Attributes:
        track_id: The track the face belongs to (unique within a :class:`Tracker`).
        subject_id: The subject the face matched above threshold, or None. Set
            for every match, also before the track confirms it (``alert`` false):
            a match is not an alert, and the pipeline shows or stores a face
            only for a subject its track has alerted (:mod:`lfr.pipeline.frame_step`).
        score: That match's score, or None.
        alert: This face confirms ``subject_id`` for its track under the k-of-n
            rule: true exactly once per track and subject, on the first frame the
            rule is met.
        best: The track has already alerted ``subject_id`` (on an earlier frame)
            and this face matches it with a higher score than every face kept for
            that alert so far. Never true on the alert frame itself.
    """

    track_id: int
    subject_id: str | None
    score: float | None
    alert: bool = False
    best: bool = False

    def __post_init__(self) -> None:
        if (self.subject_id is None) != (self.score is None):
            raise ValueError("subject_id and score must both be set or both be None")
        if (self.alert or self.best) and self.subject_id is None:
            raise ValueError("an unmatched face cannot alert or be best")
        if self.alert and self.best:
            raise ValueError("a face cannot be both the alert and a later best")

    @property
    def keep(self) -> bool:
        """Whether the pipeline stores this face's crop (``alert or best``)."""
        return self.alert or self.best


@dataclass(frozen=True)
class TrackSummary:
    """A track that has ended: counts, ids and times only, no boxes, no pixels.

    Attributes:
        track_id: The track's id.
        first_frame: Frame index of its first face.
        last_frame: Frame index of its last face.
        first_time: Time of its first face.
        last_time: Time of its last face.
        frames: Number of frames the track had a face in.
        matched: Number of those faces that matched some subject.
        subjects: Subjects the track alerted, in the order of their alerts.
        best_score: Highest match score of any of its faces, or None if no face
            matched.
    """

    track_id: int
    first_frame: int
    last_frame: int
    first_time: datetime
    last_time: datetime
    frames: int
    matched: int
    subjects: tuple[str, ...] = ()
    best_score: float | None = None

    @property
    def subject(self) -> str | None:
        """The first subject the track alerted, or None if it never alerted."""
        return self.subjects[0] if self.subjects else None


@dataclass
class _Track:
    track_id: int
    box: F64
    first_frame: int
    first_time: datetime
    last_frame: int
    last_time: datetime
    frames: int = 1
    matched: int = 0
    best_score: float | None = None
    # subject -> frame indices of its matches within the confirmation window.
    hits: dict[str, deque[int]] = field(default_factory=dict)
    # alerted subject -> best score of the faces kept for that alert.
    alerted: dict[str, float] = field(default_factory=dict)

    def summary(self) -> TrackSummary:
        return TrackSummary(
            track_id=self.track_id,
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            first_time=self.first_time,
            last_time=self.last_time,
            frames=self.frames,
            matched=self.matched,
            subjects=tuple(self.alerted),
            best_score=self.best_score,
        )


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> F64:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Args:
        a: ``[m, 4]`` boxes ``(x1, y1, x2, y2)``.
        b: ``[n, 4]`` boxes.

    Returns:
        ``float64[m, n]``; 0 where both boxes have no area.
    """
    p = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    q = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(p[:, None, :2], q[None, :, :2])
    hi = np.minimum(p[:, None, 2:], q[None, :, 2:])
    inter: F64 = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_q = (q[:, 2] - q[:, 0]) * (q[:, 3] - q[:, 1])
    union = area_p[:, None] + area_q[None, :] - inter
    out: F64 = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _check_matches(matches: Sequence[Match], n: int) -> list[Match]:
    if isinstance(matches, (str, bytes)) or not isinstance(matches, Sequence):
        raise TypeError("matches must be a sequence of (subject_id, score) or None")
    if len(matches) != n:
        raise ValueError(
            f"matches must have one entry per box ({n}), got {len(matches)}"
        )
    checked: list[Match] = []
    for i, match in enumerate(matches):
        if match is None:
            checked.append(None)
            continue
        if not isinstance(match, tuple) or len(match) != 2:
            raise TypeError(f"matches[{i}] must be a (subject_id, score) tuple or None")
        subject, score = match
        if not isinstance(subject, str):
            raise TypeError(f"matches[{i}]: subject_id must be a str")
        if not subject:
            raise ValueError(f"matches[{i}]: subject_id must not be empty")
        if isinstance(score, bool) or not isinstance(score, numbers.Real):
            raise TypeError(f"matches[{i}]: score must be a real number")
        if not math.isfinite(score):
            raise ValueError(f"matches[{i}]: score must be finite")
        checked.append((subject, float(score)))
    return checked


def _check_boxes(boxes: npt.NDArray[np.float32]) -> F64:
    if not isinstance(boxes, np.ndarray):
        raise TypeError(f"boxes must be a numpy array, got {type(boxes).__name__}")
    if not np.issubdtype(boxes.dtype, np.floating) and not np.issubdtype(
        boxes.dtype, np.integer
    ):
        raise TypeError(f"boxes must be a real-valued array, got {boxes.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (n, 4), got {boxes.shape}")
    out = boxes.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError("boxes contain NaN or infinity")
    if ((out[:, 2] < out[:, 0]) | (out[:, 3] < out[:, 1])).any():
        raise ValueError("boxes must have x1 <= x2 and y1 <= y2")
    return out


class Tracker:
    """Follows faces across frames and applies the k-of-n alert rule per track.

    Not thread-safe: one tracker per camera stream, fed in frame order.

    Args:
        config: Association and confirmation settings; the defaults when None.

    Raises:
        TypeError: ``config`` is not a :class:`TrackerConfig`.

    Examples:
        >>> from datetime import datetime, timedelta, timezone
        >>> import numpy as np
        >>> from lfr.tracking import Tracker
        >>> tracker = Tracker()
        >>> t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
        >>> for i in range(3):  # one face drifting right, matched every frame
        ...     box = np.array([[100 + 4 * i, 50, 180 + 4 * i, 150]], np.float32)
        ...     [d] = tracker.update(i, t0 + timedelta(seconds=i / 25), box,
        ...                          [("S-17", 0.61 + 0.01 * i)])
        ...     print(d.track_id, d.alert, d.best, d.keep)
        0 False False False
        0 True False True
        0 False True True
        >>> tracker.flush()
        >>> [(s.track_id, s.frames, s.subjects) for s in tracker.ended()]
        [(0, 3, ('S-17',))]
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        if config is None:
            config = TrackerConfig()
        if not isinstance(config, TrackerConfig):
            raise TypeError(
                f"config must be a TrackerConfig, got {type(config).__name__}"
            )
        self._config = config
        self._tracks: list[_Track] = []
        self._ended: list[TrackSummary] = []
        self._next_id = 0
        self._last_frame: int | None = None
        self._last_time: datetime | None = None

    @property
    def config(self) -> TrackerConfig:
        """The settings in use."""
        return self._config

    @property
    def active(self) -> int:
        """Number of live tracks (seen within the last ``max_missed + 1`` frames)."""
        return len(self._tracks)

    def update(
        self,
        frame_index: int,
        time: datetime,
        boxes: npt.NDArray[np.float32],
        matches: Sequence[tuple[str, float] | None],
    ) -> list[FaceDecision]:
        """Places one frame's faces on tracks and decides which to keep.

        Call it for every processed frame, also for frames without faces (with an
        empty ``(0, 4)`` array), so that missed frames are counted and tracks end.
        The tracker's state is unchanged when it raises.

        Args:
            frame_index: The frame's index in the stream, greater than the previous
                call's. Gaps count as frames without faces.
            time: When the frame was captured: an aware datetime, not earlier than
                the previous call's.
            boxes: ``[n, 4]`` face boxes ``(x1, y1, x2, y2)`` in frame pixels
                (float32 from :class:`~lfr.detect.Detections`; any real dtype works).
            matches: For each box, its best watchlist match already compared with
                the threshold: ``(subject_id, score)`` or None when no subject
                scored above it.

        Returns:
            One decision per face, in the order of ``boxes``.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: ``frame_index`` or ``time`` goes backwards, ``time`` is
                naive, ``boxes`` is not ``(n, 4)``, finite and ordered, ``matches``
                has not ``n`` entries, or a score is not finite.
        """
        frame = self._check_frame(frame_index, time)
        box_array = _check_boxes(boxes)
        checked = _check_matches(matches, box_array.shape[0])
        # Validation done: from here on the state changes.
        self._last_frame, self._last_time = frame, time
        cfg = self._config
        self._end(lambda t: frame - t.last_frame - 1 > cfg.max_missed)
        owners = self._associate(box_array)
        decisions: list[FaceDecision] = []
        for i, match in enumerate(checked):
            track = owners[i]
            if track is None:
                track = _Track(
                    track_id=self._next_id,
                    box=box_array[i].copy(),
                    first_frame=frame,
                    first_time=time,
                    last_frame=frame,
                    last_time=time,
                )
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.box = box_array[i].copy()
                track.last_frame, track.last_time = frame, time
                track.frames += 1
            decisions.append(self._decide(track, frame, match))
        self._end(lambda t: frame - t.last_frame > cfg.max_missed)
        return decisions

    def ended(self) -> list[TrackSummary]:
        """The tracks that ended since the previous call, in the order they ended.

        Returns:
            Their summaries; the tracker forgets them.
        """
        out, self._ended = self._ended, []
        return out

    def flush(self) -> None:
        """Ends every live track (end of the stream); :meth:`ended` reports them.

        Later frames start new tracks; frame indices must still increase.
        """
        self._end(lambda t: True)

    def _check_frame(self, frame_index: int, time: datetime) -> int:
        frame = _as_int(frame_index, "frame_index")
        if frame < 0:
            raise ValueError(f"frame_index must be >= 0, got {frame}")
        if self._last_frame is not None and frame <= self._last_frame:
            raise ValueError(
                f"frame_index must increase: got {frame} after {self._last_frame}"
            )
        if not isinstance(time, datetime):
            raise TypeError(f"time must be a datetime, got {type(time).__name__}")
        if time.tzinfo is None or time.utcoffset() is None:
            raise ValueError("time must be timezone-aware")
        if self._last_time is not None and time < self._last_time:
            raise ValueError("time must not go backwards")
        return frame

    def _end(self, done: Callable[[_Track], bool]) -> None:
        keep: list[_Track] = []
        for track in self._tracks:
            if done(track):
                self._ended.append(track.summary())
            else:
                keep.append(track)
        self._tracks = keep

    def _associate(self, boxes: F64) -> list[_Track | None]:
        """The live track each box continues (None: a new track), greedy by IoU."""
        owners: list[_Track | None] = [None] * boxes.shape[0]
        if not self._tracks or not boxes.shape[0]:
            return owners
        last = np.stack([t.box for t in self._tracks])
        iou = iou_matrix(last, boxes)
        rows, cols = np.nonzero(iou >= self._config.iou_threshold)
        # Highest IoU first; ties: older track (lower row), then earlier box.
        order = np.lexsort((cols, rows, -iou[rows, cols]))
        used_tracks: set[int] = set()
        for k in order:
            r, c = int(rows[k]), int(cols[k])
            if r in used_tracks or owners[c] is not None:
                continue
            used_tracks.add(r)
            owners[c] = self._tracks[r]
        return owners

    def _decide(self, track: _Track, frame: int, match: Match) -> FaceDecision:
        cfg = self._config
        oldest = frame - cfg.confirm_window + 1
        for subject in list(track.hits):
            recent = track.hits[subject]
            while recent and recent[0] < oldest:
                recent.popleft()
            if not recent:
                del track.hits[subject]
        if match is None:
            return FaceDecision(track.track_id, None, None)
        subject, score = match
        track.matched += 1
        if track.best_score is None or score > track.best_score:
            track.best_score = score
        if subject in track.alerted:
            best = score > track.alerted[subject]
            if best:
                track.alerted[subject] = score
            return FaceDecision(track.track_id, subject, score, best=best)
        recent = track.hits.setdefault(subject, deque())
        recent.append(frame)
        if len(recent) < cfg.confirm_hits:
            return FaceDecision(track.track_id, subject, score)
        del track.hits[subject]
        track.alerted[subject] = score
        return FaceDecision(track.track_id, subject, score, alert=True)
