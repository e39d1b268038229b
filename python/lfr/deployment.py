"""A live deployment: frames in, alerts out, every non-match wiped, everything audited.

:class:`Deployment` ties lfr's pieces together. A processing thread takes frames
from a source (:func:`lfr.open_source`; for cameras and network streams the source's
own reader thread captures, newest frame wins) and, per frame:

1. detects faces (:class:`~lfr.FaceDetector`) and applies the quality gate
   (faces it cannot judge are counted as skipped and wiped);
2. embeds the faces that pass, into secure memory, in one batch;
3. searches the watchlist's matcher once for all of them;
4. follows faces across frames (:class:`~lfr.Tracker`): a person walking past gives
   one alert per track, once ``k`` of their last ``n`` frames matched;
5. for an alert: cuts the face crop into secure memory, encrypts it into the
   :class:`~lfr.AlertStore`, writes ``alert_raised`` to the audit log, then wipes
   (on a writer thread, so disk syncs never hold up the frames); every other face
   is wiped at once;
6. wipes the frame (its pooled buffer goes back to the source).

It also purges expired alerts every ``policy.purge_interval`` (auditing each),
writes counters to the audit log every ``counters_interval`` and at the end, audits
stream losses and recoveries, and at the end destroys the in-memory watchlist and
audits that. Nothing biometric reaches the log.

Example:
    >>> with lfr.Deployment(source="cam.mp4", watchlist=wl, store=store,
    ...                     audit="audit.log", signing_key=signing_key,
    ...                     camera_id="cam-1", location="High St",
    ...                     purpose="wanted persons", authorised_by="Supt X"
    ...                     ) as dep:  # doctest: +SKIP
    ...     for alert in dep.alerts():
    ...         print(alert.subject_id, alert.score)
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time as _time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr import __version__
from lfr.alerts import Alert, AlertStore, Decision
from lfr.audit import AuditLog, SigningKey
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import LfrError, RetentionError
from lfr.quality import QualityGate
from lfr.retention import RetentionPolicy
from lfr.secure import SecureBuffer, memory_status
from lfr.sources import Frame, FrameSource, open_source
from lfr.tracking import Tracker, TrackerConfig
from lfr.watchlist import Watchlist

__all__ = ["DEFAULT_THRESHOLD", "Deployment", "DeploymentError", "DeploymentStats"]

_log = logging.getLogger(__name__)

#: Cosine similarity at which the default embedder's false-positive identification
#: rate was 1% on lfw-dev with 208 enrolled identities (docs/accuracy.md). A force
#: must calibrate its own threshold for its watchlist size (``lfr eval``).
DEFAULT_THRESHOLD = 0.945
#: Faces embedded per frame at most (larger crowds are embedded in several batches).
_BATCH = 16
#: How far around a face box the stored crop reaches, per side, in box sizes.
_CROP_MARGIN = 0.25
_LATENCIES = 2048
#: Alerts waiting for the writer thread at most (then processing waits).
_WRITES = 16


class DeploymentError(LfrError):
    """The deployment could not start, or stopped because of an error.

    The message says what failed; everything stored before it is intact.
    """


@dataclass(frozen=True)
class DeploymentStats:
    """Counts and rates since the deployment started (no biometric data).

    Attributes:
        frames: Frames processed.
        drops: Frames the source dropped because processing was slower (live).
        faces: Faces detected.
        skipped: Faces the quality gate skipped (wiped).
        wiped: Faces that did not lead to an alert (wiped at once), skipped ones
            not included.
        alerts: Alerts raised.
        fps: Frames processed per second of running time.
        latency_p50_ms: Median capture-to-decision time per frame, in ms.
        latency_p95_ms: Its 95th percentile.
        alert_latency_p95_ms: 95th percentile capture-to-alert time (stored and
            audited), or None without alerts.
        running: Whether the processing thread is still running.
    """

    frames: int
    drops: int
    faces: int
    skipped: int
    wiped: int
    alerts: int
    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    alert_latency_p95_ms: float | None
    running: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class _Write:
    """Work for the writer thread.

    An alert to store (``alert``) or a better view of one (``improve``), with its
    crop in a secure buffer that the writer discards; or a track that ended.
    """

    kind: str
    track: tuple[int, str]
    score: float = 0.0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    crop: SecureBuffer | None = None
    shape: tuple[int, int, int] = (0, 0, 3)
    time: Any = None
    captured: float = 0.0


@dataclass
class _Counts:
    frames: int = 0
    faces: int = 0
    skipped: int = 0
    wiped: int = 0
    alerts: int = 0
    drops: int = 0

    def minus(self, other: _Counts) -> _Counts:
        return _Counts(**{k: v - getattr(other, k) for k, v in self.__dict__.items()})


@dataclass
class _Latencies:
    frame: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))
    alert: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))


def _box(box: npt.NDArray[np.float32]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def _percentile(values: deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


class Deployment:
    """Runs a watchlist against a source of frames, with alerts and an audit trail.

    Args:
        source: What :func:`lfr.open_source` takes (camera index, file, URL,
            folder, iterable of frames), or an open :class:`~lfr.FrameSource`.
        watchlist: The watchlist; its templates must come from ``embedder``.
        store: Where alerts go.
        audit: The audit log: a path (created, or continued if it exists; needs
            ``signing_key``) or an open :class:`~lfr.AuditLog`.
        policy: Retention policy (default: the store's).
        threshold: Cosine similarity at or above which a face matches
            (default :data:`DEFAULT_THRESHOLD`; calibrate it with ``lfr eval``).
        camera_id: The camera's id, in alerts and the log.
        location: Where (a label for the published record).
        purpose: Why (for example "wanted persons").
        authorised_by: The officer who authorised the deployment.
        signing_key: The audit key (a :class:`~lfr.SigningKey` or its file) when
            ``audit`` is a path.
        deployment_id: Default: a new uuid.
        detector: Default: ``FaceDetector()``.
        embedder: Default: ``FaceEmbedder()``.
        gate: Default: ``QualityGate()``.
        tracking: How faces are followed and when a track alerts.
        on_alert: Called with each :class:`~lfr.Alert` (from the processing
            thread; keep it short).
        preview: An object with ``render(frame, boxes, keep, labels)`` and
            ``close()`` (:class:`lfr.preview.Preview`), or None.
        counters_interval: How often counts go to the audit log.
        destroy_watchlist: Wipe the in-memory watchlist when the deployment ends
            (and audit it). The file stays; see docs/watchlists.md.
        allow_unlocked: Run even where memory cannot be locked (audited as an
            anomaly).
        every: Process every n-th frame of file and folder sources.

    Raises:
        DeploymentError: From :meth:`start`, when it cannot start (a source that
            cannot be opened, a watchlist made with another embedder, an audit log
            that does not verify). Nothing is stored then; if the audit log was
            already open, the failed start is audited (an anomaly, then
            ``deployment_stopped``).
    """

    def __init__(
        self,
        *,
        source: Any,
        watchlist: Watchlist,
        store: AlertStore,
        audit: AuditLog | str | os.PathLike[str],
        policy: RetentionPolicy | None = None,
        threshold: float | None = None,
        camera_id: str = "cam-1",
        location: str = "unspecified",
        purpose: str = "unspecified",
        authorised_by: str = "unspecified",
        signing_key: SigningKey | str | os.PathLike[str] | None = None,
        deployment_id: str | None = None,
        detector: FaceDetector | None = None,
        embedder: FaceEmbedder | None = None,
        gate: QualityGate | None = None,
        tracking: TrackerConfig | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        preview: Any = None,
        counters_interval: timedelta = timedelta(seconds=60),
        destroy_watchlist: bool = True,
        allow_unlocked: bool = False,
        every: int = 1,
    ) -> None:
        self._threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not -1.0 <= self._threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        self._watchlist = watchlist
        self._store = store
        self._policy = policy or store.policy
        self._camera_id = camera_id
        self._location, self._purpose, self._authorised_by = (
            location,
            purpose,
            authorised_by,
        )
        self._deployment_id = deployment_id or str(uuid.uuid4())
        self._on_alert = on_alert
        self._preview = preview
        self._counters_interval = counters_interval
        self._destroy_watchlist = destroy_watchlist
        self._allow_unlocked = allow_unlocked
        self._source_spec, self._every = source, every
        self._signing_key = signing_key
        self._audit_spec = audit
        self._detector = detector
        self._embedder = embedder
        self._gate = gate or QualityGate()
        self._tracker = Tracker(tracking)
        self._alerts: queue.Queue[Alert | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = _Counts()
        self._logged = _Counts()
        self._latency = _Latencies()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._log: AuditLog | None = None
        self._source: FrameSource | None = None
        self._matcher: Any = None
        self._vectors: SecureBuffer | None = None
        self._closed = False
        self._audited_purges: set[str] = set()
        # Writer thread only: (track, subject) -> alert id, for better views.
        self._track_alerts: dict[tuple[int, str], str] = {}
        # Processing thread only: the (track, subject) pairs that alerted.
        self._alerted: set[tuple[int, str]] = set()
        self._writes: queue.Queue[_Write | None] = queue.Queue(maxsize=_WRITES)
        self._writer: threading.Thread | None = None

    # -- properties --------------------------------------------------------------------

    @property
    def deployment_id(self) -> str:
        """This deployment's id (in alerts and the audit log)."""
        return self._deployment_id

    @property
    def threshold(self) -> float:
        """The match threshold (cosine similarity)."""
        return self._threshold

    @property
    def audit_log(self) -> AuditLog | None:
        """The audit log, once started."""
        return self._log

    # -- starting and stopping ---------------------------------------------------------

    def start(self) -> Deployment:
        """Opens everything, audits the start and starts processing.

        Raises:
            DeploymentError: It cannot start (see the class).
        """
        if self._thread is not None or self._closed:
            raise DeploymentError("a deployment starts once")
        try:
            self._embedder = self._embedder or FaceEmbedder()
            self._watchlist.check_model(self._embedder.model_id)
            self._detector = self._detector or FaceDetector()
            self._log = self._open_log()
            self._audit_start()
            self._audit_purged_on_open()
            self._matcher = self._watchlist.matcher(allow_unlocked=self._allow_unlocked)
            self._vectors = SecureBuffer(_BATCH * self._embedder.dim * 4)
            self._purge()  # before the source opens: a live source starts at once
            self._source = self._open_source()
        except LfrError as exc:
            self._abort(exc)
            raise DeploymentError(f"the deployment cannot start: {exc}") from exc
        except (OSError, ValueError) as exc:
            self._abort(exc)
            raise DeploymentError(f"the deployment cannot start: {exc}") from exc
        self._started = _time.monotonic()
        self._writer = threading.Thread(
            target=self._write_alerts, name=f"lfr-alerts-{self._camera_id}", daemon=True
        )
        self._writer.start()
        self._thread = threading.Thread(
            target=self._run, name=f"lfr-deployment-{self._camera_id}", daemon=True
        )
        self._thread.start()
        return self

    def _open_log(self) -> AuditLog:
        if isinstance(self._audit_spec, AuditLog):
            return self._audit_spec
        key = self._signing_key
        if key is None:
            raise DeploymentError("an audit log path needs signing_key=")
        if not isinstance(key, SigningKey):
            key = SigningKey.load(key)
        path = Path(self._audit_spec)
        if path.exists():
            return AuditLog.open(path, key)
        return AuditLog.create(path, key)

    def _open_source(self) -> FrameSource:
        if isinstance(self._source_spec, FrameSource):
            return self._source_spec

        def event(name: str, info: dict[str, Any]) -> None:
            if name in ("stream_lost", "stream_recovered"):
                self._audit(
                    "anomaly",
                    kind=name,
                    camera_id=self._camera_id,
                    deployment_id=self._deployment_id,
                )

        return open_source(
            self._source_spec,
            every=self._every,
            on_event=event,
            allow_unlocked=self._allow_unlocked,
        )

    def _audit_start(self) -> None:
        wl = self._watchlist
        self._audit(
            "deployment_started",
            deployment_id=self._deployment_id,
            camera_ids=[self._camera_id],
            location=self._location,
            purpose=self._purpose,
            authorised_by=self._authorised_by,
            watchlist_sha256=wl.sha256,
            watchlist_size=len(wl),
            model_id=wl.model_id,
            threshold=self._threshold,
            policy=self._policy,
            lfr_version=__version__,
        )
        self._audit(
            "watchlist_loaded",
            deployment_id=self._deployment_id,
            watchlist_sha256=wl.sha256,
            watchlist_size=len(wl),
            model_id=wl.model_id,
        )
        memory = memory_status()
        if memory.memlock_headroom is not None and memory.memlock_headroom < (64 << 20):
            self._audit(
                "anomaly",
                kind="memory_not_lockable",
                detail=f"memlock headroom {memory.memlock_headroom} bytes",
                deployment_id=self._deployment_id,
            )

    def _audit_purged_on_open(self) -> None:
        """Alerts the store destroyed when it was opened, if nobody audited them."""
        for alert_id in getattr(self._store, "purged_on_open", ()):
            if alert_id not in self._audited_purges:
                self._audit("alert_purged", alert_id=alert_id)
                self._audited_purges.add(alert_id)

    def _abort(self, exc: BaseException) -> None:
        """Undoes a failed start: audits it if the log is open, closes what opened."""
        if self._log is not None:
            self._audit(
                "anomaly",
                kind="other",
                detail=f"start failed: {type(exc).__name__}",
                deployment_id=self._deployment_id,
            )
            self._audit(
                "deployment_stopped",
                deployment_id=self._deployment_id,
                reason="start failed",
            )
            if not isinstance(self._audit_spec, AuditLog):
                self._log.close()
        if self._vectors is not None:
            self._vectors.discard()
        self._closed = True

    def stop(self) -> None:
        """Asks the deployment to stop (any thread, any time); :meth:`close` waits."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()

    def close(self) -> None:
        """Stops, waits for the processing thread, audits the end and closes.

        Raises:
            DeploymentError: Processing had stopped because of an error (the
                deployment is closed and audited anyway).
        """
        if self._closed:
            return
        self.stop()
        if self._thread is not None:
            self._thread.join()
        if self._writer is not None:
            self._writer.join()
        self._closed = True
        try:
            self._finish()
        finally:
            if self._log is not None and not isinstance(self._audit_spec, AuditLog):
                self._log.close()
        if self._error is not None:
            raise DeploymentError(
                f"the deployment stopped after an error: {self._error}"
            ) from self._error

    def _finish(self) -> None:
        self._tracker.flush()
        self._tracker.ended()
        self._audit_counters()
        self._purge()
        reason = "error" if self._error is not None else "stopped"
        self._audit(
            "deployment_stopped", deployment_id=self._deployment_id, reason=reason
        )
        if self._source is not None:
            self._source.close()
        self._matcher = None
        if self._vectors is not None:
            self._vectors.discard()
        if self._preview is not None:
            self._preview.close()
        if self._destroy_watchlist:
            sha = self._watchlist.sha256
            self._watchlist.destroy()
            self._audit(
                "watchlist_destroyed",
                watchlist_sha256=sha,
                deployment_id=self._deployment_id,
            )

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- results -----------------------------------------------------------------------

    def alerts(self, timeout: float | None = None) -> Iterator[Alert]:
        """Alerts as they happen, until the deployment stops (or the source ends).

        Args:
            timeout: Stop waiting after this many seconds without an alert.
        """
        while True:
            try:
                alert = self._alerts.get(timeout=timeout)
            except queue.Empty:
                return
            if alert is None:
                self._alerts.put(None)  # for other iterators
                return
            yield alert

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the processing thread to end; returns whether it has.

        It ends when a file source is finished, or after :meth:`stop`.
        """
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> DeploymentStats:
        """Counts, frame rate and latency so far."""
        with self._lock:
            c = _Counts(**self._counts.__dict__)
            frame_lat = deque(self._latency.frame)
            alert_lat = deque(self._latency.alert)
        if self._source is not None:
            c.drops = self._source.stats.dropped
        end = self._ended or _time.monotonic()
        elapsed = end - self._started if self._started else 0.0
        return DeploymentStats(
            frames=c.frames,
            drops=c.drops,
            faces=c.faces,
            skipped=c.skipped,
            wiped=c.wiped,
            alerts=c.alerts,
            fps=c.frames / elapsed if elapsed > 0 else 0.0,
            latency_p50_ms=_percentile(frame_lat, 50),
            latency_p95_ms=_percentile(frame_lat, 95),
            alert_latency_p95_ms=_percentile(alert_lat, 95),
            running=self._thread is not None and self._thread.is_alive(),
        )

    def review(
        self, alert_id: str, reviewer: str, decision: Decision, note: str | None = None
    ) -> Alert:
        """Records a person's review of an alert, in the store and the audit log."""
        alert = self._store.review(alert_id, reviewer, decision, note)
        self._audit(
            "alert_reviewed", alert_id=alert_id, reviewer=reviewer, decision=decision
        )
        return alert

    # -- the processing thread ---------------------------------------------------------

    def _audit(self, event: str, **fields: Any) -> None:
        if self._log is not None:  # AuditLog is thread-safe
            self._log.append(event, **fields)

    def _run(self) -> None:
        source = self._source
        if source is None:
            raise RuntimeError("_run before start")
        last_counters = last_purge = _time.monotonic()
        try:
            frames = source.frames() if source.live else self._prefetched(source)
            for frame in frames:
                try:
                    self._process(frame)
                finally:
                    frame.release()
                now = _time.monotonic()
                if now - last_counters >= self._counters_interval.total_seconds():
                    self._audit_counters()
                    last_counters = now
                if now - last_purge >= self._policy.purge_interval.total_seconds():
                    self._purge()
                    last_purge = now
                if self._stop.is_set():
                    break
        except BaseException as exc:
            self._fail(exc, "processing stopped")
        finally:
            self._ended = _time.monotonic()
            self._writes.put(None)  # the writer ends alerts() once it is done

    def _prefetched(self, source: FrameSource) -> Iterator[Frame]:
        """A file, folder or iterable read ahead by a capture thread.

        Decoding the next frame then overlaps with processing this one (on the
        other core). The queue is bounded (two frames), so nothing is dropped
        and memory stays flat; live sources have their own reader thread and
        newest-wins mailbox instead.
        """
        ready: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=2)

        def capture() -> None:
            try:
                for frame in source.frames():
                    while not self._stop.is_set():
                        try:
                            ready.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    else:
                        frame.release()
                        return
            except BaseException as exc:
                ready.put(exc)
                return
            ready.put(None)

        reader = threading.Thread(
            target=capture, name=f"lfr-capture-{self._camera_id}", daemon=True
        )
        reader.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            source.stop()
            while reader.is_alive() or not ready.empty():
                try:
                    left = ready.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(left, Frame):
                    left.release()
            reader.join()

    def _process(self, frame: Frame) -> None:
        image = frame.image
        if self._detector is None:
            raise RuntimeError("_process before start")
        faces = self._detector.detect(image)
        n = len(faces)
        passed: npt.NDArray[np.intp] = np.zeros(0, np.intp)
        if n:
            passed = np.flatnonzero(self._gate.assess(image, faces).passed)
        kept = Detections(
            faces.boxes[passed].copy(),
            faces.scores[passed].copy(),
            faces.landmarks[passed].copy(),
        )
        matches = self._match(image, kept)
        decisions = self._tracker.update(frame.index, frame.time, kept.boxes, matches)
        for summary in self._tracker.ended():  # tracks hold no pixels
            for track in [t for t in self._alerted if t[0] == summary.track_id]:
                self._alerted.discard(track)
                self._writes.put(_Write("ended", track))
        raised = 0
        for decision, box in zip(decisions, kept.boxes):
            if decision.subject_id is None or decision.score is None:
                continue
            track = (decision.track_id, decision.subject_id)
            if decision.alert:
                self._alerted.add(track)
                self._hand_over("alert", track, image, frame, box, decision.score)
                raised += 1
            elif decision.best and track in self._alerted:
                # A better view of an alerted face: it replaces the stored crop.
                self._hand_over("improve", track, image, frame, box, decision.score)
        if self._preview is not None:
            keep = np.zeros(n, bool)
            labels: list[str | None] = [None] * n
            for i, d in zip(passed, decisions):
                keep[i] = d.subject_id is not None
                labels[i] = d.subject_id
            self._preview.render(image, faces.boxes, keep, labels)
        del image
        with self._lock:
            c = self._counts
            c.frames += 1
            c.faces += n
            c.skipped += n - len(kept)
            c.alerts += raised
            c.wiped += len(kept) - raised
            self._latency.frame.append((_time.monotonic() - frame.captured) * 1e3)

    def _match(
        self, image: npt.NDArray[np.uint8], faces: Detections
    ) -> list[tuple[str, float] | None]:
        """The best subject at or above the threshold for each face, or None."""
        if self._embedder is None or self._vectors is None:
            raise RuntimeError("_match before start")
        out: list[tuple[str, float] | None] = []
        dim = self._embedder.dim
        for start in range(0, len(faces), _BATCH):
            stop = min(len(faces), start + _BATCH)
            part = Detections(
                faces.boxes[start:stop].copy(),
                faces.scores[start:stop].copy(),
                faces.landmarks[start:stop].copy(),
            )
            vectors = self._vectors.array(np.float32, (stop - start, dim))
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

    def _hand_over(
        self,
        kind: str,
        track: tuple[int, str],
        image: npt.NDArray[np.uint8],
        frame: Frame,
        box: npt.NDArray[np.float32],
        score: float,
    ) -> None:
        """Copies the face (with a margin) into a secure buffer for the writer.

        Storing an alert waits for disk syncs (the store and the audit log); the
        writer thread does that, so a live source is never starved meanwhile.
        """
        h, w = image.shape[:2]
        x1, y1, x2, y2 = _box(box)
        mx, my = (x2 - x1) * _CROP_MARGIN, (y2 - y1) * _CROP_MARGIN
        left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
        right, bottom = min(w, int(x2 + mx) + 1), min(h, int(y2 + my) + 1)
        shape = (bottom - top, right - left, 3)
        buf = SecureBuffer(max(1, shape[0] * shape[1] * 3))
        crop = buf.array(np.uint8, shape)
        np.copyto(crop, image[top:bottom, left:right])
        del crop
        self._writes.put(
            _Write(
                kind,
                track,
                score,
                (x1, y1, x2, y2),
                buf,
                shape,
                frame.time,
                frame.captured,
            )
        )

    def _write_alerts(self) -> None:
        """The writer thread: stores, audits and announces alerts, in order."""
        while True:
            item = self._writes.get()
            if item is None:
                break
            try:
                if self._error is None:
                    self._write_one(item)
            except BaseException as exc:
                self._fail(exc, "storing an alert failed")
                self.stop()
            finally:
                if item.crop is not None:
                    item.crop.discard()
        self._alerts.put(None)

    def _fail(self, exc: BaseException, what: str) -> None:
        """Records the error that ends the deployment, and audits it.

        Only the error's type is audited: messages may name things the log must
        not hold.
        """
        self._error = exc
        _log.error("%s: %s", what, type(exc).__name__)
        self._audit(
            "anomaly",
            kind="other",
            detail=f"{what}: {type(exc).__name__}",
            camera_id=self._camera_id,
            deployment_id=self._deployment_id,
        )

    def _write_one(self, item: _Write) -> None:
        if item.kind == "ended":
            self._track_alerts.pop(item.track, None)
            return
        if item.crop is None:
            return
        crop = item.crop.array(np.uint8, item.shape)
        try:
            if item.kind == "improve":
                alert_id = self._track_alerts.get(item.track)
                if alert_id is not None:
                    try:
                        self._store.improve(
                            alert_id, score=item.score, box=item.box, crop=crop
                        )
                    except (RetentionError, KeyError):
                        del self._track_alerts[item.track]  # expired or purged
                return
            alert = self._store.add(
                subject_id=item.track[1],
                score=item.score,
                box=item.box,
                crop=crop,
                camera_id=self._camera_id,
                deployment_id=self._deployment_id,
                time=item.time,
            )
        finally:
            del crop
        self._track_alerts[item.track] = alert.alert_id
        self._audit(
            "alert_raised",
            alert_id=alert.alert_id,
            deployment_id=self._deployment_id,
            camera_id=self._camera_id,
            subject_id=alert.subject_id,
            score=alert.score,
            time=alert.time,
            expires=alert.expires,
        )
        with self._lock:
            self._latency.alert.append((_time.monotonic() - item.captured) * 1e3)
        self._alerts.put(alert)
        if self._on_alert is not None:
            self._on_alert(alert)

    def _audit_counters(self) -> None:
        with self._lock:
            now = _Counts(**self._counts.__dict__)
            if self._source is not None:
                now.drops = self._source.stats.dropped
            delta = now.minus(self._logged)
            self._logged = now
        if self._log is None:
            return
        self._audit(
            "counters",
            deployment_id=self._deployment_id,
            camera_id=self._camera_id,
            frames_processed=delta.frames,
            frames_dropped=delta.drops,
            faces_detected=delta.faces,
            faces_skipped=delta.skipped,
            faces_wiped=delta.wiped,
            alerts=delta.alerts,
        )

    def _purge(self) -> None:
        for alert_id in self._store.purge():
            self._audit("alert_purged", alert_id=alert_id)
