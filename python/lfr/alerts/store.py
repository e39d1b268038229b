"""The alert store: encrypted alerts that expire for good.

An :class:`AlertStore` holds the alerts of a deployment, by default in one SQLite
file (WAL journal). Each alert (its face crop, subject, score, box, camera,
deployment and time) is encrypted with its own random AES-256-GCM data key; only
that key, wrapped by the store key (a :class:`lfr.keys.KeyProvider`), is stored
beside it. In plaintext stay only what retention needs: the alert id and its
expiry (authenticated), whether it is on hold and until when (authenticated), and,
after purging, a tombstone.

Expiry is final: an expired alert cannot be read even before it is purged, and a
purge destroys its wrapped data key first (crypto-shredding), then deletes its
rows, then checkpoints the WAL and vacuums the file. docs/retention.md says what
is stored where and what an operator must configure.

The store composes three parts and adds the public API:

- a repository (:class:`lfr.protocols.AlertRepository`; lfr's is
  :class:`lfr.alerts.repository.SqliteRepository`): the rows, and every SQL
  statement; it never sees a key or a plaintext;
- a :class:`lfr.alerts.sealing.Sealer`: the envelope encryption and the
  associated data that binds each ciphertext to its row;
- :mod:`lfr.alerts.rules`: the retention rules, as pure functions.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from lfr._closing import Closing
from lfr.alerts import rules
from lfr.alerts.repository import SqliteRepository
from lfr.alerts.rows import AlertRow, HoldRow, ReviewRow
from lfr.alerts.sealing import AlertKey, AlteredError, Sealer, plaintext_size
from lfr.alerts.values import (
    _aware,
    _box,
    _dt,
    _encode,
    _id,
    _reason,
    _score,
    _text,
    _us,
    _utcnow,
    _uuid,
    _wipe,
)
from lfr.audit.log import LogHead
from lfr.errors import AlertStoreError, RetentionError
from lfr.keys import KeyProvider
from lfr.protocols import AlertRepository
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
    key: AlertKey
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
    record. The repository is shared by all threads: each operation holds its
    session.

    Args:
        path: The store file. Its directory must exist; SQLite keeps ``-wal`` and
            ``-shm`` files beside it while it is open.
        key: The store key that wraps each alert's data key (a
            :class:`lfr.Key` or a site's KMS behind :class:`lfr.keys.KeyProvider`).
            Keep it away from the store.
        policy: Retention rules; ``alert_ttl`` and ``max_hold`` are enforced here.
        clock: Returns the current time as an aware UTC datetime; defaults to
            ``datetime.now(timezone.utc)``. Tests pass their own to move time.
        repository: Where the rows are kept, if not in the SQLite file at
            ``path`` (:class:`lfr.alerts.repository.SqliteRepository`): any
            :class:`lfr.protocols.AlertRepository`, already open; the store
            checks ``key`` against its metadata and closes it on :meth:`close`.
            ``path`` then only names the store.

    Raises:
        WrongStoreKeyError: The store was created with another key (both key
            ids are named), a watchlist's key for example: a store has its own
            key. A :class:`~lfr.errors.WrongKeyError` too.
        AlertStoreError: The file is not an lfr alert store, is damaged, or has an
            unknown format version. In every error case the file is left as it was.
        TypeError: ``key``, ``policy``, ``clock`` or ``repository`` has the
            wrong type.

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
        repository: AlertRepository | None = None,
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
        if repository is not None and not isinstance(repository, AlertRepository):
            raise TypeError(
                "repository must be an lfr.protocols.AlertRepository, got "
                f"{type(repository).__name__}"
            )
        self._path = Path(path)
        self._key = key
        self._policy = policy
        self._clock: Callable[[], datetime] = clock or _utcnow
        self._purging = False
        self._clock_behind: tuple[datetime, datetime] | None = None
        where = f"alert store {self._path}"
        if repository is None:
            # Created (if new) and checked read-only; the key is checked before
            # the file is opened for writing, so a wrong key leaves it as it was.
            sqlite = SqliteRepository(
                self._path, lambda: Sealer.new_meta(key, self._now().isoformat())
            )
            self._sealer = Sealer(key, sqlite.meta, where)
            sqlite.connect()
            repository = sqlite
        else:
            self._sealer = Sealer(key, repository.meta, where)
        self._repo: AlertRepository = repository

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
        return self._repo.compact_pending

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._repo.closed

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
            with self._repo.session():
                now = self._now()
                when = now if when is None else when
                expires = rules.check_alert_time(when, now, self._policy.alert_ttl)
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
                    wrapped, alert_key = self._sealer.new_key(alert_id, expires_us)
                    sealed_record = alert_key.seal_record(record)
                    sealed_crop = alert_key.seal_crop(encoded)
                finally:
                    _wipe(record)
                row = AlertRow(
                    alert_id, expires_us, wrapped, sealed_record, sealed_crop
                )
                with self._repo.transaction():
                    self._mark_time()
                    self._repo.insert(row)
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
        with self._repo.session():
            now_us = _us(self._now())
            opened = self._open(_id(alert_id), now_us)
            current = self._alert(opened, now_us)
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
                sealed_record = opened.key.seal_record(record)
                sealed_crop = opened.key.seal_crop(encoded)
            finally:
                _wipe(record)
                if isinstance(encoded, np.ndarray):
                    encoded.fill(0)
            with self._repo.transaction():
                self._mark_time()
                self._repo.replace_sealed(alert_id, sealed_record, sealed_crop)
            return self._alert(self._open(alert_id, now_us), now_us)

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
            ValueError: A reason with no letter or digit, a naive ``until``,
                or ``until`` not in the future or beyond ``max_hold``.
            TypeError: ``until`` is not a datetime.
        """
        reason = _reason(reason)
        who = None if by is None else _text(by, "by")
        end = _aware(until, "until")
        with self._repo.session():
            now = self._now()
            rules.check_hold_end(end, now, self._policy.max_hold)
            now_us, end_us = _us(now), _us(end)
            with self._repo.transaction():
                self._mark_time()
                opened = self._open(_id(alert_id), now_us)
                seq = self._repo.next_seq("holds")
                entry = {"reason": reason, "by": who, "time": now_us}
                sealed = opened.key.seal_hold(
                    seq, "hold", end_us, json.dumps(entry).encode()
                )
                self._repo.add_hold(HoldRow(seq, alert_id, "hold", end_us, sealed))
            _log.info("alert %s held until %s", alert_id, end.isoformat())
            return self._alert(self._open(alert_id, now_us), now_us)

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
        with self._repo.session():
            now_us = _us(self._now())
            with self._repo.transaction():
                self._mark_time()
                opened = self._open(_id(alert_id), now_us)
                if _active(opened.holds, now_us) is None:
                    raise ValueError(f"alert {alert_id} is not on hold")
                seq = self._repo.next_seq("holds")
                sealed = opened.key.seal_hold(
                    seq,
                    "release",
                    None,
                    json.dumps({"reason": None, "by": who, "time": now_us}).encode(),
                )
                self._repo.add_hold(HoldRow(seq, alert_id, "release", None, sealed))
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
        with self._repo.session():
            now = self._now()
            entry = Review(reviewer, decision, now, note)
            now_us = _us(now)
            with self._repo.transaction():
                self._mark_time()
                opened = self._open(_id(alert_id), now_us)
                seq = self._repo.next_seq("reviews")
                sealed = opened.key.seal_review(
                    seq,
                    json.dumps(
                        {
                            "reviewer": entry.reviewer,
                            "decision": entry.decision,
                            "time": now_us,
                            "note": entry.note,
                        }
                    ).encode(),
                )
                self._repo.add_review(ReviewRow(seq, alert_id, sealed))
            _log.info("review recorded for alert %s", alert_id)
            return self._alert(self._open(alert_id, now_us), now_us)

    def _purge(self) -> list[str]:
        """Destroys every expired alert that no hold keeps; safe to repeat.

        In order: the wrapped data keys are overwritten and set to NULL (one
        committed transaction: from then on the alerts cannot be decrypted, from
        this file or any copy made later); then the rows, holds and reviews are
        deleted, leaving a tombstone (id, expiry, purge time); then the WAL is
        checkpointed and truncated and the file vacuumed, so the ciphertext
        leaves the file too. A hold whose record fails authentication keeps
        nothing (it is logged as a warning). Which alerts go is
        :func:`lfr.alerts.rules.plan_purge`'s decision.

        Returns:
            The ids purged by this call, oldest first.

        Raises:
            AlertStoreError: The store cannot be written.
        """
        with self._repo.session():
            now_us = _us(self._now())
            with self._repo.transaction():
                self._mark_time()
                plan = rules.plan_purge(
                    self._repo.retention(), now_us, self._hold_authentic
                )
                self._repo.shred(plan.doomed)
            with self._repo.transaction():
                self._mark_time()
                # Also rows shredded by an earlier purge that stopped before this step.
                gone = self._repo.bury(now_us)
            if gone or self._repo.compact_pending:
                self._repo.compact()
        if plan.ignored:
            _log.warning(
                "%d holds failed authentication and were ignored by purge",
                plan.ignored,
            )
        if gone or plan.kept:
            _log.info(
                "purge: %d expired alerts destroyed, %d kept by holds",
                len(gone),
                plan.kept,
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
        with self._repo.session():
            now_us = _us(self._now())
            return self._alert(self._open(_id(alert_id), now_us), now_us)

    def _crop(self, alert_id: str) -> bytes:
        """The alert's face crop as stored: PNG or JPEG bytes.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired or been purged.
            AlertStoreError: Its crop has been altered.
        """
        with self._repo.session():
            opened = self._open(_id(alert_id), _us(self._now()))
            try:
                return opened.key.open_crop(opened.crop)
            except AlteredError:
                raise AlertStoreError(
                    f"the crop of alert {alert_id} was altered"
                ) from None

    def _crop_image(self, alert_id: str) -> npt.NDArray[np.uint8]:
        """The alert's face crop decoded to a BGR ``uint8`` array ``(H, W, 3)``.

        The encoded plaintext is overwritten with zeros once decoded.

        Raises:
            KeyError: Unknown alert.
            RetentionError: It has expired or been purged.
            AlertStoreError: Its crop has been altered or cannot be decoded.
        """
        with self._repo.session():
            opened = self._open(_id(alert_id), _us(self._now()))
            try:
                size = plaintext_size(opened.crop)
            except AlteredError:
                raise AlertStoreError(
                    f"the crop of alert {alert_id} was altered"
                ) from None
            encoded = np.zeros(size, np.uint8)
            try:
                try:
                    opened.key.open_crop_into(opened.crop, encoded)
                except AlteredError:
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
        with self._repo.session():
            return self._open(_id(alert_id), _us(self._now())).holds

    def alerts(self, *, damaged: list[str] | None = None) -> list[Alert]:
        """Every live alert (not expired, or held), oldest first.

        Args:
            damaged: A list to collect the ids of live alerts that do not
                authenticate (altered: a forged hold or review, a moved key);
                they are skipped and the others returned. ``None``: the first
                one raises.

        Raises:
            AlertStoreError: A live alert has been altered (without ``damaged``).
        """
        self._warn_if_unpurged()
        out: list[Alert] = []
        with self._repo.session():
            now_us = _us(self._now())
            ids = [
                row.alert_id
                for row in self._repo.retention()
                if rules.live(row, now_us)
            ]
            for alert_id in ids:
                try:
                    out.append(self._alert(self._open(alert_id, now_us), now_us))
                except AlertStoreError:
                    if damaged is None:
                        raise
                    damaged.append(alert_id)
        out.sort(key=lambda alert: alert.time)  # stable: ties in insertion order
        return out

    def __len__(self) -> int:
        self._warn_if_unpurged()
        with self._repo.session():
            now_us = _us(self._now())
            return sum(1 for row in self._repo.retention() if rules.live(row, now_us))

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Closes the store (SQLite checkpoints and removes the WAL); idempotent."""
        self._repo.close()

    def __repr__(self) -> str:
        try:
            count = f"alerts={len(self)}"
        except (ValueError, AlertStoreError, TypeError):
            count = "closed" if self.closed else "alerts=?"
        return f"AlertStore(path={str(self._path)!r}, key_id={self.key_id!r}, {count})"

    # -- internals -----------------------------------------------------------------

    def _now(self) -> datetime:
        """The store's time: the clock, never earlier than the high-water mark.

        The mark is the latest time a write to this store was made at. A clock
        more than :data:`lfr.alerts.rules.SKEW` behind it (set back, by mistake
        or to read expired alerts again) does not move expiry back: the mark is
        used instead, and :attr:`clock_behind` says so (the records layer audits
        it as an ``anomaly`` of kind ``clock_went_back``).
        """
        now = _aware(self._clock(), "the clock's time")
        repo = getattr(self, "_repo", None)
        mark = None if repo is None or repo.closed else repo.high_water()
        if mark is None:
            return now
        marked = _dt(mark)
        if now < marked - rules.SKEW:
            self._clock_behind = (now, marked)
        return max(now, marked)

    def _mark_time(self) -> None:
        """Raises the high-water mark to the clock (inside a write transaction)."""
        self._repo.raise_high_water(_us(_aware(self._clock(), "the clock's time")))

    @property
    def chain(self) -> LogHead | None:
        """The latest audit log of this store's chain, and its head, as last recorded.

        :class:`lfr.alerts.Records` records it when it opens the store with a
        log, after each change it audits, and when it closes; a new log for this
        store must continue it (:meth:`lfr.AuditLog.create` with
        ``previous=store.chain``). ``None`` for a store no log was bound to yet.
        It is not signed: it catches a log deleted, cut short or replaced by
        an older copy, not an operator who rewrites the store file (keep
        checkpoints of the log away from the site for that; docs/audit.md).

        Raises:
            ValueError: The store is closed.
        """
        with self._repo.session():
            link = self._repo.chain()
        return None if link is None else LogHead(*link)

    @property
    def store_id(self) -> str:
        """The store's random id (from its metadata record)."""
        return str(self._repo.meta.get("store_id", ""))

    def _set_chain(self, head: LogHead) -> None:
        """Records ``head`` as the chain's latest (for :class:`lfr.alerts.Records`)."""
        with self._repo.session(), self._repo.transaction():
            self._repo.set_chain(head.log_id, head.records, head.last_hash)

    def _counts(self) -> tuple[int, int]:
        """``(live, purged)``: alerts with their key, and purged ids (tombstones)."""
        with self._repo.session():
            live, shredded, buried = self._repo.counts()
        return live, shredded + buried

    @property
    def clock_behind(self) -> tuple[datetime, datetime] | None:
        """``(clock, mark)`` the last time the clock was found behind the mark.

        ``None`` if it never was since the store was opened. Reads and purges
        then used the mark, not the clock.
        """
        return self._clock_behind

    def _unwrap(self, alert_id: str, expires_us: int, wrapped: bytes) -> AlertKey:
        try:
            return self._sealer.open_key(alert_id, expires_us, wrapped)
        except AlteredError:
            raise AlertStoreError(
                f"alert {alert_id} was altered: its data key does not belong to it"
            ) from None

    def _open(self, alert_id: str, now_us: int) -> _Opened:
        """Loads a live alert, or raises KeyError / RetentionError / AlertStoreError."""
        row = self._repo.alert(alert_id)
        if row is None:
            purged = self._repo.purged_at(alert_id)
            if purged is not None:
                raise RetentionError(
                    f"alert {alert_id} was purged at {_dt(purged).isoformat()}"
                )
            raise KeyError(alert_id)
        if row.wrapped_key is None:
            raise RetentionError(f"alert {alert_id} was purged (its key is destroyed)")
        holds = self._repo.holds(alert_id)
        last = holds[-1] if holds else None
        if not rules.readable(
            row.expires_us,
            None if last is None else last.action,
            None if last is None else last.until_us,
            now_us,
        ):
            raise RetentionError(
                f"alert {alert_id} expired at {_dt(row.expires_us).isoformat()}"
            )
        key = self._unwrap(alert_id, row.expires_us, row.wrapped_key)
        verified = self._holds(key, holds)
        return _Opened(alert_id, row.expires_us, key, row.record, row.crop, verified)

    def _hold_authentic(self, alert_id: str) -> bool:
        """Whether the alert's hold history authenticates (for a purge)."""
        row = self._repo.alert(alert_id)
        if row is None or row.wrapped_key is None:
            return False
        try:
            with self._unwrap(alert_id, row.expires_us, row.wrapped_key) as key:
                self._holds(key, self._repo.holds(alert_id))
        except AlertStoreError:
            return False
        return True

    def _holds(self, key: AlertKey, rows: list[HoldRow]) -> tuple[Hold, ...]:
        out = []
        for row in rows:
            try:
                entry = json.loads(key.open_hold(row))
                out.append(
                    Hold(
                        action=row.action,
                        time=_dt(entry["time"]),
                        reason=entry["reason"],
                        until=None if row.until_us is None else _dt(row.until_us),
                        by=entry["by"],
                    )
                )
            except (AlteredError, ValueError, KeyError, TypeError):
                raise AlertStoreError(
                    f"the hold history of alert {key.alert_id} was altered"
                ) from None
        return tuple(out)

    def _reviews(self, opened: _Opened) -> tuple[Review, ...]:
        out = []
        for row in self._repo.reviews(opened.alert_id):
            try:
                entry = json.loads(opened.key.open_review(row))
                out.append(
                    Review(
                        reviewer=entry["reviewer"],
                        decision=entry["decision"],
                        time=_dt(entry["time"]),
                        note=entry["note"],
                    )
                )
            except (AlteredError, ValueError, KeyError, TypeError):
                raise AlertStoreError(
                    f"the reviews of alert {opened.alert_id} were altered"
                ) from None
        return tuple(out)

    def _alert(self, opened: _Opened, now_us: int) -> Alert:
        try:
            entry = json.loads(opened.key.open_record(opened.record))
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
                reviews=self._reviews(opened),
                views=int(entry.get("views", 1)),
            )
        except (AlteredError, ValueError, KeyError, TypeError):
            raise AlertStoreError(
                f"the record of alert {opened.alert_id} was altered"
            ) from None

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
        with self._repo.session():
            for row in self._repo.alerts():
                alert_id = row.alert_id
                if row.wrapped_key is None:
                    state.buried.append(alert_id)
                    continue
                try:
                    with self._unwrap(alert_id, row.expires_us, row.wrapped_key) as key:
                        holds = self._holds(key, self._repo.holds(alert_id))
                        opened = _Opened(
                            alert_id, row.expires_us, key, row.record, row.crop, holds
                        )
                        state.alerts.append(self._alert(opened, _us(self._now())))
                    state.holds[alert_id] = holds
                except AlertStoreError:
                    state.unreadable.append(alert_id)
            state.buried.extend(self._repo.tombstones())
        return state

    def _compact_now(self) -> bool:
        """Tries the checkpoint a purge left pending; whether the WAL is clean now."""
        with self._repo.session():
            if self._repo.compact_pending:
                self._repo.compact()
            return not self._repo.compact_pending

    def _warn_if_unpurged(self) -> None:
        """Says once per store file that expired alerts wait for an audited purge.

        Called when a store that does not purge lists its alerts.
        """
        if self._purging or str(self._path.resolve()) in _WARNED:
            return
        with self._repo.session():
            now_us = _us(self._now())
            waiting = sum(
                1 for row in self._repo.retention() if rules.awaits_purge(row, now_us)
            )
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


def _active(holds: tuple[Hold, ...], now_us: int) -> Hold | None:
    """The hold in force at ``now_us`` (the latest entry, if a hold not yet ended)."""
    last = holds[-1] if holds else None
    if (
        last is not None
        and last.until is not None
        and rules.hold_in_force(last.action, _us(last.until), now_us)
    ):
        return last
    return None
