"""The alert store: encrypted alerts that expire for good.

An :class:`AlertStore` is one SQLite file (WAL journal) holding the alerts of a
deployment. Each alert (its face crop, subject, score, box, camera, deployment and
time) is encrypted with its own random AES-256-GCM data key; only that key, wrapped
by the store key (a :class:`lfr.keys.KeyProvider`), is stored beside it. In plaintext
stay only what retention needs: the alert id and its expiry (authenticated), whether
it is on hold and until when (authenticated), and, after purging, a tombstone.

Expiry is final: an expired alert cannot be read even before it is purged, and
:meth:`AlertStore.purge` destroys its wrapped data key first (crypto-shredding), then
deletes its rows, then checkpoints the WAL and vacuums the file. docs/retention.md
says what is stored where and what an operator must configure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lfr._closing import Closing
from lfr.alerts.schema import (
    _LIVE,
    _SEAL_OVERHEAD,
    _SKEW,
    _context,
    _create,
    _hold_rows,
    _next_seq,
    _validate,
)
from lfr.alerts.values import (
    _aware,
    _box,
    _dt,
    _encode,
    _id,
    _score,
    _text,
    _us,
    _utcnow,
    _uuid,
    _wipe,
)
from lfr.errors import AlertStoreError, RetentionError, WrongKeyError
from lfr.keys import (
    KeyProvider,
    data_cipher,
    new_data_key,
    open_sealed,
    open_sealed_into,
    seal,
)
from lfr.retention import RetentionPolicy

__all__ = ["Alert", "AlertStore", "Decision", "Hold", "Review", "TrailState"]

_log = logging.getLogger(__name__)

#: A reviewer's verdict on an alert.
Decision = Literal["confirmed", "false_alert", "inconclusive"]
_DECISIONS: tuple[str, ...] = get_args(Decision)
ImageFormat = Literal["png", "jpeg"]


@dataclass(frozen=True)
class Review:
    """One human review of an alert.

    Attributes:
        reviewer: Who reviewed it (an officer's id, never a subject's).
        decision: ``"confirmed"``, ``"false_alert"`` or ``"inconclusive"``.
        time: When, as an aware UTC datetime.
        note: Optional free text.
    """

    reviewer: str
    decision: Decision
    time: datetime
    note: str | None = None

    def __post_init__(self) -> None:
        _text(self.reviewer, "reviewer")
        if self.decision not in _DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(_DECISIONS)}")
        _aware(self.time, "time")
        if self.note is not None and not isinstance(self.note, str):
            raise TypeError("note must be a str or None")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the time in ISO 8601)."""
        return {
            "reviewer": self.reviewer,
            "decision": self.decision,
            "time": self.time.isoformat(),
            "note": self.note,
        }


