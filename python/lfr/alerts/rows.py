"""What an alert repository stores: opaque rows, and the format they belong to.

A repository (:class:`lfr.protocols.AlertRepository`; lfr's is
:class:`lfr.alerts.repository.SqliteRepository`) keeps these rows and never
sees a key or a plaintext: ``wrapped_key``, ``record``, ``crop`` and ``sealed``
are ciphertext made by :class:`lfr.alerts.sealing.Sealer`. What stays in
plaintext is what retention needs (ids, expiry, hold actions and their ends),
and it is authenticated as associated data of the ciphertext.

This module imports nothing of lfr, so :mod:`lfr.protocols` can name its types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "AlertRow",
    "HoldAction",
    "HoldRow",
    "RetentionRow",
    "ReviewRow",
]

#: The alert store format this lfr reads and writes (SQLite ``user_version``; also
#: bound into every ciphertext's associated data).
FORMAT_VERSION = 1
#: The format's name, in the store's metadata and every associated data.
FORMAT = "lfr-alert-store"

#: A hold-history entry: a hold placed, or a hold released.
HoldAction = Literal["hold", "release"]


@dataclass(frozen=True)
class AlertRow:
    """One stored alert.

    Attributes:
        alert_id: The alert's id.
        expires_us: Its expiry, in microseconds since the Unix epoch.
        wrapped_key: Its data key wrapped by the store key; ``None`` once a
            purge has destroyed it (the row is then *shredded*).
        record: The sealed record (subject, score, box, camera, deployment, time).
        crop: The sealed face crop.
    """

    alert_id: str
    expires_us: int
    wrapped_key: bytes | None
    record: bytes
    crop: bytes


@dataclass(frozen=True)
class HoldRow:
    """One entry of an alert's hold history.

    Attributes:
        seq: Its place in the history of all holds (increasing).
        alert_id: The alert it is about.
        action: ``"hold"`` or ``"release"``.
        until_us: When a hold ends (microseconds since the epoch); ``None`` for
            a release.
        sealed: The sealed entry (reason, who, when).
    """

    seq: int
    alert_id: str
    action: HoldAction
    until_us: int | None
    sealed: bytes


@dataclass(frozen=True)
class ReviewRow:
    """One human review of an alert.

    Attributes:
        seq: Its place among all reviews (increasing).
        alert_id: The alert reviewed.
        sealed: The sealed review (reviewer, decision, time, note).
    """

    seq: int
    alert_id: str
    sealed: bytes


@dataclass(frozen=True)
class RetentionRow:
    """The plaintext of one alert that retention decides on (no ciphertext).

    Attributes:
        alert_id: The alert's id.
        expires_us: Its expiry (microseconds since the epoch).
        shredded: Whether its data key is destroyed.
        last_action: The action of its latest hold-history entry, if any.
        last_until_us: That entry's end (``None`` for a release or no entry).
    """

    alert_id: str
    expires_us: int
    shredded: bool
    last_action: HoldAction | None = None
    last_until_us: int | None = None
