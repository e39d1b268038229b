"""The records layer: the one path by which lfr changes or exports an alert.

Every change to an alert (:meth:`Records.raise_alert`, :meth:`~Records.improve`,
:meth:`~Records.review`, :meth:`~Records.hold`, :meth:`~Records.release`,
:meth:`~Records.action`, :meth:`~Records.purge`) and every export of its face crop
(:meth:`~Records.export_crop`) writes its audit record as part of the same
operation. The invariant it owns:

    every alert id in the store or its tombstones has its ``alert_raised`` record
    in the audit log, and every purge its ``alert_purged`` record (and every
    review, hold, release and better view its own record).

How it holds through crashes and other processes:

- **Order.** A change is committed to the store first, then audited. A crash in
  between leaves a change the log lacks, never a record of a change that did not
  happen. An export is audited *before* its bytes are handed out.
- **Reconciliation on open.** Opening :class:`Records` compares the store with the
  log and audits what the store did but the log lacks (an ``anomaly`` of kind
  ``trail_reconciled`` saying how many, then the missing records). It runs
  before any purge, so an alert stored but never audited can still be read.
- **Several processes.** A per-store lock file (``<store>.lock``, ``flock``) is
  held for each change and its audit record, and for reconciliation, so a
  reviewer's process and a running deployment never interleave a change with
  another's audit record; the audit log orders their records in one chain
  (:class:`lfr.AuditLog` takes its own lock per append).
- **Lost alerts.** Alerts a failing pipeline decided but could not store are
  named with :meth:`Records.note_lost`: audited at once as ``alert_lost``
  anomalies, or, if the log cannot be written, kept (ids, camera and time only)
  in ``<log>.lost`` (or ``<store>.lost``) and audited by the next
  :class:`Records` on that store and log.

A store opened on its own (:class:`lfr.AlertStore`) is read-only for retention:
it never purges. See docs/retention.md and docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time as _time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr._files import lock_within
from lfr.alerts.store import Alert, AlertStore, Decision, ImageFormat
from lfr.audit.chain import head_problem, line_hashes
from lfr.audit.log import AuditLog, LogEnd, Record, read_log_from
from lfr.errors import AlertStoreError, AuditError, LfrError, RetentionError
from lfr.keys import KeyProvider
from lfr.protocols import Signer
from lfr.retention import RetentionPolicy

__all__ = ["Action", "LostAlert", "Reconciled", "Records", "open_log_for"]

_log = logging.getLogger(__name__)

#: What an engagement officer did about an alert (``alert_actioned``).
Action = Literal["engaged", "no_action"]
_ACTIONS = ("engaged", "no_action")

#: Test hook: called with the name of each step of a change (for example
#: ``"raise:stored"``, between the store's commit and the audit record), so a
#: fault-injection test can kill the process there. ``None`` in production.
_fault: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if _fault is not None:
        _fault(name)


@contextlib.contextmanager
def store_lock(store: AlertStore, wait: float) -> Iterator[None]:
    """Holds ``<store>.lock`` (``flock``), waiting at most ``wait`` seconds.

    The lock every change and its audit record are made under; named after the
    store's resolved path, so two spellings of one store share it.

    Raises:
        AlertStoreError: Another process held it for longer than ``wait``.
    """
    path = Path(f"{store.path.resolve()}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if not lock_within(fd, wait):
            raise AlertStoreError(
                f"alert store {store.path} is busy: another change held "
                f"{path.name} for {wait:g} s"
            )
        yield
    finally:
        os.close(fd)  # releases the lock


def open_log_for(
    store: AlertStore,
    path: str | os.PathLike[str],
    signing_key: Signer,
    *,
    clock: Callable[[], datetime] | None = None,
    lock_timeout: float = 10.0,
) -> AuditLog:
    """Opens ``store``'s audit log, creating it to continue the store's chain.

    An existing log is opened (and verified). A log that does not exist is
    created with ``previous=store.chain``: its record 0 names the latest log of
    the store's chain and the head the store saw, so a verifier given only the
    new log reports the earlier ones as missing, and the alerts they raised as
    unaccounted for. The store is bound to the new log at once, under its
    lock. A warning is logged when that happens for a store that had a log (the
    auditor needs it too).

    Raises:
        AuditError: The existing log does not verify.
        AlertStoreError: The store is busy for longer than ``lock_timeout``
            seconds, or cannot be written.
        OSError: The log cannot be opened or created.
    """
    log_path = Path(path)
    if log_path.exists():
        return AuditLog.open(log_path, signing_key, clock=clock)
    # Under the store's lock: the head named is the store's latest, and the store
    # is bound to the new log before anyone changes it again (a process still
    # writing the old log then leaves the store's chain alone).
    with store_lock(store, lock_timeout):
        previous = store.chain
        if previous is not None:
            _log.warning(
                "audit log %s does not exist: starting a new log that continues "
                "alert store %s's chain after log %s (%d records); an auditor "
                "needs that log too",
                log_path,
                store.path,
                previous.log_id,
                previous.records,
            )
        log = AuditLog.create(log_path, signing_key, clock=clock, previous=previous)
        try:
            store._set_chain(log.head())
        except BaseException:
            log.close()
            raise
    return log


@dataclass(frozen=True)
class LostAlert:
    """An alert a pipeline decided but could not store and audit.

    No subject: the id, camera and time name it for the operator and auditor.

    Attributes:
        alert_id: The id it would have had.
        camera_id: The camera.
        time: When the face was seen (aware UTC).
    """

    alert_id: str
    camera_id: str
    time: datetime

    def describe(self) -> str:
        """``alert ID (camera C, T)`` for messages and the audit log."""
        return (
            f"alert {self.alert_id} (camera {self.camera_id}, {self.time.isoformat()})"
        )


@dataclass(frozen=True)
class Reconciled:
    """What opening :class:`Records` added to the log to match the store.

    Attributes:
        raised: ``alert_raised`` records added (stored, never audited).
        improved: ``alert_improved`` records added.
        reviewed: ``alert_reviewed`` records added.
        held: ``alert_held`` records added.
        released: ``alert_released`` records added.
        purged: ``alert_purged`` records added.
        lost: ``alert_lost`` anomalies added from ``<log>.lost``.
        unreadable: Alerts in the store whose record does not authenticate.
    """

    raised: int = 0
    improved: int = 0
    reviewed: int = 0
    held: int = 0
    released: int = 0
    purged: int = 0
    lost: int = 0
    unreadable: int = 0

    @property
    def total(self) -> int:
        """How many records were added."""
        return (
            self.raised
            + self.improved
            + self.reviewed
            + self.held
            + self.released
            + self.purged
            + self.lost
        )

    def describe(self) -> str:
        """A sentence for the ``trail_reconciled`` anomaly (counts only)."""
        parts = [
            f"{n} {name}"
            for name, n in (
                ("alert_raised", self.raised),
                ("alert_improved", self.improved),
                ("alert_reviewed", self.reviewed),
                ("alert_held", self.held),
                ("alert_released", self.released),
                ("alert_purged", self.purged),
                ("alert_lost", self.lost),
            )
            if n
        ]
        text = "the store had changes the log lacked; recorded now: " + ", ".join(
            parts or ["nothing"]
        )
        if self.unreadable:
            text += f"; {self.unreadable} alert(s) in the store could not be read"
        return text


class Records(Closing):
    """An alert store and its audit log, changed only together.

    Args:
        store: The alert store.
        log: Its audit log, open for appending.
        lock_timeout: How long a change waits for another process's change
            (seconds) before failing with :class:`~lfr.errors.AlertStoreError`.
        compact_wait: How long a purge retries a checkpoint that a reader blocks
            (seconds) before auditing a ``purge_incomplete`` anomaly.

    The :class:`Records` does not close ``store`` or ``log`` (:meth:`open`'s do).
    Opening reconciles the log with the store (:attr:`reconciled`).

    Raises:
        AlertStoreError: The store cannot be read, or its lock not taken in time.
        AuditError: The log cannot be read back or written.
    """

    def __init__(
        self,
        store: AlertStore,
        log: AuditLog,
        *,
        lock_timeout: float = 10.0,
        compact_wait: float = 2.0,
    ) -> None:
        if not isinstance(store, AlertStore):
            raise TypeError(f"store must be an AlertStore, got {type(store).__name__}")
        if not isinstance(log, AuditLog):
            raise TypeError(f"log must be an AuditLog, got {type(log).__name__}")
        self._store = store
        self._log = log
        self._lock_timeout = float(lock_timeout)
        self._compact_wait = float(compact_wait)
        self._owned: tuple[Closing, ...] = ()
        self._closed = False
        self._dirty = False
        self._clock_reported: datetime | None = None
        self._moved_on = False
        self._previous = log.previous
        self._reconciled = self.reconcile()
        store._purging = True

    @classmethod
    def open(
        cls,
        store: str | os.PathLike[str],
        key: KeyProvider,
        log: str | os.PathLike[str],
        signing_key: Signer,
        *,
        policy: RetentionPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = 10.0,
        compact_wait: float = 2.0,
    ) -> Records:
        """Opens (or creates) a store and its log, and reconciles them.

        A log that does not exist is created continuing the store's chain of
        logs (:func:`open_log_for`). A log that does not verify, or does not
        continue the store's chain, is refused before anything is written.

        Args:
            store: The store file.
            key: The store key.
            log: The audit log file.
            signing_key: The log's signing key.
            policy: The store's retention policy.
            clock: For tests: the current time, for the store and the log.
            lock_timeout: As for the class.
            compact_wait: As for the class.

        Raises:
            AuditError: The log does not verify.
            AlertStoreError: The store is not an lfr store, or is damaged.
            WrongKeyError: The store was made with another key.
        """
        log_path = Path(log)
        if log_path.exists():  # verified first: a bad log leaves the store as it was
            audit = AuditLog.open(log_path, signing_key, clock=clock)
            try:
                opened = AlertStore(store, key, policy=policy, clock=clock)
            except BaseException:
                audit.close()
                raise
        else:  # a new log continues the store's chain
            opened = AlertStore(store, key, policy=policy, clock=clock)
            try:
                audit = open_log_for(
                    opened,
                    log_path,
                    signing_key,
                    clock=clock,
                    lock_timeout=lock_timeout,
                )
            except BaseException:
                opened.close()
                raise
        try:
            records = cls(
                opened, audit, lock_timeout=lock_timeout, compact_wait=compact_wait
            )
        except BaseException:
            opened.close()
            audit.close()
            raise
        records._owned = (opened, audit)
        return records

    # -- properties -------------------------------------------------------------------

    @property
    def store(self) -> AlertStore:
        """The store, for reading (its changes go through this object)."""
        return self._store

    @property
    def log(self) -> AuditLog:
        """The audit log."""
        return self._log

    @property
    def reconciled(self) -> Reconciled:
        """What opening added to the log to match the store."""
        return self._reconciled

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    # -- changes ----------------------------------------------------------------------

    def raise_alert(
        self,
        *,
        subject_id: str,
        score: float,
        box: tuple[float, float, float, float],
        crop: npt.NDArray[np.uint8] | bytes | bytearray | memoryview,
        camera_id: str,
        deployment_id: str,
        time: datetime | None = None,
        alert_id: str | None = None,
        image_format: ImageFormat = "png",
    ) -> Alert:
        """Stores an alert (encrypted) and audits it (``alert_raised``).

        Args: as :meth:`lfr.AlertStore._add`; ``alert_id`` names it in advance
        (a canonical UUID), so a caller can report it if storing fails.

        Returns:
            The stored alert.

        Raises:
            AlertStoreError: The store cannot be written (nothing stored).
            AuditError: The log cannot be written: the alert is stored, and the
                next :class:`Records` on this store audits it.
            TypeError, ValueError: Bad values (nothing stored).
        """
        with self._changing():
            alert = self._store._add(
                subject_id=subject_id,
                score=score,
                box=box,
                crop=crop,
                camera_id=camera_id,
                deployment_id=deployment_id,
                time=time,
                image_format=image_format,
                alert_id=alert_id,
            )
            _step("raise:stored")
            self._audit_raised(alert)
            return alert

    def improve(
        self,
        alert_id: str,
        *,
        score: float,
        box: tuple[float, float, float, float],
        crop: npt.NDArray[np.uint8] | bytes | bytearray | memoryview,
        image_format: ImageFormat = "png",
    ) -> Alert:
        """Replaces a live alert's crop with a better view (``alert_improved``).

        Nothing changes, and nothing is audited, unless ``score`` is higher than
        the stored one.

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            AuditError: The log cannot be written (the change is stored and
                audited by the next :class:`Records`).
        """
        with self._changing():
            before = self._store.get(alert_id)
            alert = self._store._improve(
                alert_id, score=score, box=box, crop=crop, image_format=image_format
            )
            if alert.views == before.views:
                return alert
            _step("improve:stored")
            self._log.append("alert_improved", alert_id=alert_id, score=alert.score)
            return alert

    def review(
        self,
        alert_id: str,
        reviewer: str,
        decision: Decision,
        note: str | None = None,
    ) -> Alert:
        """Records a person's review in the store and the log (``alert_reviewed``).

        The note stays in the store (encrypted with the alert); the log has the
        alert id, the reviewer and the decision.

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            ValueError: Empty reviewer or unknown decision.
        """
        with self._changing():
            alert = self._store._review(alert_id, reviewer, decision, note)
            _step("review:stored")
            self._log.append(
                "alert_reviewed",
                alert_id=alert_id,
                reviewer=reviewer,
                decision=decision,
            )
            return alert

    def hold(self, alert_id: str, reason: str, until: datetime, *, by: str) -> Alert:
        """Keeps an alert past its expiry for a case (``alert_held``).

        Args:
            alert_id: A live alert.
            reason: The case reference (required; in the store and the log).
            until: When the hold ends (at most ``policy.max_hold`` from now).
            by: The officer placing it.

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            ValueError: Empty reason or officer, or a bad ``until``.
        """
        with self._changing():
            alert = self._store._hold(alert_id, reason, until, by=by)
            _step("hold:stored")
            held_until = alert.held_until or until
            self._log.append(
                "alert_held", alert_id=alert_id, reason=reason, until=held_until, by=by
            )
            return alert

    def release(self, alert_id: str, *, by: str) -> None:
        """Ends the hold on an alert (``alert_released``).

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            ValueError: Not on hold.
        """
        with self._changing():
            self._store._release(alert_id, by=by)
            _step("release:stored")
            self._log.append("alert_released", alert_id=alert_id, by=by)

    def action(self, alert_id: str, action: Action, *, by: str) -> None:
        """Records what an officer did about a live alert (``alert_actioned``).

        Args:
            alert_id: A live alert.
            action: ``"engaged"`` or ``"no_action"``.
            by: The officer.

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            ValueError: Unknown action.
        """
        if action not in _ACTIONS:
            raise ValueError(f"action must be one of {', '.join(_ACTIONS)}")
        with self._changing():
            self._store.get(alert_id)  # live, readable
            self._log.append("alert_actioned", alert_id=alert_id, action=action, by=by)

    def export_crop(self, alert_id: str, *, by: str) -> bytes:
        """The alert's crop as stored (PNG or JPEG), audited (``alert_exported``).

        The export is audited before the bytes are returned.

        Raises:
            KeyError: Unknown alert.
            RetentionError: Expired or purged.
            AuditError: The log cannot be written (nothing is returned).
        """
        with self._changing():
            data = self._store._crop(alert_id)
            self._log.append("alert_exported", alert_id=alert_id, by=by)
            return data

    def export_image(self, alert_id: str, *, by: str) -> npt.NDArray[np.uint8]:
        """The alert's crop decoded to BGR, audited (``alert_exported``).

        Raises:
            As :meth:`export_crop`.
        """
        with self._changing():
            image = self._store._crop_image(alert_id)
            try:
                self._log.append("alert_exported", alert_id=alert_id, by=by)
            except BaseException:
                image.fill(0)
                raise
            return image

    def export_preview(
        self, recording_id: str, *, by: str
    ) -> Iterator[npt.NDArray[np.uint8]]:
        """A preview recording's frames, decrypted, audited (``preview_exported``).

        The recording is checked (known, live, opened by the store key) and the
        export audited before this returns; the frames are decrypted as the
        iterator is consumed (:mod:`lfr.preview.recording`).

        Raises:
            ValueError: ``recording_id`` is not a recording id.
            KeyError: No such recording.
            RetentionError: It has expired.
            AlertStoreError: It belongs to another store or was altered.
            AuditError: The log cannot be written (nothing is returned).
        """
        from lfr.preview.recording import read_recording

        with self._changing():
            frames = read_recording(self._store, recording_id)
            try:
                self._log.append("preview_exported", recording_id=recording_id, by=by)
            except BaseException:
                frames.close()  # type: ignore[attr-defined]
                raise
            return frames

    def purge(self, *, lock_timeout: float | None = None) -> list[str]:
        """Destroys expired alerts no hold keeps, and audits each (``alert_purged``).

        Expired preview recordings (:mod:`lfr.preview.recording`) are destroyed
        in the same call, each audited (``preview_purged``); their ids are not
        in the returned list.

        A checkpoint that a reader blocks is retried for ``compact_wait``
        seconds; if the WAL still holds purged ciphertext then, an anomaly
        ``purge_incomplete`` is audited (the next purge tries again).

        Args:
            lock_timeout: How long to wait for another process's change
                (seconds); the object's ``lock_timeout`` when None.

        Returns:
            The ids destroyed, oldest first.

        Raises:
            AlertStoreError: The store cannot be written, or is busy.
            AuditError: The log cannot be written (the next :class:`Records`
                audits the purges).
        """
        with self._changing(lock_timeout):
            gone = self._store._purge()
            _step("purge:stored")
            for alert_id in gone:
                self._log.append("alert_purged", alert_id=alert_id)
                _step("purge:audited")
            self._purge_previews()
            if gone and not self._settle():
                _log.warning(
                    "alert store %s: a reader kept the WAL; purged ciphertext may "
                    "remain in it until the next purge (audited)",
                    self._store.path,
                )
                self._log.append(
                    "anomaly",
                    kind="purge_incomplete",
                    detail="a reader kept the store's WAL for "
                    f"{self._compact_wait:g} s: ciphertext of {len(gone)} purged "
                    f"alert(s) may remain in {self._store.path.name}-wal until the "
                    "next purge (their keys "
                    "are destroyed)",
                )
            return gone

    def _purge_previews(self) -> None:
        """Destroys expired preview recordings, each audited (``preview_purged``)."""
        from lfr.preview.recording import purge_recordings

        for recording_id in purge_recordings(self._store):
            self._log.append("preview_purged", recording_id=recording_id)

    def note_lost(
        self, lost: Sequence[LostAlert], deployment_id: str, *, audit: bool = True
    ) -> None:
        """Audits alerts a pipeline decided but could not store (``alert_lost``).

        If the log cannot be written (or ``audit`` is False, for a caller whose
        own write still holds the log), they are appended to ``<log>.lost``, or
        ``<store>.lost`` if that cannot be written either (ids, cameras and times
        only; mode 0600), and audited by the next :class:`Records` on this store
        and log. Never raises for a failed write: the
        caller names them in its error anyway.
        """
        if not lost:
            return
        if not audit:
            _keep_lost(self._lost_paths(), lost, deployment_id)
            return
        try:
            for item in lost:
                self._log.append(
                    "anomaly",
                    kind="alert_lost",
                    detail=f"{item.describe()} was decided but not stored",
                    camera_id=item.camera_id,
                    deployment_id=deployment_id,
                )
        except (AuditError, ValueError, OSError):
            _keep_lost(self._lost_paths(), lost, deployment_id)

    # -- reconciliation ---------------------------------------------------------------

    def reconcile(self) -> Reconciled:
        """Audits what the store did but the log lacks (runs on open).

        Returns:
            What was added (nothing, normally).
        """
        # The log is verified up to now without the store's lock (a long log
        # takes seconds, and a running deployment must not wait for it); under
        # the lock, only what was appended since is read.
        early, end = self._read_log(None)
        with self._changing(reconciling=True):
            self._check_chain()
            return self._reconcile_locked(early, end)

    def _reconcile_locked(self, early: list[Record], end: LogEnd) -> Reconciled:
        """Reconciliation under the store's lock: ``early`` was read up to ``end``."""
        state = self._store._trail_state()
        late, _ = self._read_log(end)
        records = early + late
        logged = _Logged.of(records)
        plan: list[tuple[str, dict[str, object]]] = []
        counts = Counter[str]()
        for alert in state.alerts:
            if alert.alert_id not in logged.raised:
                plan.append(("alert_raised", _raised_fields(alert)))
                counts["raised"] += 1
            missing = alert.views - 1 - logged.improved[alert.alert_id]
            for _ in range(max(0, missing)):
                plan.append(
                    (
                        "alert_improved",
                        {"alert_id": alert.alert_id, "score": alert.score},
                    )
                )
                counts["improved"] += 1
            have = Counter(
                (r.reviewer, str(r.decision)) for r in alert.reviews
            ) - logged.reviews.get(alert.alert_id, Counter())
            for review in alert.reviews:
                pair = (review.reviewer, str(review.decision))
                if have[pair] > 0:
                    have[pair] -= 1
                    plan.append(
                        (
                            "alert_reviewed",
                            {
                                "alert_id": alert.alert_id,
                                "reviewer": review.reviewer,
                                "decision": review.decision,
                            },
                        )
                    )
                    counts["reviewed"] += 1
            history = state.holds.get(alert.alert_id, ())
            for action, event in (
                ("hold", "alert_held"),
                ("release", "alert_released"),
            ):
                entries = [h for h in history if h.action == action]
                extra = len(entries) - logged.holds[(alert.alert_id, event)]
                for entry in entries[len(entries) - max(0, extra) :]:
                    fields: dict[str, object] = {
                        "alert_id": alert.alert_id,
                        "by": entry.by or "unknown",
                    }
                    if action == "hold":
                        fields["reason"] = entry.reason or "unknown"
                        fields["until"] = entry.until
                    plan.append((event, fields))
                    counts["held" if action == "hold" else "released"] += 1
        for alert_id in state.buried:
            if alert_id not in logged.purged:
                plan.append(("alert_purged", {"alert_id": alert_id}))
                counts["purged"] += 1
        claimed = [c for path in self._lost_paths() for c in _claim_lost(path)]
        lost = [e for path in claimed for e in _read_lost(path)]
        counts["lost"] = len(lost)
        done = Reconciled(unreadable=len(state.unreadable), **counts)
        if plan or lost or state.unreadable:
            self._log.append(
                "anomaly", kind="trail_reconciled", detail=done.describe()[:500]
            )
            for event, fields in plan:
                self._log.append(event, **fields)
            for detail, camera_id, deployment_id in lost:
                self._log.append(
                    "anomaly",
                    kind="alert_lost",
                    detail=detail,
                    camera_id=camera_id,
                    deployment_id=deployment_id,
                )
            for path in claimed:
                path.unlink(missing_ok=True)
            _log.warning("audit log %s: %s", self._log.path, done.describe())
        return done

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes what :meth:`open` opened (idempotent)."""
        if self._closed:
            return
        # What was appended since the last change (a deployment's stop): best
        # effort, a log that cannot be read any more keeps the last head.
        try:
            with self._changing(min(self._lock_timeout, 2.0)):
                pass
        except (LfrError, OSError, ValueError) as exc:
            _log.warning(
                "alert store %s: its chain head was not updated on close (%s)",
                self._store.path,
                type(exc).__name__,
            )
        finally:
            self._closed = True
            self._store._purging = False
            for thing in self._owned:
                thing.close()

    def __repr__(self) -> str:
        return f"Records(store={str(self._store.path)!r}, log={str(self._log.path)!r})"

    # -- internals --------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(
        self, lock_timeout: float | None = None, *, reconciling: bool = False
    ) -> Iterator[None]:
        """Holds the store's lock file for one change and its audit record.

        After a change failed between the store and the log (``_dirty``), the
        next change first reconciles, so nothing later builds on a change the
        log lacks (a purge of an alert whose raise was never audited).
        """
        wait = self._lock_timeout if lock_timeout is None else max(0.0, lock_timeout)
        if self._closed:
            raise ValueError("the records are closed")
        with store_lock(self._store, wait):
            if self._dirty and not reconciling:
                self._reconcile_locked(*self._read_log(None))
                self._dirty = False
            try:
                yield
            except (KeyError, TypeError, ValueError, RetentionError):
                self._audit_clock()
                raise  # refused before anything changed
            except BaseException:
                self._dirty = True
                raise
            if reconciling:
                self._dirty = False
            self._audit_clock()
            self._sync_chain()

    def _check_chain(self) -> None:
        """Refuses a log that does not continue the store's chain of logs.

        The store records the latest log of its chain and the head it saw
        (:attr:`lfr.AlertStore.chain`). The log must be that log, holding at
        least that many records with the same record at the head (not cut
        short, not an older copy put back); or a new log whose record 0 names
        it as the previous log, at that head or later.
        """
        link = self._store.chain
        if link is None:
            return
        head = self._log.head()
        where = f"audit log {self._log.path} does not continue the chain of alert store"
        if link.log_id == head.log_id:
            problem = head_problem(
                head.log_id,
                line_hashes(self._log.path),
                link,
                f"store's record of this log ({self._store.path.name})",
            )
            if problem is not None:
                raise AuditError(f"{where} {self._store.path}: {problem.message}")
            return
        previous = self._log.previous
        continues = previous is not None and (
            previous.log_id == link.log_id
            and (
                previous.records > link.records
                or (
                    previous.records == link.records
                    and previous.last_hash == link.last_hash
                )
            )
        )
        if not continues:
            raise AuditError(
                f"{where} {self._store.path}: the store's chain ends in log "
                f"{link.log_id} ({link.records} records), and this log "
                + (
                    "starts a new chain"
                    if previous is None
                    else f"continues log {previous.log_id} ({previous.records} records)"
                )
                + ". Use that log, or start a new log that continues it "
                "(AuditLog.create(path, key, previous=store.chain); lfr run does "
                "so when the log file does not exist)"
            )

    def _sync_chain(self) -> None:
        """Records the log's head as the store's chain head (under the lock).

        Best effort: the change and its record are done, and a head that lags
        behind the log is still true of it (the log only grows), so a failure
        here (a full disk) is logged, not raised.
        """
        try:
            head = self._log.head()
            link = self._store.chain
            previous = self._previous
            if (
                link is not None
                and link.log_id != head.log_id
                and (previous is None or previous.log_id != link.log_id)
            ):
                # The chain moved on to a newer log (started by another process)
                # while this one still writes the old: leave it there.
                if not self._moved_on:
                    self._moved_on = True
                    _log.warning(
                        "alert store %s: its chain continues in log %s; audit log "
                        "%s is no longer its latest (start the next change with "
                        "the newer log)",
                        self._store.path,
                        link.log_id,
                        self._log.path,
                    )
                return
            if link != head:
                self._store._set_chain(head)
        except (AlertStoreError, AuditError, OSError) as exc:
            _log.warning(
                "alert store %s: its record of the log's head was not updated (%s)",
                self._store.path,
                type(exc).__name__,
            )

    def audit_start(self, **fields: object) -> Record:
        """Audits a ``deployment_started`` with what the store holds now.

        Adds ``store_id``, ``store_alerts`` (alerts with their key) and
        ``store_purged`` (purged ids) to ``fields``, counted under the store's
        lock, so the verifier can check that the chain of logs accounts for
        every alert the store holds.

        Args:
            **fields: The other fields of ``deployment_started``.

        Returns:
            The record written.

        Raises:
            AlertStoreError: The store is busy or cannot be read.
            AuditError: The log cannot be written.
        """
        with self._changing():
            # What another process stored but could not audit (it was killed
            # in between) is audited first, so the counts match the log.
            self._reconcile_locked(*self._read_log(None))
            live, purged = self._store._counts()
            return self._log.append(
                "deployment_started",
                **fields,
                store_id=self._store.store_id,
                store_alerts=live,
                store_purged=purged,
            )

    def _audit_clock(self) -> None:
        """Audits a clock found behind the store's high-water mark (once each)."""
        behind = self._store.clock_behind
        if behind is None or behind[1] == self._clock_reported:
            return
        clock, mark = behind
        self._log.append(
            "anomaly",
            kind="clock_went_back",
            detail=f"the clock read {clock.isoformat()}, "
            f"{(mark - clock).total_seconds():.0f} s behind the store's latest write "
            f"({mark.isoformat()}); expiry and purges used the latter",
        )
        self._clock_reported = mark
        _log.warning("alert store %s: the clock went back", self._store.path)

    def _audit_raised(self, alert: Alert) -> None:
        self._log.append("alert_raised", **_raised_fields(alert))

    def _settle(self) -> bool:
        deadline = _time.monotonic() + self._compact_wait
        while not self._store._compact_now():
            if _time.monotonic() >= deadline:
                return False
            _time.sleep(0.05)
        return True

    def _read_log(self, start: LogEnd | None) -> tuple[list[Record], LogEnd]:
        """The log's verified records from ``start`` on, and where they end."""
        records, problems, end = read_log_from(
            self._log.path, self._log.public_key, start
        )
        bad = [p for p in problems if p.kind != "truncated"]
        if bad:
            raise AuditError(
                f"cannot reconcile with audit log {self._log.path}: {bad[0].message}"
            )
        return records, end

    def _lost_paths(self) -> tuple[Path, Path]:
        """Where lost alerts wait for the next open: beside the log, else the store."""
        return Path(f"{self._log.path}.lost"), Path(f"{self._store.path}.lost")


def _raised_fields(alert: Alert) -> dict[str, object]:
    return {
        "alert_id": alert.alert_id,
        "deployment_id": alert.deployment_id,
        "camera_id": alert.camera_id,
        "subject_id": alert.subject_id,
        "score": alert.score,
        "time": alert.time,
        "expires": alert.expires,
    }


@dataclass
class _Logged:
    """What the log already records, per alert."""

    raised: set[str]
    purged: set[str]
    improved: Counter[str]
    reviews: dict[str, Counter[tuple[str, str]]]
    holds: Counter[tuple[str, str]]

    @classmethod
    def of(cls, records: Sequence[Record]) -> _Logged:
        out = cls(set(), set(), Counter(), {}, Counter())
        for record in records:
            alert_id = record.fields.get("alert_id")
            if not isinstance(alert_id, str):
                continue
            if record.event == "alert_raised":
                out.raised.add(alert_id)
            elif record.event == "alert_purged":
                out.purged.add(alert_id)
            elif record.event == "alert_improved":
                out.improved[alert_id] += 1
            elif record.event == "alert_reviewed":
                pair = (str(record.fields["reviewer"]), str(record.fields["decision"]))
                out.reviews.setdefault(alert_id, Counter())[pair] += 1
            elif record.event in ("alert_held", "alert_released"):
                out.holds[(alert_id, record.event)] += 1
        return out


def _keep_lost(
    paths: Sequence[Path], lost: Sequence[LostAlert], deployment_id: str
) -> None:
    """Appends lost alerts to the first of ``paths`` that can be written."""
    for path in paths:
        if _keep_lost_in(path, lost, deployment_id):
            return


def _keep_lost_in(path: Path, lost: Sequence[LostAlert], deployment_id: str) -> bool:
    """Appends lost alerts to ``path`` (0600, under its lock); whether it worked."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a reconciler claims it between writes
            for item in lost:
                line = json.dumps(
                    {
                        "detail": f"{item.describe()} was decided but not stored",
                        "camera_id": item.camera_id,
                        "deployment_id": deployment_id,
                    }
                )
                os.write(fd, line.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _log.error("cannot keep the lost alerts in %s: %s", path, exc.strerror)
        return False
    return True


def _claim_lost(path: Path) -> list[Path]:
    """Takes ``path`` (renamed, so new lost alerts start a new file) to audit it.

    Also returns files claimed by an earlier reconciliation that stopped before
    it deleted them. A writer that opened the file before the rename finishes
    first (the claimed file's lock is taken before it is read).
    """
    earlier = sorted(path.parent.glob(f"{path.name}.*.claimed"))
    claimed = path.with_name(f"{path.name}.{uuid.uuid4().hex}.claimed")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return earlier
    fd = os.open(claimed, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a writer still appending
    finally:
        os.close(fd)
    return [*earlier, claimed]


def _read_lost(path: Path) -> list[tuple[str, str, str]]:
    """The lost alerts kept in ``path`` (malformed lines are skipped)."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            out.append(
                (
                    str(entry["detail"])[:500],
                    str(entry["camera_id"]),
                    str(entry["deployment_id"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return out
