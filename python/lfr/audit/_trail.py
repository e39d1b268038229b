"""The audit log regrouped by deployment and by alert, for the checks and the report.

Records are read defensively: the checks must work on a log written by something
other than :class:`lfr.AuditLog` (signed with the right key, but with missing or
mistyped fields), so a field that cannot be read gives ``None``, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from lfr.audit.log import Record
from lfr.governance.policy import Policy
from lfr.retention import RetentionPolicy

#: The events that belong to one alert (besides ``alert_raised``).
ALERT_EVENTS = frozenset(
    {
        "alert_reviewed",
        "alert_actioned",
        "alert_exported",
        "alert_held",
        "alert_improved",
        "alert_released",
        "alert_purged",
    }
)

#: The events the alert store refuses once an alert's retention has ended: one
#: logged after it (beyond :data:`CLOCK_SKEW`) is an ``after_expiry`` violation.
LIVE_ONLY_EVENTS = frozenset(
    {
        "alert_reviewed",
        "alert_held",
        "alert_released",
        "alert_actioned",
        "alert_exported",
    }
)

#: The events reconciliation writes after a ``trail_reconciled`` anomaly, late.
RECONCILED_EVENTS = frozenset(
    {
        "alert_raised",
        "alert_improved",
        "alert_reviewed",
        "alert_held",
        "alert_released",
        "alert_purged",
    }
)

#: How much a writer's clock may wobble: a record dated more than this before an
#: earlier record is ``time_went_back``; a record of an alert may be logged this
#: long after its retention ended (the store decides, then the log stamps).
CLOCK_SKEW = timedelta(seconds=2)

#: How far an alert's own time may be ahead of the store's clock
#: (:data:`lfr.alerts.rules.SKEW`, camera clock skew; not imported, to keep the
#: audit package free of the alert store).
ALERT_TIME_LEAD = timedelta(minutes=1)

#: The store keeps times in whole microseconds.
ROUNDING = timedelta(microseconds=1)


def person(name: str) -> str:
    """A person's id as the checks compare it: case-folded, blanks collapsed."""
    return " ".join(name.casefold().split())


def prose(value: object) -> bool:
    """Whether ``value`` is a string with at least one letter or digit."""
    return isinstance(value, str) and any(ch.isalnum() for ch in value)


def text(fields: Mapping[str, Any], name: str) -> str | None:
    """The field as a non-empty string, else ``None``."""
    value = fields.get(name)
    return value if isinstance(value, str) and value else None


def count(fields: Mapping[str, Any], name: str) -> int | None:
    """The field as a count (an ``int`` >= 0, not a ``bool``), else ``None``."""
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def when(fields: Mapping[str, Any], name: str) -> datetime | None:
    """The field as an aware UTC time (ISO 8601; no zone means UTC), else ``None``."""
    value = fields.get(name)
    if not isinstance(value, str):
        return None
    raw = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """``2026-11-26T22:50:48Z`` (microseconds only when there are any)."""
    utc = moment.astimezone(timezone.utc)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def at(record: Record) -> str:
    """``record 7, line 8`` (``..., line 8 of audit-2.log`` in a chain of logs)."""
    where = "" if record.log is None else f" of {record.log}"
    return f"record {record.seq}, line {record.line}{where}"


@dataclass
class AlertTrail:
    """One alert: its ``alert_raised`` record and its later records, in log order."""

    alert_id: str
    raised: Record
    deployment_id: str | None
    events: list[Record] = field(default_factory=list)
    reconciled: set[int] = field(default_factory=set)

    @property
    def purge(self) -> Record | None:
        """The first ``alert_purged`` record of the alert, if any."""
        return next((r for r in self.events if r.event == "alert_purged"), None)

    def before_purge(self) -> list[Record]:
        """The alert's records logged before its purge (all of them if none)."""
        purge = self.purge
        if purge is None:
            return list(self.events)
        return [r for r in self.events if r.seq < purge.seq]

    def reviewers(self, end: datetime | None = None) -> dict[str, str]:
        """Each reviewer's latest decision, from the reviews that count.

        A review counts when it is logged before the purge and, given the alert's
        retention ``end``, no later than ``end`` plus :data:`CLOCK_SKEW` (or was
        written by reconciliation, whose times are its own). Reviewers are
        compared as :func:`person` gives them: ``"PC 1"`` and ``" pc  1"`` are
        one person.
        """
        out: dict[str, str] = {}
        for record in self.before_purge():
            if record.event != "alert_reviewed":
                continue
            if end is not None and self.after(record, end):
                continue
            reviewer = text(record.fields, "reviewer")
            if reviewer is not None and person(reviewer):
                out[person(reviewer)] = text(record.fields, "decision") or ""
        return out

    def after(self, record: Record, end: datetime) -> bool:
        """Whether ``record`` was logged after the retention ``end`` (plus skew).

        Records written by reconciliation (after a ``trail_reconciled`` anomaly)
        carry the reconciliation's time, not the change's, and never count as
        after it.
        """
        return record.seq not in self.reconciled and record.time > end + CLOCK_SKEW


