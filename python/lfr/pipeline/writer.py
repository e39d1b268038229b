"""The alert writer and the announcer: the deployment's two helper threads.

:class:`AlertWriter` owns every change a deployment makes to its alert store: it
stores new alerts and better views and runs the scheduled purges, each through
:class:`lfr.alerts.Records` (so each change is audited with it), in the order the
processing thread decided them. Disk syncs therefore never hold up frames. Its
queue is bounded; the processing thread waits for room, but never past a failure
or an abandoned stop, so nothing blocks without end.

If a write fails (a full disk, an unwritable log), the writer stops storing at
once, tells the deployment (which stops), and sorts every alert it was handed but
did not finish into *unaudited* (stored; the next :class:`~lfr.alerts.Records` on
the store audits it) and *lost* (not stored: named by id, camera and time, and
audited as ``alert_lost``).

:meth:`AlertWriter.stored` tells the processing thread which ``(track, subject)``
pairs have an alert in the store: only their faces are shown sharp in the operator
preview. A pair enters once its alert is stored and audited, and leaves when its
track ends, its alert expires or is purged; an alert that was lost never enters.

:class:`Announcer` calls the integrator's ``on_alert`` and feeds
:meth:`lfr.Deployment.alerts`, on a thread of its own, so a slow callback delays
only later callbacks, never frames or storage.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time as _time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import numpy as np

from lfr.alerts import Alert, LostAlert, Records
from lfr.errors import RetentionError
from lfr.pipeline.frame_step import Handover

__all__ = ["AlertWriter", "Announcer"]

_log = logging.getLogger(__name__)

#: Alerts waiting for the writer thread at most (then processing waits).
CAPACITY = 16
#: Alerts :meth:`lfr.Deployment.alerts` keeps for an iterator at most (oldest go).
KEPT = 1024
_PURGE = "purge"
_END = "end"


class AlertWriter:
    """Stores, improves and purges alerts on a thread of its own.

    Args:
        records: The store and its log.
        camera_id: The camera (for alerts and lost-alert reports).
        deployment_id: The deployment.
        announce: Called with each stored alert and its capture time (the
            announcer's :meth:`Announcer.put`).
        failed: Called once, from the writer thread, with the error that
            stopped it.
    """

    def __init__(
        self,
        records: Records,
        *,
        camera_id: str,
        deployment_id: str,
        announce: Callable[[Alert, float], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._records = records
        self._camera_id = camera_id
        self._deployment_id = deployment_id
        self._announce = announce
        self._failed = failed
        self._queue: queue.Queue[Handover | str] = queue.Queue(maxsize=CAPACITY)
        self._error: BaseException | None = None
        self._abandoned = threading.Event()
        self._lock = threading.Lock()
        self._lost: list[LostAlert] = []
        self._unaudited: list[LostAlert] = []
        self._current: Handover | None = None
        # (track, subject) -> alert id, for better views; writer thread only.
        self._track_alerts: dict[tuple[int, str], str] = {}
        # The pairs whose alert is stored (read by the processing thread).
        self._stored: set[tuple[int, str]] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"lfr-alerts-{camera_id}", daemon=True
        )

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the writer, if any."""
        return self._error

    def stored(self, track: tuple[int, str]) -> bool:
        """Whether ``track`` (a ``(track id, subject)`` pair) has a stored alert.

        True from the moment its alert is stored and audited until the track
        ends, this writer purges the alert (at the scheduled purge after it
        expires), or a better view finds it expired or gone (purged by another
        process); never for an alert that was lost, and never after the writer
        failed or was abandoned. Safe from any thread.
        """
        with self._lock:
            return (
                track in self._stored
                and self._error is None
                and not self._abandoned.is_set()
            )

    def lost(self) -> list[LostAlert]:
        """Alerts decided but not stored (so far)."""
        with self._lock:
            return list(self._lost)

    def unaudited(self) -> list[LostAlert]:
        """Alerts stored whose audit record could not be written (so far)."""
        with self._lock:
            return list(self._unaudited)

    def put(self, item: Handover) -> None:
        """Queues work, waiting for room while the writer works.

        Never blocks past a writer failure or :meth:`abandon`: the item is then
        counted as lost (if it is a new alert) and its crop wiped.
        """
        while True:
            if self._error is not None or self._abandoned.is_set():
                self._lose(item)
                return
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def request_purge(self) -> None:
        """Asks for a purge (skipped if the queue is full: the next one runs)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_PURGE)

    def close(self, timeout: float) -> bool:
        """Finishes the queued work and ends the thread; whether it ended in time.

        If it did not (a write blocked), the writer is abandoned: what it holds
        is reported by :meth:`lost` and it stores nothing more.
        """
        if self._abandoned.is_set():
            return False
        deadline = _time.monotonic() + max(0.0, timeout)
        while self._thread.is_alive():
            try:
                self._queue.put(_END, timeout=0.1)
                break
            except queue.Full:
                if _time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - _time.monotonic()))
        if self._thread.is_alive():
            self.abandon()
            return False
        return True

    def abandon(self) -> None:
        """Gives up on the thread: queued and in-flight alerts count as lost."""
        self._abandoned.set()
        with self._lock:
            current = self._current
        if current is not None and current.kind == "alert":
            self._note(self._lost, current)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Handover):
                self._lose(item)

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item == _END:
                return
            if self._abandoned.is_set():
                if isinstance(item, Handover):
                    self._lose(item)
                continue
            if self._error is not None:
                if isinstance(item, Handover):
                    self._lose(item)
                continue
            with self._lock:
                self._current = item if isinstance(item, Handover) else None
            try:
                if item == _PURGE:
                    self._forget(self._records.purge())
                elif isinstance(item, Handover):
                    self._write(item)
            except BaseException as exc:
                self._error = exc
                if isinstance(item, Handover) and item.kind == "alert":
                    self._sort_failed(item)
                _log.error("the alert writer stopped: %s", type(exc).__name__)
                self._failed(exc)
            finally:
                with self._lock:
                    self._current = None
                if isinstance(item, Handover):
                    item.discard()

    def _forget(self, purged: list[str]) -> None:
        """Tracks whose alert was just purged no longer have a stored alert."""
        gone = set(purged)
        for track, alert_id in list(self._track_alerts.items()):
            if alert_id in gone:
                del self._track_alerts[track]
                with self._lock:
                    self._stored.discard(track)

    def _write(self, item: Handover) -> None:
        if item.kind == "ended":
            self._track_alerts.pop(item.track, None)
            with self._lock:
                self._stored.discard(item.track)
            return
        if item.crop is None:
            return
        crop = item.crop.array(np.uint8, item.shape)
        try:
            if item.kind == "improve":
                alert_id = self._track_alerts.get(item.track)
                if alert_id is not None:
                    try:
                        self._records.improve(
                            alert_id, score=item.score, box=item.box, crop=crop
                        )
                    except (RetentionError, KeyError):
                        del self._track_alerts[item.track]  # expired or purged
                        with self._lock:
                            self._stored.discard(item.track)
                return
            alert = self._records.raise_alert(
                subject_id=item.track[1],
                score=item.score,
                box=item.box,
                crop=crop,
                camera_id=self._camera_id,
                deployment_id=self._deployment_id,
                time=item.time,
                alert_id=item.alert_id,
            )
        finally:
            del crop
        self._track_alerts[item.track] = alert.alert_id
        with self._lock:
            self._stored.add(item.track)
        self._announce(alert, item.captured)

    def _sort_failed(self, item: Handover) -> None:
        """A new alert whose write failed: stored (audit pending) or lost?"""
        try:
            self._records.store.get(item.alert_id)
        except Exception:  # not stored, or unreadable: report it as lost
            self._note(self._lost, item)
        else:
            self._note(self._unaudited, item)

    def _lose(self, item: Handover) -> None:
        if item.kind == "alert":
            self._note(self._lost, item)
        item.discard()

    def _note(self, into: list[LostAlert], item: Handover) -> None:
        when = item.time or datetime.now(timezone.utc)
        with self._lock:
            if all(x.alert_id != item.alert_id for x in self._lost + self._unaudited):
                into.append(LostAlert(item.alert_id, self._camera_id, when))


class Announcer:
    """Calls ``on_alert`` and feeds :meth:`lfr.Deployment.alerts` on its own thread.

    Args:
        on_alert: The integrator's callback, or None. An exception it raises is
            logged (its type only) and does not stop the deployment.
        name: The thread's name.
    """

    def __init__(self, on_alert: Callable[[Alert], None] | None, name: str) -> None:
        self._on_alert = on_alert
        self._inbox: queue.Queue[Alert | None] = queue.Queue()
        self._outbox: queue.Queue[Alert | None] = queue.Queue()
        self._ending = threading.Lock()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def put(self, alert: Alert) -> None:
        """Hands an alert to the iterator and queues its callback (never blocks).

        The iterator's queue keeps the latest :data:`KEPT` alerts: a caller that
        never iterates :meth:`lfr.Deployment.alerts` does not keep every alert
        (with its subject) in memory for the whole run.
        """
        with self._ending:
            while self._outbox.qsize() >= KEPT:
                try:
                    self._outbox.get_nowait()
                except queue.Empty:
                    break
            self._outbox.put(alert)
        self._inbox.put(alert)

    def end(self) -> None:
        """No more alerts: the iterator ends once it has yielded those before."""
        with self._ending:
            if not self._ended:
                self._ended = True
                self._outbox.put(None)
                self._inbox.put(None)

    def close(self, timeout: float) -> bool:
        """Ends the iterator and waits for pending callbacks; whether they ended."""
        self.end()
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def alerts(self, timeout: float | None) -> Iterator[Alert]:
        """The alerts as stored, until the end (or ``timeout`` s without one)."""
        while True:
            try:
                alert = self._outbox.get(timeout=timeout)
            except queue.Empty:
                return
            if alert is None:
                self._outbox.put(None)  # for other iterators
                return
            yield alert

    def _run(self) -> None:
        while True:
            alert = self._inbox.get()
            if alert is None:
                return
            if self._on_alert is None:
                continue
            try:
                self._on_alert(alert)
            except Exception as exc:
                _log.error("on_alert raised %s; continuing", type(exc).__name__)
