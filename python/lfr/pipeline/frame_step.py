"""The per-frame step: detect, gate, embed, match, track, and hand alerts over.

:class:`FrameStep` runs on the deployment's processing thread. For one frame it
detects faces, applies the quality gate, embeds the faces that pass into one
secure buffer, searches the watchlist once for all of them, follows them across
frames (:class:`lfr.Tracker`), and for a track that alerts (or a better view of
one) copies the face with a margin into a fresh secure buffer and hands it to the
alert writer (:mod:`lfr.pipeline.writer`). Every other face's embedding is wiped
with the batch buffer; the frame's pooled buffer goes back to its source after
the step. The step holds no pixels between frames.

**What the operator preview shows sharp.** A match is not an alert: the tracker
reports the subject of every face that scored above the threshold, also before
its k-of-n rule is met, and a single-frame false match of a passer-by is exactly
what that rule suppresses. The preview therefore shows a face sharp, labelled
with a subject id, only when the face matched a subject that its track has
*alerted*, and that alert is stored (``alert_stored``, the writer's
:meth:`~lfr.pipeline.writer.AlertWriter.stored`): not on the frames before the
confirmation, not on the alert's own frame (its write is still queued), not for
an alert whose write failed, and not for a second subject the same track matched
but did not confirm. Every other face is blurred like a passer-by's, and its
subject id is drawn nowhere.
"""

from __future__ import annotations

import time as _time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from lfr.detect import Detections
from lfr.matcher import Matcher
from lfr.pipeline.stats import Counts
from lfr.protocols import Detector, Embedder, Renderer
from lfr.quality import QualityGate
from lfr.secure import SecureBuffer
from lfr.sources import Frame
from lfr.tracking import Tracker
from lfr.watchlist import Watchlist

__all__ = ["BATCH", "CROP_MARGIN", "FrameStep", "Handover"]

#: Faces embedded per frame at most (larger crowds are embedded in several batches).
BATCH = 16
#: How far around a face box the stored crop reaches, per side, in box sizes.
CROP_MARGIN = 0.25


@dataclass
class Handover:
    """Work for the alert writer (no subject in any repr).

    ``kind`` is ``"alert"`` (a new alert, with the id it will be stored under),
    ``"improve"`` (a better view of the track's alert) or ``"ended"`` (a track
    that alerted has ended). ``crop`` is a secure buffer the writer discards.
    """

    kind: str
    track: tuple[int, str]
    alert_id: str = ""
    score: float = 0.0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    crop: SecureBuffer | None = None
    shape: tuple[int, int, int] = (0, 0, 3)
    time: datetime | None = None
    captured: float = 0.0

    def __repr__(self) -> str:
        return f"Handover({self.kind!r}, track={self.track[0]}, id={self.alert_id!r})"

    def discard(self) -> None:
        """Wipes and frees the crop (idempotent)."""
        if self.crop is not None:
            self.crop.discard()
            self.crop = None


