"""A live deployment's lifecycle: start, run, stop, and the audit of each.

:class:`Deployment` ties lfr's pieces together on three threads:

- the **processing thread** runs :class:`~lfr.pipeline.frame_step.FrameStep` on
  each frame from the source (:func:`lfr.open_source`; files are read ahead by
  :func:`lfr.sources.readahead.read_ahead`, cameras and streams have their own
  newest-wins reader), writes counters to the audit log every
  ``counters_interval`` and asks for a purge every ``policy.purge_interval``;
- the **alert writer** (:class:`~lfr.pipeline.writer.AlertWriter`) stores and
  audits every alert, better view and purge through
  :class:`lfr.alerts.Records`;
- the **announcer** (:class:`~lfr.pipeline.writer.Announcer`) calls ``on_alert``
  and feeds :meth:`Deployment.alerts`.

At the start it opens the audit log, reconciles it with the store (anything the
store did that the log lacks is audited), closes as crashed any earlier
deployment on the log whose process is gone, marks itself running, audits the
start and the watchlist, purges, and opens the source. At the end it audits the
counters and the stop, and destroys the in-memory watchlist (audited).

If the store or the log cannot be written, the deployment stops at once: every
alert decided before the failure is either stored and audited, stored with its
audit left to the next start (which reconciles it), or lost and named (id,
camera, time; never the subject) in the :class:`~lfr.errors.DeploymentError` and
audited as ``alert_lost`` (now, or at the next start). :meth:`Deployment.close`
never waits more than ``stop_timeout`` seconds.

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
import threading
import time as _time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from lfr._core import __version__
from lfr._files import fsync_dir
from lfr.alerts import Alert, AlertStore, Decision, LostAlert, Records
from lfr.alerts.records import open_log_for
from lfr.audit import AuditLog, SigningKey
from lfr.audit.checkpoint import Checkpoint, make_checkpoint
from lfr.audit.liveness import RunningMark, close_crashed
from lfr.detect import FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import DeploymentError, LfrError, SharedKeyError
from lfr.pipeline.frame_step import FrameStep, Handover
from lfr.pipeline.memlock import MemlockBudget, for_deployment
from lfr.pipeline.stats import Counts, DeploymentStats, Latencies, percentile
from lfr.pipeline.writer import AlertWriter, Announcer
from lfr.protocols import Detector, Embedder, Renderer, Signer, Source
from lfr.quality import QualityGate
from lfr.retention import RetentionPolicy
from lfr.secure import MemoryReport, memory_status, require_hardening
from lfr.sources import Frame, SourceSpec, open_source
from lfr.sources.readahead import read_ahead
from lfr.tracking import Tracker, TrackerConfig
from lfr.watchlist import Watchlist

__all__ = ["DEFAULT_THRESHOLD", "Deployment", "check_separate_keys"]

_log = logging.getLogger(__name__)

#: Cosine similarity at which the default embedder's false-positive identification
#: rate was 1% on lfw-dev with 208 enrolled identities (docs/accuracy.md). A force
#: must calibrate its own threshold for its watchlist size (``lfr eval``).
DEFAULT_THRESHOLD = 0.945


class Deployment:
    """Runs a watchlist against a source of frames, with alerts and an audit trail.

    Args:
        source: What :func:`lfr.open_source` takes (camera index, file, URL,
            folder, iterable of frames), or an open :class:`lfr.protocols.Source`
            (an :class:`~lfr.FrameSource`, or an integrator's own).
        watchlist: The watchlist, opened with the watchlist key
            (:attr:`lfr.Watchlist.key_id`); its templates must come from
            ``embedder``.
        store: Where alerts go (changed only through :class:`lfr.alerts.Records`,
            which the deployment makes with the audit log), opened with the
            store key (:attr:`lfr.AlertStore.key_id`). The two keys are separate,
            so that whoever enrols people cannot read alerts; the deployment
            compares their public fingerprints (``key_id``), never key material.
        audit: The audit log: a path (created, or continued if it exists; needs
            ``signing_key``) or an open :class:`~lfr.AuditLog`.
        policy: Retention policy (default: the store's).
        threshold: Cosine similarity at or above which a face matches
            (default :data:`DEFAULT_THRESHOLD`; calibrate it with ``lfr eval``).
        camera_id: The camera's id, in alerts and the log.
        location: Where (a label for the published record).
        purpose: Why (for example "wanted persons").
        authorised_by: The officer who authorised the deployment.
        signing_key: The audit key when ``audit`` is a path: a
            :class:`lfr.protocols.Signer` (a :class:`~lfr.SigningKey`, or a
            :class:`lfr.audit.token.TokenSigner` whose key stays in an HSM) or a
            key file.
        deployment_id: Default: a new uuid.
        detector: Default: ``FaceDetector()`` (any :class:`lfr.protocols.Detector`).
        embedder: Default: ``FaceEmbedder()`` (any :class:`lfr.protocols.Embedder`).
        gate: Default: ``QualityGate()``.
        tracking: How faces are followed and when a track alerts.
        on_alert: Called with each stored :class:`~lfr.Alert`, in order, on the
            deployment's announcer thread (not the processing thread): a slow
            callback delays later callbacks only, never frames or storage. An
            exception it raises is logged and does not stop the deployment.
        preview: A :class:`lfr.protocols.Renderer` (:class:`lfr.Preview`), or None.
        counters_interval: How often counts go to the audit log.
        destroy_watchlist: Wipe the in-memory watchlist when the deployment ends
            (and audit it). The file stays; see docs/watchlists.md.
        allow_unlocked: Run even where memory cannot be locked (audited as an
            anomaly).
        allow_shared_key: Run although the watchlist and the store are under
            the same key (their ``key_id`` is equal). Refused otherwise; when
            allowed, the ``deployment_started`` record says ``keys="shared"``
            (``"separate"`` otherwise) and the deployment record shows it.
        allow_core_dumps: Start although core dumps stay possible. By default
            :meth:`start` first hardens the process (``RLIMIT_CORE`` 0 soft and
            hard, not dumpable: :func:`lfr.secure.require_hardening`) and
            refuses to start when it cannot. With this override it leaves core
            dumps as they are; ``deployment_started`` then records
            ``hardened: false`` and an ``anomaly`` ``core_dumps_allowed`` follows.
        every: Process every n-th frame of file and folder sources.
        stop_timeout: The longest :meth:`close` waits for the threads (seconds).
        checkpoints: Where signed checkpoints of the audit log go
            (:mod:`lfr.audit.checkpoint`): after the start is audited, with
            every counters record and after the stop. A path: a file, or a
            directory (the file ``<log_id>.checkpoints.jsonl`` in it), to which
            one JSON line per checkpoint is appended and fsynced; keep it off
            the machine's data directory (see "Checkpoints" in docs/audit.md).
            Or a callable, given each :class:`~lfr.audit.checkpoint.Checkpoint`
            on the thread that made it. A failure (an exception from the
            callable, a file that cannot be written) is logged, not fatal.
            None (the default): no checkpoints.
        frame_size: ``(width, height)`` of the largest frame, for
            :meth:`memlock_budget`, where the source cannot tell before its
            first frame (a camera, a stream, frames in memory; default
            1920x1080). Video files and folders are measured from their headers.

    Raises:
        MemlockBudgetError: From :meth:`start`, before anything is opened or
            allocated, when ``RLIMIT_MEMLOCK`` is below :meth:`memlock_budget`
            (unless ``allow_unlocked``); the message gives the figure to set.
        SharedKeyError: The watchlist and the store are under the same key and
            ``allow_shared_key`` is False (a :class:`~lfr.errors.DeploymentError`).
        DeploymentError: From :meth:`start`, when it cannot start (core dumps
            cannot be switched off, a source that cannot be opened, a watchlist
            made with another embedder, an audit log that does not verify).
            Nothing is stored then; if the audit log was already open, the
            failed start is audited (an anomaly, then ``deployment_stopped``).
    """

    def __init__(
        self,
        *,
        source: Source | SourceSpec,
        watchlist: Watchlist,
        store: AlertStore,
        audit: AuditLog | str | os.PathLike[str],
        policy: RetentionPolicy | None = None,
        threshold: float | None = None,
        camera_id: str = "cam-1",
        location: str = "unspecified",
        purpose: str = "unspecified",
        authorised_by: str = "unspecified",
        signing_key: Signer | str | os.PathLike[str] | None = None,
        deployment_id: str | None = None,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
        gate: QualityGate | None = None,
        tracking: TrackerConfig | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        preview: Renderer | None = None,
        counters_interval: timedelta = timedelta(seconds=60),
        destroy_watchlist: bool = True,
        allow_unlocked: bool = False,
        allow_shared_key: bool = False,
        allow_core_dumps: bool = False,
        every: int = 1,
        stop_timeout: float = 8.0,
        checkpoints: (
            str | os.PathLike[str] | Callable[[Checkpoint], None] | None
        ) = None,
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        self._threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not -1.0 <= self._threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        if stop_timeout <= 0:
            raise ValueError(f"stop_timeout must be positive, got {stop_timeout}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every!r}")
        self._shared_key = _shared_key(watchlist, store, allow=allow_shared_key)
        self._watchlist = watchlist
        self._store = store
        self._policy = policy or store.policy
        self._camera_id = camera_id
        self._location = location
        self._purpose = purpose
        self._authorised_by = authorised_by
        self._deployment_id = deployment_id or str(uuid.uuid4())
        self._preview = preview
        self._counters_interval = counters_interval
        self._destroy_watchlist = destroy_watchlist
        self._allow_unlocked = allow_unlocked
        self._allow_core_dumps = bool(allow_core_dumps)
        self._hardening: MemoryReport | None = None
        self._source_spec, self._every = source, every
        self._signing_key = signing_key
        self._audit_spec = audit
        self._detector = detector
        self._embedder = embedder
        self._gate = gate or QualityGate()
        self._tracking = tracking
        self._stop_timeout = float(stop_timeout)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = Counts()
        self._logged = Counts()
        self._latency = Latencies()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._started: float | None = None
        self._ended: float | None = None
        self._lost_at: datetime | None = None  # while a live stream is lost
        self._log: AuditLog | None = None
        self._records: Records | None = None
        self._mark: RunningMark | None = None
        self._source: Source | None = None
        self._step: FrameStep | None = None
        self._writer: AlertWriter | None = None
        self._announcer = Announcer(on_alert, f"lfr-announce-{camera_id}")
        self._closed = False
        self._started_audited = False
        self._abandoned = False
        self._frame_size = frame_size
        self._checkpoints = (
            checkpoints
            if checkpoints is None or callable(checkpoints)
            else Path(checkpoints)
        )

    # -- properties --------------------------------------------------------------------

    @property
    def deployment_id(self) -> str:
        """This deployment's id (in alerts and the audit log)."""
        return self._deployment_id

    @property
    def shared_key(self) -> bool:
        """Whether the watchlist and the store share one key (``allow_shared_key``)."""
        return self._shared_key

    @property
    def threshold(self) -> float:
        """The match threshold (cosine similarity)."""
        return self._threshold

    @property
    def audit_log(self) -> AuditLog | None:
        """The audit log, once started."""
        return self._log

    @property
    def records(self) -> Records | None:
        """The store and its log (the only path that changes alerts), once started."""
        return self._records

    # -- starting ----------------------------------------------------------------------

    def memlock_budget(
        self, frame_size: tuple[int, int] | None = None
    ) -> MemlockBudget:
        """The locked memory this deployment needs at its peak, and how to allow it.

        Computed from the configuration alone (nothing is allocated): the frame
        pool, the detector's and embedder's buffers, the watchlist's templates and
        the matcher's matrix, alert crops in flight, keys and the preview
        (:mod:`lfr.pipeline.memlock`). :meth:`start` checks it first.

        Args:
            frame_size: ``(width, height)`` of the largest frame (default: the
                constructor's ``frame_size``, else read from a video's or
                images' headers, else 1920x1080).

        Returns:
            The budget; ``budget.required`` bytes, ``budget.systemd``,
            ``budget.ulimit`` and ``budget.docker`` are the settings.
        """
        return for_deployment(
            source=self._source_spec,
            watchlist_rows=self._watchlist.templates,
            watchlist_dim=self._watchlist.dim,
            detector=self._detector,
            embedder=self._embedder,
            preview=self._preview is not None,
            frame_size=frame_size or self._frame_size,
        )

    def start(self) -> Deployment:
        """Opens everything, audits the start and starts processing.

        Raises:
            MemlockBudgetError: ``RLIMIT_MEMLOCK`` is below
                :meth:`memlock_budget` (and ``allow_unlocked`` is off), found
                before anything is opened; the message gives the figure.
            DeploymentError: It cannot start (see the class).
        """
        if self._thread is not None or self._closed:
            raise DeploymentError("a deployment starts once")
        try:
            # Before a model, the log's key or a frame is touched: no core dumps.
            # (The budget below opens a video for its size: FFmpeg's probe may
            # decode a frame.)
            self._hardening = require_hardening(self._allow_core_dumps)
        except LfrError as exc:
            raise DeploymentError(f"the deployment cannot start: {exc}") from exc
        if not self._allow_unlocked:
            memory = memory_status()
            if not (memory.memlock_privileged or memory.memlock_limit is None):
                self.memlock_budget().check(memory)
        try:
            embedder = self._embedder = self._embedder or FaceEmbedder()
            self._watchlist.check_model(embedder.model_id)
            detector = self._detector = self._detector or FaceDetector()
            self._log = self._open_log()
            self._records = Records(self._store, self._log)
            close_crashed(self._log)
            self._mark = RunningMark.hold(self._log.path, self._deployment_id)
            self._check_stop()
            self._audit_start()
            self._checkpoint()
            matcher = self._watchlist.matcher(allow_unlocked=self._allow_unlocked)
            self._step = FrameStep(
                detector=detector,
                embedder=embedder,
                gate=self._gate,
                tracker=Tracker(self._tracking),
                watchlist=self._watchlist,
                matcher=matcher,
                threshold=self._threshold,
                hand_over=self._hand_over,
                preview=self._preview,
                alert_stored=self._alert_stored,
            )
            self._check_stop()
            self._records.purge()  # before the source opens: a live one starts at once
            self._check_stop()
            self._source = self._open_source()
        except (LfrError, OSError, ValueError) as exc:
            self._abort(exc)
            raise DeploymentError(f"the deployment cannot start: {exc}") from exc
        self._writer = AlertWriter(
            self._records,
            camera_id=self._camera_id,
            deployment_id=self._deployment_id,
            announce=self._announce,
            failed=lambda exc: self._fail(exc, "storing an alert failed"),
        )
        self._started = _time.monotonic()
        self._writer.start()
        self._announcer.start()
        self._thread = threading.Thread(
            target=self._run, name=f"lfr-deployment-{self._camera_id}", daemon=True
        )
        self._thread.start()
        return self

    def _check_stop(self) -> None:
        """A :meth:`stop` during :meth:`start` ends the start at the next step."""
        if self._stop.is_set():
            raise DeploymentError("stopped while starting")

    def _open_log(self) -> AuditLog:
        if isinstance(self._audit_spec, AuditLog):
            return self._audit_spec
        key = self._signing_key
        if key is None:
            raise DeploymentError("an audit log path needs signing_key=")
        if not isinstance(key, Signer):
            key = SigningKey.load(key)
        return open_log_for(self._store, self._audit_spec, key)

    def _open_source(self) -> Source:
        if isinstance(self._source_spec, Source):
            return self._source_spec

        def event(name: str, info: dict[str, Any]) -> None:
            if name in ("stream_lost", "stream_recovered"):
                with self._lock:
                    self._lost_at = _event_time(info) if name == "stream_lost" else None
                self._audit_safely(
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
        if self._records is None or self._hardening is None:
            raise RuntimeError("_audit_start before the records are open")
        hardened = self._hardening.hardened
        self._records.audit_start(
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
            watchlist_created=wl.created,
            keys="shared" if self._shared_key else "separate",
            hardened=hardened,
        )
        self._started_audited = True  # from here on a failed start is closed
        if not hardened:
            self._audit(
                "anomaly",
                kind="core_dumps_allowed",
                detail="the operator allowed core dumps (allow_core_dumps): a "
                "crash may write faces and keys to disk",
                deployment_id=self._deployment_id,
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

    def _abort(self, exc: BaseException) -> None:
        """Undoes a failed start: audits it if the log is open, closes what opened."""
        if self._log is not None:
            self._audit_safely(
                "anomaly",
                kind="other",
                detail=f"start failed: {type(exc).__name__}",
                deployment_id=self._deployment_id,
            )
        if self._started_audited:
            self._audit_safely(
                "deployment_stopped",
                deployment_id=self._deployment_id,
                reason="start failed",
            )
        if self._mark is not None:
            self._mark.close()
        if self._step is not None:
            self._step.finish()
        if self._records is not None:
            self._records.close()
        if self._log is not None and not isinstance(self._audit_spec, AuditLog):
            self._log.close()
        self._closed = True

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the deployment to stop (any thread, any time); :meth:`close` waits."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()

    def close(self) -> None:
        """Stops, waits (at most ``stop_timeout`` s), audits the end and closes.

        Raises:
            DeploymentError: Processing stopped because of an error, or the
                threads did not stop in time. Its message names every alert
                decided but not stored and audited (id, camera, time). The
                deployment is closed and audited as far as the log allows.
        """
        if self._closed:
            return
        self._closed = True
        self.stop()
        deadline = _time.monotonic() + self._stop_timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - _time.monotonic()))
        stuck = self._thread is not None and self._thread.is_alive()
        writer = self._writer
        if writer is not None and not writer.close(deadline - _time.monotonic()):
            stuck = True
        self._abandoned = stuck
        if stuck and self._error is None:
            self._error = DeploymentError(
                f"the deployment did not stop within {self._stop_timeout:g} s "
                "(a write was blocked)"
            )
        lost = writer.lost() if writer is not None else []
        unaudited = writer.unaudited() if writer is not None else []
        try:
            self._finish(lost, blocked=stuck, deadline=deadline)
        finally:
            self._announcer.close(max(0.0, deadline - _time.monotonic()))
            if not stuck:
                if self._records is not None:
                    self._records.close()
                if self._log is not None and not isinstance(self._audit_spec, AuditLog):
                    self._log.close()
                if self._mark is not None:
                    self._mark.close()
        if self._error is not None:
            raise DeploymentError(
                _failure_message(self._error, lost, unaudited)
            ) from self._error

    def _finish(self, lost: list[LostAlert], *, blocked: bool, deadline: float) -> None:
        """Audits the end (unless a write is blocked), wipes the watchlist.

        Every audit record waits for the log's lock only until ``deadline``;
        the last purge runs only if there is time, and waits at most 2 s for
        another process (the next purge catches up). The watchlist's
        destruction is audited before the stop, so a kill in between still
        leaves it recorded.
        """
        records = self._records
        if self._step is not None and not blocked:
            self._step.finish()
        log = self._log
        if log is not None and not blocked:
            log.lock_timeout = max(
                0.0, min(log.lock_timeout, deadline - _time.monotonic())
            )
        if records is not None:
            if blocked:  # a write holds the log: leave them for the next start
                records.note_lost(lost, self._deployment_id, audit=False)
            else:
                records.note_lost(lost, self._deployment_id)
                self._audit_counters()
                left = deadline - _time.monotonic()
                if self._error is None and left > 1.0:
                    self._last_purge(records, min(2.0, left - 0.5))
        if self._source is not None:
            self._source.close()
        if self._preview is not None:
            self._preview.close()
        if self._destroy_watchlist:
            sha = self._watchlist.sha256
            self._watchlist.destroy()
            if not blocked:
                self._audit_safely(
                    "watchlist_destroyed",
                    watchlist_sha256=sha,
                    deployment_id=self._deployment_id,
                )
        if records is not None and not blocked:
            reason = "error" if self._error is not None else "stopped"
            self._audit_safely(
                "deployment_stopped", deployment_id=self._deployment_id, reason=reason
            )
            self._checkpoint()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- results -----------------------------------------------------------------------

    def alerts(self, timeout: float | None = None) -> Iterator[Alert]:
        """Alerts as they are stored, until the deployment stops (or the source ends).

        Args:
            timeout: Stop waiting after this many seconds without an alert.
        """
        return self._announcer.alerts(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the processing thread to end; returns whether it has.

        It ends when a file source is finished, after :meth:`stop`, or after a
        failure.
        """
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def abandoned(self) -> bool:
        """Whether :meth:`close` gave up on a blocked write (see ``stop_timeout``).

        The store may then still be in use by that write: leave it to the
        process's exit rather than closing it.
        """
        return self._abandoned

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the deployment, if any."""
        return self._error

    def stats(self) -> DeploymentStats:
        """Counts, frame rate and latency so far."""
        with self._lock:
            c = self._counts.copy()
            frame_lat = list(self._latency.frame)
            alert_lat = list(self._latency.alert)
            lost_at = self._lost_at
        unreadable = 0
        if self._source is not None:
            source_stats = self._source.stats
            c.drops = source_stats.dropped
            unreadable = source_stats.skipped
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
            latency_p50_ms=percentile(frame_lat, 50),
            latency_p95_ms=percentile(frame_lat, 95),
            alert_latency_p95_ms=percentile(alert_lat, 95),
            running=self._thread is not None and self._thread.is_alive(),
            unreadable=unreadable,
            stream_lost_at=lost_at,
        )

    def review(
        self, alert_id: str, reviewer: str, decision: Decision, note: str | None = None
    ) -> Alert:
        """Records a person's review of an alert, in the store and the audit log."""
        if self._records is None:
            raise DeploymentError("the deployment has not started")
        return self._records.review(alert_id, reviewer, decision, note)

    # -- the processing thread ---------------------------------------------------------

    def _audit(self, event: str, **fields: Any) -> None:
        if self._log is not None:  # AuditLog is thread-safe
            self._log.append(event, **fields)

    def _audit_safely(self, event: str, **fields: Any) -> None:
        """Audits, or logs why it could not (used where the deployment is ending)."""
        try:
            self._audit(event, **fields)
        except (LfrError, OSError, ValueError) as exc:
            _log.error("cannot audit %s: %s", event, type(exc).__name__)

    def _run(self) -> None:
        source, step = self._source, self._step
        if source is None or step is None:
            raise RuntimeError("_run before start")
        last_counters = last_purge = _time.monotonic()
        try:
            frames = (
                source.frames()
                if source.live
                else read_ahead(source, self._stop, f"lfr-capture-{self._camera_id}")
            )
            for frame in frames:
                try:
                    self._process(step, frame)
                finally:
                    frame.release()
                if self._stop.is_set():
                    break
                now = _time.monotonic()
                if now - last_counters >= self._counters_interval.total_seconds():
                    self._audit_counters()
                    self._checkpoint()
                    last_counters = now
                if now - last_purge >= self._policy.purge_interval.total_seconds():
                    if self._writer is not None:
                        self._writer.request_purge()
                    last_purge = now
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._ended = _time.monotonic()
            # The writer finishes what was decided, then alerts() ends.
            if self._writer is not None:
                self._writer.close(self._stop_timeout)
            self._announcer.end()

    def _process(self, step: FrameStep, frame: Frame) -> None:
        counts = Counts()
        latency = step.run(frame, counts)
        with self._lock:
            c = self._counts
            c.frames += counts.frames
            c.faces += counts.faces
            c.skipped += counts.skipped
            c.alerts += counts.alerts
            c.wiped += counts.wiped
            self._latency.frame.append(latency)

    def _hand_over(self, item: Handover) -> None:
        if self._writer is None:
            item.discard()
            return
        self._writer.put(item)

    def _alert_stored(self, track: tuple[int, str]) -> bool:
        """Whether the writer has stored the alert of ``track`` (preview only)."""
        writer = self._writer
        return writer is not None and writer.stored(track)

    def _announce(self, alert: Alert, captured: float) -> None:
        with self._lock:
            self._latency.alert.append((_time.monotonic() - captured) * 1e3)
        self._announcer.put(alert)

    def _fail(self, exc: BaseException, what: str = "processing stopped") -> None:
        """Records the first error, stops at once, and audits it if it can.

        Only the error's type is audited: messages may name things the log must
        not hold.
        """
        with self._lock:
            if self._error is not None:
                return
            self._error = exc
        _log.error("the deployment stops (%s): %s", what, type(exc).__name__)
        self.stop()
        self._audit_safely(
            "anomaly",
            kind="other",
            detail=f"{what}: {type(exc).__name__}",
            camera_id=self._camera_id,
            deployment_id=self._deployment_id,
        )

    def _audit_counters(self) -> None:
        with self._lock:
            now = self._counts.copy()
            if self._source is not None:
                now.drops = self._source.stats.dropped
            delta = now.minus(self._logged)
            self._logged = now
        try:
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
        except (LfrError, OSError) as exc:
            self._fail(exc)

    def _checkpoint(self) -> None:
        """Sends a checkpoint of the log where ``checkpoints`` says; never raises.

        A failure is logged (by type only) and the deployment goes on: a
        missing checkpoint shows as a gap in the checkpoints, not in the log.
        """
        target, log = self._checkpoints, self._log
        if target is None or log is None:
            return
        try:
            checkpoint = make_checkpoint(log)
            if isinstance(target, Path):
                _append_checkpoint(target, checkpoint)
            else:
                target(checkpoint)
        except Exception as exc:
            _log.error("cannot write an audit checkpoint: %s", type(exc).__name__)

    def _last_purge(self, records: Records, wait: float) -> None:
        try:
            records.purge(lock_timeout=wait)
        except (LfrError, OSError) as exc:
            _log.warning("the last purge did not run: %s", type(exc).__name__)


def _shared_key(watchlist: Watchlist, store: AlertStore, *, allow: bool) -> bool:
    """Whether both are under one key; refused unless ``allow``.

    Raises:
        SharedKeyError: They are, and ``allow`` is False.
    """
    return check_separate_keys(watchlist.key_id, store.key_id, allow_shared=allow)


def check_separate_keys(
    watchlist_key_id: str, store_key_id: str, *, allow_shared: bool = False
) -> bool:
    """Whether the watchlist key and the store key are one key; refused unless allowed.

    Keys are compared by their public fingerprints (:attr:`lfr.Key.key_id`,
    ``KeyProvider.key_id``), never by their material.

    Args:
        watchlist_key_id: The watchlist key's ``key_id``.
        store_key_id: The alert store key's ``key_id``.
        allow_shared: The operator's explicit choice of one key for both.

    Returns:
        True when they are the same key (and ``allow_shared`` is True).

    Raises:
        SharedKeyError: They are the same key and ``allow_shared`` is False.
    """
    if watchlist_key_id != store_key_id:
        return False
    if not allow_shared:
        raise SharedKeyError(
            f"the watchlist and the alert store are under the same key "
            f"({watchlist_key_id}): whoever can open the watchlist (enrolment "
            "staff) could read every alert. Give the store its own key (`lfr keys "
            "create`), or pass allow_shared_key=True (lfr run --allow-shared-key), "
            "which the deployment record then shows"
        )
    return True


def _append_checkpoint(target: Path, checkpoint: Checkpoint) -> None:
    """Appends ``checkpoint`` as one line to ``target`` (or a file in it); fsyncs."""
    path = (
        target / f"{checkpoint.log_id}.checkpoints.jsonl" if target.is_dir() else target
    )
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = memoryview((checkpoint.to_json() + "\n").encode())
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


def _failure_message(
    error: BaseException, lost: list[LostAlert], unaudited: list[LostAlert]
) -> str:
    text = f"the deployment stopped after an error: {error}"
    if unaudited:
        text += (
            "; stored, with their audit records left to the next start (which "
            "records them): " + "; ".join(a.describe() for a in unaudited)
        )
    if lost:
        text += (
            "; decided but NOT stored (audited as alert_lost, now or at the next "
            "start): " + "; ".join(a.describe() for a in lost)
        )
    return text


def _event_time(info: dict[str, Any]) -> datetime:
    """A source event's ``time`` (ISO 8601, UTC), or now if it has none."""
    try:
        return datetime.fromisoformat(str(info["time"]))
    except (KeyError, ValueError):
        return datetime.now(timezone.utc)