@dataclass
class DeploymentTrail:
    """One deployment: its start and stop, watchlist loads, counters and alerts."""

    deployment_id: str
    started: Record | None = None
    stopped: Record | None = None
    policy: RetentionPolicy = field(default_factory=RetentionPolicy)
    loads: list[Record] = field(default_factory=list)
    counters: list[Record] = field(default_factory=list)
    alerts: list[AlertTrail] = field(default_factory=list)
    restarts: list[Record] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        """Whether it was closed as crashed: killed, its stop written by a later start.

        Such a ``deployment_stopped`` record has reason ``"crashed"`` (and
        ``last_record``, the seq of the deployment's last record); it counts as
        the stop, at the time it was written.
        """
        return (
            self.stopped is not None
            and text(self.stopped.fields, "reason") == "crashed"
        )


@dataclass
class Trail:
    """The whole log regrouped; ``notices`` says what could not be placed."""

    deployments: dict[str, DeploymentTrail]
    alerts: dict[str, AlertTrail]
    notices: list[str]
    last_time: datetime | None
    auditor: Policy | None = None

    def policy_of(self, alert: AlertTrail) -> RetentionPolicy:
        """The retention policy of the alert's deployment (default if unknown).

        With an auditor's policy, each field is the stricter of the two.
        """
        deployment = self.deployments.get(alert.deployment_id or "")
        if deployment is not None:
            return deployment.policy
        if self.auditor is not None:
            return self.auditor.strictest(RetentionPolicy())
        return RetentionPolicy()


def build(records: Sequence[Record], policy: Policy | None = None) -> Trail:
    """Regroups verified records by deployment and by alert.

    Args:
        records: Verified records, in log order.
        policy: The auditor's policy, if any: each deployment's ``policy`` is
            then its recorded policy tightened to it
            (:meth:`lfr.Policy.strictest`), so every deadline is judged with
            the stricter of the two, field by field.

    Returns:
        The regrouped log. Its notices name records that refer to an unknown alert
        or deployment, repeated starts, unreadable policies, and alerts whose
        deployment has no ``deployment_started`` record (the default retention
        policy is then used for them).
    """
    deployments: dict[str, DeploymentTrail] = {}
    alerts: dict[str, AlertTrail] = {}
    notices: list[str] = []

    def deployment(deployment_id: str) -> DeploymentTrail:
        return deployments.setdefault(deployment_id, DeploymentTrail(deployment_id))

    reconciling = False
    reconciled: set[int] = set()
    for record in records:
        fields = record.fields
        event = record.event
        if event == "anomaly":
            reconciling = text(fields, "kind") == "trail_reconciled"
        elif reconciling and event in RECONCILED_EVENTS:
            reconciled.add(record.seq)
        else:
            reconciling = False
        if event == "deployment_started":
            deployment_id = text(fields, "deployment_id")
            if deployment_id is not None:
                _start(record, deployment(deployment_id), notices)
        elif event == "deployment_stopped":
            deployment_id = text(fields, "deployment_id")
            if deployment_id is None:
                continue
            trail = deployment(deployment_id)
            if trail.stopped is None:
                trail.stopped = record
            else:
                notices.append(
                    f"deployment {deployment_id} is stopped again at {at(record)}; "
                    f"the first stop ({at(trail.stopped)}) is used"
                )
        elif event == "watchlist_loaded":
            deployment_id = text(fields, "deployment_id")
            if deployment_id is not None:
                deployment(deployment_id).loads.append(record)
        elif event == "counters":
            deployment_id = text(fields, "deployment_id")
            if deployment_id is not None:
                deployment(deployment_id).counters.append(record)
        elif event == "alert_raised":
            alert_id = text(fields, "alert_id")
            if alert_id is None:
                continue
            if alert_id in alerts:
                notices.append(
                    f"alert {alert_id} is raised again at {at(record)}; the first "
                    f"({at(alerts[alert_id].raised)}) is used"
                )
                continue
            alert = AlertTrail(alert_id, record, text(fields, "deployment_id"))
            alert.reconciled = reconciled
            alerts[alert_id] = alert
            if alert.deployment_id is not None:
                deployment(alert.deployment_id).alerts.append(alert)
        elif event in ALERT_EVENTS:
            alert_id = text(fields, "alert_id")
            if alert_id is None:
                continue
            if alert_id in alerts:
                alerts[alert_id].events.append(record)
            else:
                notices.append(
                    f"{at(record)} ({event}) refers to alert {alert_id}, which was "
                    "not raised earlier in the log"
                )

    for trail in deployments.values():
        if trail.started is None and trail.alerts:
            first = trail.alerts[0].raised
            notices.append(
                f"deployment {trail.deployment_id} has alerts (the first at "
                f"{at(first)}) but no deployment_started record: the default "
                "retention policy is used for them"
            )
    for alert in alerts.values():
        if alert.deployment_id is None:
            notices.append(
                f"alert {alert.alert_id} ({at(alert.raised)}) names no deployment: "
                "the default retention policy is used for it"
            )
    if policy is not None:
        for trail in deployments.values():
            trail.policy = policy.strictest(trail.policy)
    last_time = max((r.time for r in records), default=None)
    return Trail(deployments, alerts, notices, last_time, policy)