class FrameStep:
    """One frame through detection, gate, embedding, matching and tracking.

    Args:
        detector: Finds faces.
        embedder: Embeds them (its model must be the watchlist's).
        gate: The quality gate.
        tracker: Follows faces across frames.
        watchlist: Names the matcher's rows.
        matcher: The watchlist's matcher (:meth:`lfr.Watchlist.matcher`).
        threshold: Cosine similarity at or above which a face matches.
        hand_over: Takes each :class:`Handover` (the writer's queue).
        preview: Draws each frame with passers-by blurred, or None.
        alert_stored: Whether a ``(track id, subject)`` pair's alert is stored
            (:meth:`lfr.pipeline.writer.AlertWriter.stored`); only such faces
            are shown sharp. None: an alert counts as stored once it is handed
            over (for a ``hand_over`` that stores synchronously).
    """

    def __init__(
        self,
        *,
        detector: Detector,
        embedder: Embedder,
        gate: QualityGate,
        tracker: Tracker,
        watchlist: Watchlist,
        matcher: Matcher,
        threshold: float,
        hand_over: Callable[[Handover], None],
        preview: Renderer | None = None,
        alert_stored: Callable[[tuple[int, str]], bool] | None = None,
    ) -> None:
        self._detector = detector
        self._embedder = embedder
        self._gate = gate
        self._tracker = tracker
        self._watchlist = watchlist
        self._matcher = matcher
        self._threshold = threshold
        self._hand_over = hand_over
        self._preview = preview
        self._alert_stored = alert_stored
        self._vectors = SecureBuffer(BATCH * embedder.dim * 4)
        # The (track, subject) pairs that alerted.
        self._alerted: set[tuple[int, str]] = set()

    def run(self, frame: Frame, counts: Counts) -> float:
        """Processes one frame; adds to ``counts``; returns its latency in ms."""
        image = frame.image
        faces = self._detector.detect(image)
        n = len(faces)
        passed: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        if n:
            passed = np.flatnonzero(self._gate.assess(image, faces).passed)
        kept = faces[passed]
        matches = self._match(image, kept)
        decisions = self._tracker.update(frame.index, frame.time, kept.boxes, matches)
        for summary in self._tracker.ended():  # tracks hold no pixels
            for track in [t for t in self._alerted if t[0] == summary.track_id]:
                self._alerted.discard(track)
                self._hand_over(Handover("ended", track))
        raised = 0
        for decision, box in zip(decisions, kept.boxes):
            if decision.subject_id is None or decision.score is None:
                continue
            track = (decision.track_id, decision.subject_id)
            if decision.alert:
                self._alerted.add(track)
                self._crop("alert", track, image, frame, box, decision.score)
                raised += 1
            elif decision.best and track in self._alerted:
                # A better view of an alerted face: it replaces the stored crop.
                self._crop("improve", track, image, frame, box, decision.score)
        if self._preview is not None:
            keep = np.zeros(n, bool)
            labels: list[str | None] = [None] * n
            for i, d in zip(passed, decisions):
                if self._shown_sharp(d.track_id, d.subject_id):
                    keep[i] = True
                    labels[i] = d.subject_id
            self._preview.render(image, faces.boxes, keep, labels)
        del image
        counts.frames += 1
        counts.faces += n
        counts.skipped += n - len(kept)
        counts.alerts += raised
        counts.wiped += len(kept) - raised
        return (_time.monotonic() - frame.captured) * 1e3

    def _shown_sharp(self, track_id: int, subject: str | None) -> bool:
        """Whether the preview shows a face sharp: its track's stored alert.

        A match that has not (yet) confirmed, or whose alert was not stored, is
        blurred like any passer-by (see the module's docstring).
        """
        if subject is None:
            return False
        track = (track_id, subject)
        if track not in self._alerted:
            return False
        return self._alert_stored is None or self._alert_stored(track)

    def finish(self) -> None:
        """Ends every track (their writer entries) and wipes the batch buffer."""
        self._tracker.flush()
        self._tracker.ended()
        self._vectors.discard()

    def _match(
        self, image: npt.NDArray[np.uint8], faces: Detections
    ) -> list[tuple[str, float] | None]:
        """The best subject at or above the threshold for each face, or None."""
        out: list[tuple[str, float] | None] = []
        dim = self._embedder.dim
        for start in range(0, len(faces), BATCH):
            part = faces[start : start + BATCH]
            vectors = self._vectors.array(np.float32, (len(part), dim))
            try:
                self._embedder.embed(image, part, out=vectors)
                ids, scores = self._matcher.search(vectors, k=1)
            finally:
                del vectors
                self._vectors.wipe()
            subjects = self._watchlist.subject_ids(ids[:, 0])
            for subject, score in zip(subjects, scores[:, 0]):
                ok = subject is not None and float(score) >= self._threshold
                out.append((subject, float(score)) if ok and subject else None)
        return out

    def _crop(
        self,
        kind: str,
        track: tuple[int, str],
        image: npt.NDArray[np.uint8],
        frame: Frame,
        box: npt.NDArray[np.float32],
        score: float,
    ) -> None:
        """Copies the face (with a margin) into a secure buffer for the writer."""
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
        left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
        right, bottom = min(w, int(x2 + mx) + 1), min(h, int(y2 + my) + 1)
        shape = (bottom - top, right - left, 3)
        buf = SecureBuffer(max(1, shape[0] * shape[1] * 3))
        crop = buf.array(np.uint8, shape)
        np.copyto(crop, image[top:bottom, left:right])
        del crop
        self._hand_over(
            Handover(
                kind,
                track,
                str(uuid.uuid4()) if kind == "alert" else "",
                score,
                (x1, y1, x2, y2),
                buf,
                shape,
                frame.time,
                frame.captured,
            )
        )
