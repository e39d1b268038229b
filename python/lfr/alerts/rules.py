"""The retention rules of the alert store, as pure functions (no SQL, no crypto).

Times are microseconds since the Unix epoch (as stored) or aware datetimes (as
given by callers). The rules:

- an alert expires at ``time + alert_ttl``; from then on (``now >= expires``) it
  cannot be read unless a hold keeps it (:func:`expired`, :func:`readable`);
- a hold keeps it while the *latest* entry of its hold history is a hold whose
  end is still ahead (:func:`hold_in_force`); a release, or a hold that has
  ended, keeps nothing;
- a hold ends in the future and at most ``max_hold`` from now
  (:func:`check_hold_end`); an alert's time is at most :data:`SKEW` ahead of the
  clock and not so old that it has expired already (:func:`check_alert_time`);
- a purge destroys every alert whose key is not destroyed yet, that has expired
  and that no *authentic* hold keeps (:func:`plan_purge`).

:class:`lfr.alerts.AlertStore` applies them; a repository only stores rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lfr.alerts.rows import RetentionRow

__all__ = [
    "SKEW",
    "PurgePlan",
    "awaits_purge",
    "check_alert_time",
    "check_hold_end",
    "expired",
    "hold_in_force",
    "live",
    "plan_purge",
    "readable",
]

#: How far an alert's time may be ahead of the store's clock (camera clock skew).
SKEW = timedelta(minutes=1)


def expired(expires_us: int, now_us: int) -> bool:
    """Whether an alert expiring at ``expires_us`` has expired at ``now_us``."""
    return now_us >= expires_us


def hold_in_force(action: str | None, until_us: int | None, now_us: int) -> bool:
    """Whether the latest hold-history entry keeps its alert at ``now_us``.

    Args:
        action: The entry's action (``"hold"`` or ``"release"``), or ``None``
            when the alert has no hold history.
        until_us: The entry's end (``None`` for a release).
        now_us: The time to decide at.
    """
    return action == "hold" and until_us is not None and until_us > now_us


def readable(
    expires_us: int, last_action: str | None, last_until_us: int | None, now_us: int
) -> bool:
    """Whether an alert may be read at ``now_us``: not expired, or held."""
    return not expired(expires_us, now_us) or hold_in_force(
        last_action, last_until_us, now_us
    )


def live(row: RetentionRow, now_us: int) -> bool:
    """Whether an alert is live: its key not destroyed, and :func:`readable`."""
    return not row.shredded and readable(
        row.expires_us, row.last_action, row.last_until_us, now_us
    )


def awaits_purge(row: RetentionRow, now_us: int) -> bool:
    """Whether a store that does not purge holds this row past its expiry.

    Shredded rows, and every row past its expiry (held or not), as the
    warning of a store opened without its audit log counts them.
    """
    return row.shredded or expired(row.expires_us, now_us)


def check_alert_time(when: datetime, now: datetime, alert_ttl: timedelta) -> datetime:
    """The expiry of an alert made at ``when``, if it may be stored at ``now``.

    Raises:
        ValueError: It would have expired already, or ``when`` is more than
            :data:`SKEW` ahead of ``now`` (a future time would stretch
            retention past ``alert_ttl``).
    """
    expires = when + alert_ttl
    if expires <= now:
        raise ValueError(
            f"an alert at {when.isoformat()} would have expired at "
            f"{expires.isoformat()}; it is not stored"
        )
    if when > now + SKEW:
        raise ValueError(
            f"an alert time of {when.isoformat()} is more than {SKEW} "
            f"ahead of the store's clock ({now.isoformat()})"
        )
    return expires


def check_hold_end(end: datetime, now: datetime, max_hold: timedelta) -> None:
    """Checks a hold's end: after ``now`` and at most ``max_hold`` from it.

    Raises:
        ValueError: ``end`` is not in the future, or beyond ``max_hold``.
    """
    if end <= now:
        raise ValueError(
            f"a hold must end in the future: {end.isoformat()} is not after "
            f"{now.isoformat()}"
        )
    limit = now + max_hold
    if end > limit:
        raise ValueError(
            f"a hold may last at most {max_hold} (until "
            f"{limit.isoformat()}); renew it with a new hold before it ends"
        )


@dataclass
class PurgePlan:
    """What a purge does, decided by :func:`plan_purge`.

    Attributes:
        doomed: The ids whose keys it destroys, in the rows' order.
        kept: How many expired alerts an authentic hold keeps.
        ignored: How many holds it ignored because they are not authentic.
    """

    doomed: list[str] = field(default_factory=list)
    kept: int = 0
    ignored: int = 0


def plan_purge(
    rows: Iterable[RetentionRow],
    now_us: int,
    hold_authentic: Callable[[str], bool],
) -> PurgePlan:
    """Which rows a purge at ``now_us`` destroys.

    Every row whose key is not destroyed and that has expired, unless its latest
    hold entry claims a hold in force *and* ``hold_authentic(alert_id)`` says
    that hold history authenticates (a forged hold keeps nothing).

    Args:
        rows: The store's rows, in insertion order.
        now_us: The time of the purge.
        hold_authentic: Checks an alert's hold history (asked only of expired
            alerts that claim a hold).
    """
    plan = PurgePlan()
    for row in rows:
        if row.shredded or not expired(row.expires_us, now_us):
            continue
        if hold_in_force(row.last_action, row.last_until_us, now_us):
            if hold_authentic(row.alert_id):
                plan.kept += 1
                continue
            plan.ignored += 1
        plan.doomed.append(row.alert_id)
    return plan