@dataclass(frozen=True)
class Hold:
    """One entry of an alert's hold history: a hold placed or released.

    Attributes:
        action: ``"hold"`` or ``"release"``.
        time: When it was recorded (aware UTC).
        reason: Why (the case); ``None`` for a release.
        until: When the hold ends; ``None`` for a release.
        by: Who placed or released it, if given.
    """

    action: Literal["hold", "release"]
    time: datetime
    reason: str | None = None
    until: datetime | None = None
    by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601)."""
        return {
            "action": self.action,
            "time": self.time.isoformat(),
            "reason": self.reason,
            "until": None if self.until is None else self.until.isoformat(),
            "by": self.by,
        }


@dataclass(frozen=True)
class Alert:
    """A stored match, decrypted (its face crop is read separately).

    Attributes:
        alert_id: Random id (a UUID4 string).
        deployment_id: The deployment that made it.
        camera_id: The camera that saw it.
        time: Time of the match (aware UTC).
        subject_id: The watchlist subject matched.
        score: The match score.
        box: ``(x1, y1, x2, y2)`` of the face in frame pixels.
        expires: When it expires unless held: ``time + policy.alert_ttl``.
        held_until: End of the hold in force, or ``None``.
        hold_reason: Reason of the hold in force, or ``None``.
        reviews: Every human review, oldest first (a reviewer who reviewed twice
            appears twice; :attr:`decisions` counts each reviewer once).
        views: 1, plus how many better views of the face have since replaced
            the stored crop, score and box (each one audited as
            ``alert_improved``).
    """

    alert_id: str
    deployment_id: str
    camera_id: str
    time: datetime
    subject_id: str
    score: float
    box: tuple[float, float, float, float]
    expires: datetime
    held_until: datetime | None = None
    hold_reason: str | None = None
    reviews: tuple[Review, ...] = ()
    views: int = 1

    @property
    def decisions(self) -> dict[str, Decision]:
        """Each reviewer's latest decision: a reviewer counts once."""
        return {r.reviewer: r.decision for r in self.reviews}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in ISO 8601, the box as a list)."""
        return {
            "alert_id": self.alert_id,
            "deployment_id": self.deployment_id,
            "camera_id": self.camera_id,
            "time": self.time.isoformat(),
            "subject_id": self.subject_id,
            "score": self.score,
            "box": list(self.box),
            "expires": self.expires.isoformat(),
            "held_until": None
            if self.held_until is None
            else self.held_until.isoformat(),
            "hold_reason": self.hold_reason,
            "reviews": [r.to_json() for r in self.reviews],
            "views": self.views,
        }


@dataclass
class _Opened:
    """An alert row whose data key is unwrapped and whose holds are verified."""

    alert_id: str
    expires: int
    cipher: AESGCM
    record: bytes
    crop: bytes
    holds: tuple[Hold, ...]


class AlertStore(Closing):
    """Encrypted alerts in one SQLite file, each readable until it expires.

    Opening creates the file if it does not exist and checks an existing one
    (format, version, key) without writing to it. A store opened on its own is for
    **reading**: it never purges (an unaudited purge would leave the audit log
    without its ``alert_purged`` records) and says so once, in a logged warning,
    when it lists its alerts while it holds expired ones; :attr:`purging` is
    ``False``. Every change to an
    alert (raise, better view, review, hold, release, purge) and every export of a
    crop goes through :class:`lfr.alerts.Records`, which pairs it with its audit
    record. One connection is shared by all threads, behind a lock.

    Args:
        path: The store file. Its directory must exist; SQLite keeps ``-wal`` and
            ``-shm`` files beside it while it is open.
        key: The store key that wraps each alert's data key (a
            :class:`lfr.Key` or a site's KMS behind :class:`lfr.keys.KeyProvider`).
            Keep it away from the store.
        policy: Retention rules; ``alert_ttl`` and ``max_hold`` are enforced here.
        clock: Returns the current time as an aware UTC datetime; defaults to
            ``datetime.now(timezone.utc)``. Tests pass their own to move time.

    Raises:
        WrongKeyError: The store was created with another key (both key ids are
            named).
        AlertStoreError: The file is not an lfr alert store, is damaged, or has an
            unknown format version. In every error case the file is left as it was.
        TypeError: ``key``, ``policy`` or ``clock`` has the wrong type.

    Examples:
        >>> import os, tempfile
        >>> import numpy as np
        >>> import lfr
        >>> folder = tempfile.mkdtemp()
        >>> key = lfr.Key.generate()
        >>> from lfr.alerts import Records
        >>> signing = lfr.SigningKey.generate()
        >>> with Records.open(
        ...     os.path.join(folder, "alerts.db"), key,
        ...     os.path.join(folder, "audit.log"), signing,
        ... ) as records:
        ...     alert = records.raise_alert(
        ...         subject_id="S-17", score=0.71, box=(10, 20, 50, 70),
        ...         crop=np.zeros((50, 40, 3), np.uint8),
        ...         camera_id="cam-1", deployment_id="dep-1",
        ...     )
        >>> with lfr.AlertStore(os.path.join(folder, "alerts.db"), key) as store:
        ...     store.get(alert.alert_id).subject_id, len(store), store.purging
        ('S-17', 1, False)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: KeyProvider,
        *,
        policy: RetentionPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(key, KeyProvider):
            raise TypeError(
                "key must be an lfr.Key or another KeyProvider, got "
                f"{type(key).__name__}"
            )
        if policy is None:
            policy = RetentionPolicy()
        elif not isinstance(policy, RetentionPolicy):
            raise TypeError(
                f"policy must be an lfr.RetentionPolicy, got {type(policy).__name__}"
            )
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning an aware datetime")
        self._path = Path(path)
        self._key = key
        self._policy = policy
        self._clock: Callable[[], datetime] = clock or _utcnow
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._compact_pending = False
        self._purging = False
        if not os.path.lexists(self._path):
            _create(self._path, key, self._now())
        self._store_id = _validate(self._path, key)
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:
            raise AlertStoreError(
                f"cannot open alert store {self._path}: {exc}"
            ) from exc
        self._conn = conn
        try:
            with self._session():
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise AlertStoreError(
                        f"alert store {self._path}: SQLite refused the WAL journal"
                    )
                for pragma in (
                    "synchronous=FULL",
                    "secure_delete=ON",
                    "temp_store=MEMORY",
                    "cell_size_check=ON",
                    "journal_size_limit=0",
                ):
                    conn.execute(f"PRAGMA {pragma}")
        except BaseException:
            self.close()
            raise

    # -- properties ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    @property
    def key_id(self) -> str:
        """The public id of the store key."""
        return self._key.key_id

    @property
    def policy(self) -> RetentionPolicy:
        """The retention policy in force."""
        return self._policy

    @property
    def purging(self) -> bool:
        """Whether expired alerts are purged: only through :class:`~lfr.alerts.Records`.

        ``False`` for a store opened on its own, which reads but never purges, so
        that no alert is destroyed without its ``alert_purged`` audit record.
        """
        return self._purging

    @property
    def compact_pending(self) -> bool:
        """Whether purged ciphertext may still be in the ``-wal`` file.

        ``True`` after a purge whose checkpoint a reader blocked; the next
        :meth:`_compact_now` (or purge) tries again.
        """
        return self._compact_pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._conn is None

    # -- writing -------------------------------------------------------------------

    def _add(
        self,
        *,
        subject_id: str,
        score: float,
        box: tuple[float, float, float, float],
        crop: npt.NDArray[np.uint8] | bytes | bytearray | memoryview,
        camera_id: str,
        deployment_id: str,
        time: datetime | None = None,
        image_format: ImageFormat = "png",
        alert_id: str | None = None,
    ) -> Alert:
        """Encrypts and stores one alert, in one transaction (for Records).

        The crop is encoded in memory (never to a file), encrypted with a fresh
        data key, and the encoded plaintext is then overwritten with zeros.

        Args:
            subject_id: The watchlist subject matched.
            score: The match score (finite).
            box: ``(x1, y1, x2, y2)`` in frame pixels, ``x1 <= x2``, ``y1 <= y2``.
            crop: The face, as a ``uint8`` BGR array ``(H, W, 3)`` (encoded as
                ``image_format``), or PNG or JPEG bytes (stored as given; their
                format is read from their signature).
            camera_id: The camera.
            deployment_id: The deployment.
            time: Time of the match (aware); now when ``None``. At most one
                minute ahead of the store's clock.
            image_format: ``"png"`` (lossless) or ``"jpeg"`` for array crops.
            alert_id: The id to store it under (a new UUID4 when ``None``), so a
                caller can name an alert before it is stored.

        Returns:
            The stored alert; it expires at ``time + policy.alert_ttl``.

        Raises:
            TypeError: An argument has the wrong type.
            ValueError: An empty text or crop, a non-finite score, a malformed
                box, unknown crop bytes, a naive ``time``, a ``time`` so old
                that the alert would already have expired, or a ``time`` more than
                a minute ahead of the clock (it would stretch retention).
        """
        subject_id = _text(subject_id, "subject_id")
        camera_id = _text(camera_id, "camera_id")
        deployment_id = _text(deployment_id, "deployment_id")
        score = _score(score)
        box = _box(box)
        when = None if time is None else _aware(time, "time")
        if image_format not in ("png", "jpeg"):
            raise ValueError(
                f"image_format must be 'png' or 'jpeg', got {image_format!r}"
            )
        new_id = str(uuid.uuid4()) if alert_id is None else _uuid(alert_id)
        encoded, fmt = _encode(crop, image_format)
        try:
            with self._session() as conn:
                now = self._now()
                when = now if when is None else when
                expires = when + self._policy.alert_ttl
                if expires <= now:
                    raise ValueError(
                        f"an alert at {when.isoformat()} would have expired at "
                        f"{expires.isoformat()}; it is not stored"
                    )
                if when > now + _SKEW:
                    # Else a future time would stretch retention past alert_ttl.
                    raise ValueError(
                        f"an alert time of {when.isoformat()} is more than {_SKEW} "
                        f"ahead of the store's clock ({now.isoformat()})"
                    )
                alert_id = new_id
                expires_us = _us(expires)
                record = bytearray(
                    json.dumps(
                        {
                            "deployment_id": deployment_id,
                            "camera_id": camera_id,
                            "time": _us(when),
                            "subject_id": subject_id,
                            "score": score,
                            "box": list(box),
                            "format": fmt,
                            "views": 1,
                        }
                    ).encode()
                )
                try:
                    data_key = new_data_key()
                    try:
                        wrapped = self._key.wrap(
                            data_key, self._context("key", alert_id, expires_us)
                        )
                        cipher = data_cipher(data_key)
                    finally:
                        _wipe(data_key)
                    sealed_record = seal(
                        cipher, record, self._context("record", alert_id, expires_us)
                    )
                    sealed_crop = seal(
                        cipher, encoded, self._context("crop", alert_id, expires_us)
                    )
                finally:
                    _wipe(record)
                with self._write(conn):
                    conn.execute(
                        "INSERT INTO alerts (alert_id, expires, wrapped_key, record,"
                        " crop) VALUES (?, ?, ?, ?, ?)",
                        (alert_id, expires_us, wrapped, sealed_record, sealed_crop),
                    )
        finally:
            if isinstance(encoded, np.ndarray):
                encoded.fill(0)
        return Alert(
            alert_id=alert_id,
            deployment_id=deployment_id,
            camera_id=camera_id,
            time=when,
            subject_id=subject_id,
            score=score,
            box=box,
            expires=_dt(expires_us),
        )

    def _improve(
        self,
        alert_id: str,
        *,
        score: float,
        box: tuple[float, float, float, float],
        crop: npt.NDArray[np.uint8] | bytes | bytearray | memoryview,
        image_format: ImageFormat = "png",
    ) -> Alert:
        """Replaces a live alert's crop, score and box with a better view.

        For the best-scoring frame of the alert's track: nothing changes unless
        ``score`` is higher than the stored one.

        The alert keeps its id, time, expiry, holds and reviews; the new crop is
        encrypted with the alert's own data key, in one transaction.

        Args:
            alert_id: A live alert.
            score: The new frame's score; nothing changes unless it is higher.
            box: Its face box.
            crop: Its crop, as in :meth:`add`.
            image_format: ``"png"`` or ``"jpeg"``.

        Returns:
            The alert as stored afterwards.

        Raises:
            KeyError: Unknown alert.
            RetentionError: The alert has expired or been purged.
            ValueError: Bad score, box or crop.
        """
        score = _score(score)
        box = _box(box)
        if image_format not in ("png", "jpeg"):
            raise ValueError(
                f"image_format must be 'png' or 'jpeg', got {image_format!r}"
            )
        with self._session() as conn:
            now_us = _us(self._now())
            opened = self._open(conn, _id(alert_id), now_us)
            current = self._alert(conn, opened, now_us)
            if score <= current.score:
                return current
            encoded, fmt = _encode(crop, image_format)
            record = bytearray(
                json.dumps(
                    {
                        "deployment_id": current.deployment_id,
                        "camera_id": current.camera_id,
                        "time": _us(current.time),
                        "subject_id": current.subject_id,
                        "score": score,
                        "box": list(box),
                        "format": fmt,
                        "views": current.views + 1,
                    }
                ).encode()
            )
            try:
                expires = opened.expires
                sealed_record = seal(
                    opened.cipher, record, self._context("record", alert_id, expires)
                )
                sealed_crop = seal(
                    opened.cipher, encoded, self._context("crop", alert_id, expires)
                )
            finally:
                _wipe(record)
                if isinstance(encoded, np.ndarray):
                    encoded.fill(0)
            with self._write(conn):
                conn.execute(
                    "UPDATE alerts SET record = ?, crop = ? WHERE alert_id = ?",
                    (sealed_record, sealed_crop, alert_id),
                )
            return self._alert(conn, self._open(conn, alert_id, now_us), now_us)

    def _hold(
        self, alert_id: str, reason: str, until: datetime, *, by: str | None = None
    ) -> Alert:
        """Keeps an alert past its expiry, for a named case, until ``until``.

        The hold is recorded (reason, who, when; encrypted with the alert) and
        replaces any earlier hold; renew a hold by placing another before it ends.

        Args:
            alert_id: A live alert.
            reason: Why (the case reference); required.
            until: When the hold ends: after now and at most ``policy.max_hold``
                from now.
            by: Who places it (recorded).

        Returns:
            The alert with :attr:`Alert.held_until` set.

        Raises:
            KeyError: Unknown alert.
            RetentionError: The alert has expired or been purged.
            ValueError: Empty reason, a naive ``until``, or ``until`` not in the
                future or beyond ``max_hold``.
            TypeError: ``until`` is not a datetime.
        """
        reason = _text(reason, "reason")
        who = None if by is None else _text(by, "by")
        end = _aware(until, "until")
        with self._session() as conn:
            now = self._now()
            if end <= now:
                raise ValueError(
                    f"a hold must end in the future: {end.isoformat()} is not after "
                    f"{now.isoformat()}"
                )
            limit = now + self._policy.max_hold
            if end > limit:
                raise ValueError(
                    f"a hold may last at most {self._policy.max_hold} (until "
                    f"{limit.isoformat()}); renew it with a new hold before it ends"
                )
            now_us, end_us = _us(now), _us(end)
            with self._write(conn):
                opened = self._open(conn, _id(alert_id), now_us)
                seq = _next_seq(conn, "holds")
                entry = {"reason": reason, "by": who, "time": now_us}
                sealed = seal(
                    opened.cipher,
                    json.dumps(entry).encode(),
                    self._context("hold", alert_id, seq, "hold", end_us),
                )
                conn.execute(
                    "INSERT INTO holds (seq, alert_id, action, until, sealed)"
                    " VALUES (?, ?, 'hold', ?, ?)",
                    (seq, alert_id, end_us, sealed),
                )
            _log.info("alert %s held until %s", alert_id, end.isoformat())
            return self._alert(conn, self._open(conn, alert_id, now_us), now_us)

    def _release(self, alert_id: str, *, by: str | None = None) -> None:
        """Ends the hold on an alert (recorded); it then follows its own expiry.

        If that expiry has passed, the alert can no longer be read and the next
        :meth:`purge` removes it.

        Raises:
            KeyError: Unknown alert.
            RetentionError: The alert has expired or been purged.
            ValueError: The alert is not on hold.
        """
        who = None if by is None else _text(by, "by")
        with self._session() as conn:
            now_us = _us(self._now())
            with self._write(conn):
                opened = self._open(conn, _id(alert_id), now_us)
                if _active(opened.holds, now_us) is None:
                    raise ValueError(f"alert {alert_id} is not on hold")
                seq = _next_seq(conn, "holds")
                sealed = seal(
                    opened.cipher,
                    json.dumps({"reason": None, "by": who, "time": now_us}).encode(),
                    self._context("hold", alert_id, seq, "release", None),
                )
                conn.execute(
                    "INSERT INTO holds (seq, alert_id, action, until, sealed)"
                    " VALUES (?, ?, 'release', NULL, ?)",
                    (seq, alert_id, sealed),
                )
            _log.info("hold on alert %s released", alert_id)

    def _review(
        self,
        alert_id: str,
        reviewer: str,
        decision: Decision,
        note: str | None = None,
    ) -> Alert:
        """Records a human review of a live alert (encrypted with the alert).

        Every review is kept; :attr:`Alert.decisions` counts a reviewer once
        (their latest decision).

        Args:
            alert_id: A live alert.
            reviewer: Who reviews (an officer's id).
            decision: ``"confirmed"``, ``"false_alert"`` or ``"inconclusive"``.
            note: Optional free text.

        Returns:
            The alert with the review appended to :attr:`Alert.reviews`.

        Raises:
            KeyError: Unknown alert.
            RetentionError: The alert has expired or been purged.
            ValueError: Empty reviewer or unknown decision.
        """
        with self._session() as conn:
            now = self._now()
            entry = Review(reviewer, decision, now, note)
            now_us = _us(now)
            with self._write(conn):
                opened = self._open(conn, _id(alert_id), now_us)
                seq = _next_seq(conn, "reviews")
                sealed = seal(
                    opened.cipher,
                    json.dumps(
                        {
                            "reviewer": entry.reviewer,
                            "decision": entry.decision,
                            "time": now_us,
                            "note": entry.note,
                        }
                    ).encode(),
                    self._context("review", alert_id, seq),
                )
                conn.execute(
                    "INSERT INTO reviews (seq, alert_id, sealed) VALUES (?, ?, ?)",
                    (seq, alert_id, sealed),
                )
            _log.info("review recorded for alert %s", alert_id)
            return self._alert(conn, self._open(conn, alert_id, now_us), now_us)

    def _purge(self) -> list[str]:
        """Destroys every expired alert that no hold keeps; safe to repeat.

        In order: the wrapped data keys are overwritten and set to NULL (one
        committed transaction: from then on the alerts cannot be decrypted, from
        this file or any copy made later); then the rows, holds and reviews are
        deleted, leaving a tombstone (id, expiry, purge time); then the WAL is
        checkpointed and truncated and the file vacuumed, so the ciphertext
        leaves the file too. A hold whose record fails authentication keeps
        nothing (it is logged as a warning).

        Returns:
            The ids purged by this call, oldest first.

        Raises:
            AlertStoreError: The store cannot be written.
        """
        with self._session() as conn:
            now_us = _us(self._now())
            kept = ignored = 0
            with self._write(conn):
                doomed: list[tuple[str]] = []
                rows = conn.execute(
                    "SELECT alert_id, expires, wrapped_key FROM alerts WHERE"
                    " wrapped_key IS NOT NULL AND expires <= ? ORDER BY seq",
                    (now_us,),
                ).fetchall()
                for alert_id, expires_us, wrapped in rows:
                    holds = _hold_rows(conn, alert_id)
                    if _claims_hold(holds, now_us):
                        try:
                            cipher = self._cipher(alert_id, expires_us, wrapped)
                            self._holds(cipher, alert_id, holds)
                        except AlertStoreError:
                            ignored += 1
                        else:
                            kept += 1
                            continue
                    doomed.append((alert_id,))
                conn.executemany(
                    "UPDATE alerts SET wrapped_key = zeroblob(length(wrapped_key))"
                    " WHERE alert_id = ?",
                    doomed,
                )
                conn.executemany(
                    "UPDATE alerts SET wrapped_key = NULL WHERE alert_id = ?", doomed
                )
            with self._write(conn):
                # Also rows shredded by an earlier purge that stopped before this step.
                gone = [
                    row[0]
                    for row in conn.execute(
                        "SELECT alert_id FROM alerts WHERE wrapped_key IS NULL"
                        " ORDER BY seq"
                    )
                ]
                conn.execute(
                    "INSERT OR IGNORE INTO tombstones (alert_id, expires, purged)"
                    " SELECT alert_id, expires, ? FROM alerts"
                    " WHERE wrapped_key IS NULL",
                    (now_us,),
                )
                conn.execute("DELETE FROM alerts WHERE wrapped_key IS NULL")
                for table in ("holds", "reviews"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE alert_id NOT IN"
                        " (SELECT alert_id FROM alerts)"
                    )
            if gone or self._compact_pending:
                self._compact(conn)
        if ignored:
            _log.warning(
                "%d holds failed authentication and were ignored by purge", ignored
            )
        if gone or kept:
            _log.info(
                "purge: %d expired alerts destroyed, %d kept by holds", len(gone), kept
            )
        return gone

    # -- reading -------------------------------------------------------------------

    def get(self, alert_id: str) -> Alert:
        """The alert, decrypted and authenticated.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired (and no hold keeps it), even if
                :meth:`purge` has not run yet, or it has been purged.
            AlertStoreError: Its record has been altered.
        """
        with self._session() as conn:
            now_us = _us(self._now())
            return self._alert(conn, self._open(conn, _id(alert_id), now_us), now_us)

    def crop(self, alert_id: str) -> bytes:
        """The alert's face crop as stored: PNG or JPEG bytes.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired or been purged.
            AlertStoreError: Its crop has been altered.
        """
        with self._session() as conn:
            opened = self._open(conn, _id(alert_id), _us(self._now()))
            aad = self._context("crop", alert_id, opened.expires)
            try:
                return open_sealed(opened.cipher, opened.crop, aad)
            except InvalidTag:
                raise AlertStoreError(
                    f"the crop of alert {alert_id} was altered"
                ) from None

    def crop_image(self, alert_id: str) -> npt.NDArray[np.uint8]:
        """The alert's face crop decoded to a BGR ``uint8`` array ``(H, W, 3)``.

        The encoded plaintext is overwritten with zeros once decoded.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired or been purged.
            AlertStoreError: Its crop has been altered or cannot be decoded.
        """
        with self._session() as conn:
            opened = self._open(conn, _id(alert_id), _us(self._now()))
            aad = self._context("crop", alert_id, opened.expires)
            if len(opened.crop) < _SEAL_OVERHEAD:
                raise AlertStoreError(f"the crop of alert {alert_id} was altered")
            encoded = np.zeros(len(opened.crop) - _SEAL_OVERHEAD, np.uint8)
            try:
                try:
                    open_sealed_into(opened.cipher, opened.crop, aad, encoded)
                except InvalidTag:
                    raise AlertStoreError(
                        f"the crop of alert {alert_id} was altered"
                    ) from None
                image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            finally:
                encoded.fill(0)
        if image is None:
            raise AlertStoreError(f"the crop of alert {alert_id} cannot be decoded")
        return np.asarray(image, dtype=np.uint8)

    def holds(self, alert_id: str) -> tuple[Hold, ...]:
        """The alert's hold history (holds and releases), oldest first.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired or been purged.
            AlertStoreError: The history has been altered.
        """
        with self._session() as conn:
            return self._open(conn, _id(alert_id), _us(self._now())).holds

    def alerts(self) -> list[Alert]:
        """Every live alert (not expired, or held), oldest first.

        Raises:
            AlertStoreError: A live alert has been altered.
        """
        self._warn_if_unpurged()
        with self._session() as conn:
            now_us = _us(self._now())
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT a.alert_id{_LIVE} ORDER BY a.seq", {"now": now_us}
                )
            ]
            out = [self._alert(conn, self._open(conn, i, now_us), now_us) for i in ids]
        out.sort(key=lambda alert: alert.time)  # stable: ties in insertion order
        return out

    def __len__(self) -> int:
        self._warn_if_unpurged()
        with self._session() as conn:
            now_us = _us(self._now())
            row = conn.execute(f"SELECT count(*){_LIVE}", {"now": now_us}).fetchone()
            return int(row[0])

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Closes the store (SQLite checkpoints and removes the WAL); idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def __repr__(self) -> str:
        try:
            count = f"alerts={len(self)}"
        except (ValueError, AlertStoreError, TypeError):
            count = "closed" if self.closed else "alerts=?"
        return f"AlertStore(path={str(self._path)!r}, key_id={self.key_id!r}, {count})"

    # -- internals -----------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """Holds the lock on an open store; SQLite errors become AlertStoreError."""
        with self._lock:
            if self._conn is None:
                raise ValueError("the alert store is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise AlertStoreError(f"alert store {self._path}: {exc}") from exc

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _now(self) -> datetime:
        return _aware(self._clock(), "the clock's time")

    def _context(self, label: str, *parts: object) -> bytes:
        return _context(self._store_id, label, *parts)

    def _cipher(self, alert_id: str, expires_us: int, wrapped: bytes) -> AESGCM:
        try:
            data_key = self._key.unwrap(
                bytes(wrapped), self._context("key", alert_id, expires_us)
            )
        except WrongKeyError:
            raise AlertStoreError(
                f"alert {alert_id} was altered: its data key does not belong to it"
            ) from None
        try:
            return data_cipher(data_key)
        finally:
            _wipe(data_key)

    def _open(self, conn: sqlite3.Connection, alert_id: str, now_us: int) -> _Opened:
        """Loads a live alert, or raises KeyError / RetentionError / AlertStoreError."""
        row = conn.execute(
            "SELECT expires, wrapped_key, record, crop FROM alerts WHERE alert_id = ?",
            (alert_id,),
        ).fetchone()
        if row is None:
            tomb = conn.execute(
                "SELECT purged FROM tombstones WHERE alert_id = ?", (alert_id,)
            ).fetchone()
            if tomb is not None:
                raise RetentionError(
                    f"alert {alert_id} was purged at {_dt(tomb[0]).isoformat()}"
                )
            raise KeyError(alert_id)
        expires_us, wrapped, record, crop = row
        if wrapped is None:
            raise RetentionError(f"alert {alert_id} was purged (its key is destroyed)")
        holds = _hold_rows(conn, alert_id)
        if now_us >= expires_us and not _claims_hold(holds, now_us):
            raise RetentionError(
                f"alert {alert_id} expired at {_dt(expires_us).isoformat()}"
            )
        cipher = self._cipher(alert_id, expires_us, wrapped)
        verified = self._holds(cipher, alert_id, holds)
        return _Opened(alert_id, expires_us, cipher, record, crop, verified)

    def _holds(
        self, cipher: AESGCM, alert_id: str, rows: list[tuple[Any, ...]]
    ) -> tuple[Hold, ...]:
        out = []
        for seq, action, until, sealed in rows:
            aad = self._context("hold", alert_id, seq, action, until)
            try:
                entry = json.loads(open_sealed(cipher, sealed, aad))
                out.append(
                    Hold(
                        action=action,
                        time=_dt(entry["time"]),
                        reason=entry["reason"],
                        until=None if until is None else _dt(until),
                        by=entry["by"],
                    )
                )
            except (InvalidTag, ValueError, KeyError, TypeError):
                raise AlertStoreError(
                    f"the hold history of alert {alert_id} was altered"
                ) from None
        return tuple(out)

    def _reviews(self, conn: sqlite3.Connection, opened: _Opened) -> tuple[Review, ...]:
        out = []
        for seq, sealed in conn.execute(
            "SELECT seq, sealed FROM reviews WHERE alert_id = ? ORDER BY seq",
            (opened.alert_id,),
        ):
            aad = self._context("review", opened.alert_id, seq)
            try:
                entry = json.loads(open_sealed(opened.cipher, sealed, aad))
                out.append(
                    Review(
                        reviewer=entry["reviewer"],
                        decision=entry["decision"],
                        time=_dt(entry["time"]),
                        note=entry["note"],
                    )
                )
            except (InvalidTag, ValueError, KeyError, TypeError):
                raise AlertStoreError(
                    f"the reviews of alert {opened.alert_id} were altered"
                ) from None
        return tuple(out)

    def _alert(self, conn: sqlite3.Connection, opened: _Opened, now_us: int) -> Alert:
        aad = self._context("record", opened.alert_id, opened.expires)
        try:
            entry = json.loads(open_sealed(opened.cipher, opened.record, aad))
            x1, y1, x2, y2 = (float(v) for v in entry["box"])
            held = _active(opened.holds, now_us)
            return Alert(
                alert_id=opened.alert_id,
                deployment_id=str(entry["deployment_id"]),
                camera_id=str(entry["camera_id"]),
                time=_dt(entry["time"]),
                subject_id=str(entry["subject_id"]),
                score=float(entry["score"]),
                box=(x1, y1, x2, y2),
                expires=_dt(opened.expires),
                held_until=None if held is None else held.until,
                hold_reason=None if held is None else held.reason,
                reviews=self._reviews(conn, opened),
                views=int(entry.get("views", 1)),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise AlertStoreError(
                f"the record of alert {opened.alert_id} was altered"
            ) from None

    def _compact(self, conn: sqlite3.Connection) -> None:
        """Moves the WAL into the file, truncates it, and vacuums the file."""
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            conn.execute("VACUUM")
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as exc:
            self._compact_pending = True
            _log.warning("purge could not compact the alert store yet: %s", exc)
            return
        self._compact_pending = bool(busy)
        if busy:
            _log.warning("purge could not truncate the WAL: a reader holds it")

    # -- what the records layer reconciles against the audit log -----------------------

    def _trail_state(self) -> TrailState:
        """What the store holds, for :class:`~lfr.alerts.Records` to check its log.

        Every alert whose key is not destroyed, read *whether or not it has
        expired* (reconciliation runs before any purge, so an alert stored but
        never audited is still readable), with its reviews and hold history; and
        the ids whose key is destroyed (tombstones, or rows a purge shredded).
        An alert whose record does not authenticate is listed in ``unreadable``.
        """
        state = TrailState()
        with self._session() as conn:
            rows = conn.execute(
                "SELECT alert_id, expires, wrapped_key, record, crop FROM alerts"
                " ORDER BY seq"
            ).fetchall()
            for alert_id, expires_us, wrapped, record, crop in rows:
                if wrapped is None:
                    state.buried.append(alert_id)
                    continue
                try:
                    cipher = self._cipher(alert_id, expires_us, wrapped)
                    holds = self._holds(cipher, alert_id, _hold_rows(conn, alert_id))
                    opened = _Opened(alert_id, expires_us, cipher, record, crop, holds)
                    state.alerts.append(self._alert(conn, opened, _us(self._now())))
                    state.holds[alert_id] = holds
                except AlertStoreError:
                    state.unreadable.append(alert_id)
            state.buried.extend(
                row[0]
                for row in conn.execute(
                    "SELECT alert_id FROM tombstones ORDER BY purged, alert_id"
                )
            )
        return state

    def _compact_now(self) -> bool:
        """Tries the checkpoint a purge left pending; whether the WAL is clean now."""
        with self._session() as conn:
            if self._compact_pending:
                self._compact(conn)
            return not self._compact_pending

    def _warn_if_unpurged(self) -> None:
        """Says once per store file that expired alerts wait for an audited purge.

        Called when a store that does not purge lists its alerts.
        """
        if self._purging or str(self._path.resolve()) in _WARNED:
            return
        with self._session() as conn:
            now_us = _us(self._now())
            row = conn.execute(
                "SELECT count(*) FROM alerts WHERE wrapped_key IS NULL OR expires <= ?",
                (now_us,),
            ).fetchone()
        waiting = int(row[0])
        key = str(self._path.resolve())
        if waiting and key not in _WARNED:
            _WARNED.add(key)
            _log.warning(
                "alert store %s was opened without an audit log: it is read-only for "
                "retention and does not purge its %d expired alert(s); purge them "
                "with lfr.alerts.Records or `lfr alerts purge --audit LOG "
                "--signing-key SK`",
                self._path,
                waiting,
            )


@dataclass
class TrailState:
    """What a store holds, as :meth:`AlertStore._trail_state` reads it.

    Attributes:
        alerts: Every alert whose key is not destroyed, expired or not, in
            insertion order.
        holds: Each of those alerts' hold history.
        buried: Ids whose key is destroyed (purged), oldest first.
        unreadable: Ids whose record does not authenticate.
    """

    alerts: list[Alert] = field(default_factory=list)
    holds: dict[str, tuple[Hold, ...]] = field(default_factory=dict)
    buried: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


#: Store files already warned about (see AlertStore._warn_if_unpurged).
_WARNED: set[str] = set()


# -- helpers -----------------------------------------------------------------------


def _claims_hold(rows: list[tuple[Any, ...]], now_us: int) -> bool:
    """Whether the latest hold row (unverified) keeps the alert at ``now_us``."""
    if not rows:
        return False
    _, action, until, _ = rows[-1]
    return bool(action == "hold" and until is not None and until > now_us)


def _active(holds: tuple[Hold, ...], now_us: int) -> Hold | None:
    """The hold in force at ``now_us`` (the latest entry, if a hold not yet ended)."""
    last = holds[-1] if holds else None
    if last and last.action == "hold" and last.until and _us(last.until) > now_us:
        return last
    return None