def _start(record: Record, trail: DeploymentTrail, notices: list[str]) -> None:
    if trail.started is not None:
        # Its policy is the first start's; its watchlist is a load like any
        # other (it must be destroyed), and an auditor's policy judges it too.
        trail.restarts.append(record)
        trail.loads.append(record)
        notices.append(
            f"deployment {trail.deployment_id} is started again at {at(record)}; "
            f"the first start's retention policy ({at(trail.started)}) is used for "
            "its deadlines, and this start's watchlist must be destroyed too"
        )
        return
    trail.started = record
    trail.loads.insert(0, record)
    try:
        trail.policy = RetentionPolicy.from_json(record.fields.get("policy"))
    except ValueError as exc:
        notices.append(
            f"deployment {trail.deployment_id}'s policy ({at(record)}) cannot be "
            f"read ({exc}): the default retention policy is used"
        )


def effective_now(trail: Trail, now: datetime) -> datetime:
    """``now``, or the log's latest record time if that is later.

    The log itself shows that time has reached its last record, so a ``now`` given
    earlier than that cannot hide what the log already records.
    """
    if trail.last_time is not None and trail.last_time > now:
        return trail.last_time
    return now


@dataclass(frozen=True)
class Deadline:
    """When an alert had to be purged, and the first record showing it was not.

    Attributes:
        end: The retention end in force at ``late`` (or after all the alert's
            records when ``late`` is ``None``).
        deadline: ``end`` plus the policy's ``purge_interval``.
        late: The first hold, release or purge of the alert logged after the
            deadline then in force, or ``None``.
        ignored: Holds and releases logged after the alert's retention had ended:
            the store refuses them, so they cannot keep the alert.
    """

    end: datetime
    deadline: datetime
    late: Record | None
    ignored: tuple[Record, ...]


def alert_time(raised: Record) -> datetime:
    """The time an alert's retention runs from.

    Its ``time`` field, unless that is missing or more than
    :data:`ALERT_TIME_LEAD` plus :data:`CLOCK_SKEW` after the record's own time
    (a forward-dated alert, ``event_time_inconsistent``): the record's time then,
    so a forward date buys no retention.
    """
    field_time = when(raised.fields, "time")
    if field_time is None or field_time > raised.time + ALERT_TIME_LEAD + CLOCK_SKEW:
        return raised.time
    return field_time


def purge_deadline(alert: AlertTrail, policy: RetentionPolicy) -> Deadline:
    """When the alert had to be purged, following the alert store's rules.

    The alert is kept until its *retention end*: its ``expires``, but never later
    than its time (:func:`alert_time`) plus ``policy.alert_ttl``. A hold logged
    before the retention end moves it to the hold's ``until`` (never later than the
    hold's time plus ``policy.max_hold``, never earlier than the alert's own end or
    the hold's time); a release logged before it moves it back to the alert's own
    end, or to the release if that is later. The latest hold or release decides; one
    logged at or after the retention end is ignored (the store refuses to hold an
    expired alert). The purge deadline is the retention end plus
    ``policy.purge_interval``.

    Records are taken in log order; records after the purge are ignored.

    Args:
        alert: The alert.
        policy: Its deployment's retention policy.

    Returns:
        The deadline and the first record logged after it.
    """
    raised = alert.raised
    base = alert_time(raised) + policy.alert_ttl
    expires = when(raised.fields, "expires")
    if expires is not None and expires < base:
        base = expires
    end = base
    ignored: list[Record] = []
    for record in alert.events:
        if record.event not in ("alert_held", "alert_released", "alert_purged"):
            continue
        deadline = end + policy.purge_interval
        if record.time > deadline:
            return Deadline(end, deadline, record, tuple(ignored))
        if record.event == "alert_purged":
            break
        if record.time >= end:
            ignored.append(record)
        elif record.event == "alert_held":
            until = when(record.fields, "until") or record.time
            end = max(base, min(until, record.time + policy.max_hold), record.time)
        else:
            end = max(base, record.time)
    return Deadline(end, end + policy.purge_interval, None, tuple(ignored))
