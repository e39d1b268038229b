"""The promise checks: pure functions over the verified records of an audit log.

Each check takes the records (in log order, as :func:`lfr.audit.log.read_log`
returns them) and the time of the audit, and returns the :class:`Violation` it
finds, one per broken promise, in log order. They read nothing else and never
raise on odd field values: a log written by something other than
:class:`lfr.AuditLog` is judged, not trusted.

Retention policies come from each deployment's ``deployment_started`` record
(``policy``, :meth:`lfr.RetentionPolicy.to_json`); an alert belongs to the
deployment its ``deployment_id`` names, and uses the default
:class:`lfr.RetentionPolicy` when that deployment's start is not in the log
(:func:`notices` says so).

A deadline only counts once it has passed: a check judges the state of the log at
``now``, or at the log's last record if that is later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from lfr._numbers import finite
from lfr.audit._trail import (
    ALERT_TIME_LEAD,
    CLOCK_SKEW,
    LIVE_ONLY_EVENTS,
    ROUNDING,
    at,
    build,
    count,
    effective_now,
    iso,
    prose,
    purge_deadline,
    text,
    when,
)
from lfr.audit.events import biometric_fields
from lfr.audit.log import Record
from lfr.governance.policy import Policy
from lfr.retention import RetentionPolicy

__all__ = [
    "CHECKS",
    "POLICY_CHECKS",
    "VIOLATION_KINDS",
    "Violation",
    "alert_times_consistent",
    "alerts_purged",
    "alerts_reviewed",
    "counters_consistent",
    "holds_have_reasons",
    "looser_policy",
    "no_biometric_content",
    "no_late_alert_records",
    "notices",
    "run_checks",
    "times_in_order",
    "watchlists_destroyed",
]

#: Every kind of :class:`Violation`, in the order a report lists them.
VIOLATION_KINDS = (
    "integrity",
    "time_went_back",
    "event_time_inconsistent",
    "alert_not_purged",
    "hold_without_reason",
    "after_expiry",
    "alert_not_reviewed",
    "single_review",
    "watchlist_not_destroyed",
    "counters_inconsistent",
    "biometric_content",
    "checkpoint_mismatch",
    "chain_gap",
    "chain_broken",
    "store_unaccounted",
    "looser_policy",
)

_COUNTERS = ("faces_detected", "faces_wiped", "alerts", "faces_skipped")


@dataclass(frozen=True)
class Violation:
    """A promise the log shows was broken, or a log that cannot be trusted.

    Attributes:
        kind: One of :data:`VIOLATION_KINDS`.
        record: The ``seq`` of the record it concerns, or ``None``.
        line: The 1-based line of that record in the log file, or ``None``.
        message: What is wrong, naming records, alert ids and times; never
            biometric data or the subject ids of alerts.
        log: The log file it concerns, when a chain of logs was verified
            (``record`` then counts through the chain), else ``None``.

    Raises:
        ValueError: ``kind`` is unknown or ``message`` is empty.
    """

    kind: str
    record: int | None
    line: int | None
    message: str
    log: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in VIOLATION_KINDS:
            raise ValueError(
                f"unknown violation kind {self.kind!r}; expected one of "
                f"{', '.join(VIOLATION_KINDS)}"
            )
        if not self.message:
            raise ValueError("a violation needs a message")

    @classmethod
    def at(cls, kind: str, record: Record, message: str) -> Violation:
        """A violation concerning ``record``."""
        return cls(kind, record.seq, record.line, message, record.log)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict with the five attributes."""
        return {
            "kind": self.kind,
            "record": self.record,
            "line": self.line,
            "log": self.log,
            "message": self.message,
        }


Check = Callable[[Sequence[Record], datetime], list[Violation]]


class PolicyCheck(Protocol):
    """A check that also takes the auditor's policy."""

    def __call__(
        self, records: Sequence[Record], now: datetime, *, policy: Policy | None = ...
    ) -> list[Violation]:
        """Runs the check."""


def alerts_purged(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Every alert is purged by its deadline (``alert_not_purged``).

    The deadline is the alert's retention end plus the policy's
    ``purge_interval``; holds and releases move the retention end as the alert
    store does (:func:`lfr.audit._trail.purge_deadline` gives the exact rule).
    An alert is flagged once: on its purge when that came too late, on the first
    hold or release logged after its deadline, or on its ``alert_raised`` record
    when it is still not purged and the deadline has passed at ``now``. A purge
    exactly at the deadline is in time.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (aware).
        policy: The auditor's policy: deadlines then use, field by field, the
            stricter of it and the recorded policy.

    Returns:
        The violations, in log order.
    """
    trail = build(records, policy)
    horizon = effective_now(trail, now)
    out: list[Violation] = []
    for alert in trail.alerts.values():
        rules = trail.policy_of(alert)
        result = purge_deadline(alert, rules)
        ignored = "".join(
            f"; the {'hold' if r.event == 'alert_held' else 'release'} at {at(r)} "
            "came after its retention had ended and cannot keep it"
            for r in result.ignored
        )
        deadline = iso(result.deadline)
        if result.late is not None and result.late.event == "alert_purged":
            out.append(
                Violation.at(
                    "alert_not_purged",
                    result.late,
                    f"alert {alert.alert_id} ({at(alert.raised)}) was purged at "
                    f"{iso(result.late.time)}, after its deadline {deadline} "
                    f"(purge interval {rules.purge_interval}){ignored}",
                )
            )
        elif result.late is not None:
            out.append(
                Violation.at(
                    "alert_not_purged",
                    result.late,
                    f"alert {alert.alert_id} ({at(alert.raised)}) was still kept at "
                    f"{iso(result.late.time)} ({result.late.event}), after its "
                    f"deadline {deadline}{ignored}",
                )
            )
        elif alert.purge is None and horizon > result.deadline:
            out.append(
                Violation.at(
                    "alert_not_purged",
                    alert.raised,
                    f"alert {alert.alert_id} ({at(alert.raised)}) is not purged: "
                    f"its deadline was {deadline} and the log has no alert_purged "
                    f"record for it by {iso(horizon)}{ignored}",
                )
            )
    return _in_order(out)


def holds_have_reasons(records: Sequence[Record], now: datetime) -> list[Violation]:
    """Every hold gives a reason (``hold_without_reason``).

    A reason that is missing, not a string, or has no letter or digit (``""``,
    ``"  "``, ``"."``, ``"-"``) is flagged on the ``alert_held`` record. The
    hold still counts for the purge deadline.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used: a hold needs a reason at once).

    Returns:
        The violations, in log order.
    """
    del now
    out: list[Violation] = []
    for record in records:
        if record.event != "alert_held":
            continue
        if not prose(record.fields.get("reason")):
            alert_id = text(record.fields, "alert_id") or "(no id)"
            out.append(
                Violation.at(
                    "hold_without_reason",
                    record,
                    f"the hold on alert {alert_id} at {at(record)} gives no reason",
                )
            )
    return out


def alerts_reviewed(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Every alert is reviewed before its purge, by two people where required.

    Only reviews logged before the alert's purge and no later than its retention
    end (plus :data:`lfr.audit._trail.CLOCK_SKEW`; later ones are
    ``after_expiry``) count; a reviewer who reviews an alert twice counts once,
    and reviewer ids are compared case-folded with blanks collapsed
    (``"PC-1"``, ``"pc-1 "`` are one person). An alert purged with no review is
    ``alert_not_reviewed`` (on its purge); one purged with fewer distinct
    reviewers than its policy asks (two with ``two_person_review``, else one) is
    ``single_review`` (on its purge). An alert not yet purged is judged the same
    way, on its ``alert_raised`` record, once its purge deadline has passed.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (aware).
        policy: The auditor's policy: deadlines then use, field by field, the
            stricter of it and the recorded policy.

    Returns:
        The violations, in log order.
    """
    trail = build(records, policy)
    horizon = effective_now(trail, now)
    out: list[Violation] = []
    for alert in trail.alerts.values():
        rules = trail.policy_of(alert)
        purge = alert.purge
        result = purge_deadline(alert, rules)
        if purge is not None:
            where, when_text = purge, f"before its purge ({at(purge)})"
        elif horizon > result.deadline:
            where, when_text = alert.raised, "by its purge deadline"
        else:
            continue
        needed = 2 if rules.two_person_review else 1
        by = "" if policy is None else ", tightened to the auditor's,"
        reviewers = len(alert.reviewers(result.end))
        name = f"alert {alert.alert_id} ({at(alert.raised)})"
        if reviewers == 0:
            out.append(
                Violation.at(
                    "alert_not_reviewed",
                    where,
                    f"{name} was not reviewed {when_text} and before its retention "
                    f"ended ({iso(result.end)})",
                )
            )
        elif reviewers < needed:
            out.append(
                Violation.at(
                    "single_review",
                    where,
                    f"{name} was reviewed by one person only {when_text}; its "
                    f"deployment's policy{by} asks for {needed} different reviewers",
                )
            )
    return _in_order(out)


def watchlists_destroyed(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Every watchlist a deployment loaded is destroyed in time.

    A deployment loads the watchlist its ``deployment_started`` record names and
    any its ``watchlist_loaded`` records name. Each must be followed (after its
    last load) by a ``watchlist_destroyed`` record with its sha256 (and the
    deployment's id, or none) no later than the ``deployment_stopped`` record's
    time plus the policy's ``watchlist_ttl_after_stop``. A late destruction is
    flagged on the ``watchlist_destroyed`` record; a missing one, once that
    deadline has passed at ``now``, on the last load. A deployment still running
    has no deadline yet. A deployment closed as crashed (its process was killed;
    a later start wrote its ``deployment_stopped`` with reason ``"crashed"``) is
    stopped at that record's time.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (aware).
        policy: The auditor's policy: deadlines then use, field by field, the
            stricter of it and the recorded policy.

    Returns:
        The violations (``watchlist_not_destroyed``), in log order.
    """
    trail = build(records, policy)
    horizon = effective_now(trail, now)
    destroyed = [r for r in records if r.event == "watchlist_destroyed"]
    out: list[Violation] = []
    for deployment in trail.deployments.values():
        stopped = deployment.stopped
        if stopped is None:
            continue
        ttl = deployment.policy.watchlist_ttl_after_stop
        deadline = stopped.time + ttl
        last_loads: dict[str, Record] = {}
        for load in deployment.loads:
            sha = text(load.fields, "watchlist_sha256")
            if sha is not None:
                last_loads[sha] = load
        for sha, load in last_loads.items():
            destroy = next(
                (
                    r
                    for r in destroyed
                    if r.seq > load.seq
                    and text(r.fields, "watchlist_sha256") == sha
                    and text(r.fields, "deployment_id")
                    in (None, deployment.deployment_id)
                ),
                None,
            )
            name = (
                f"the watchlist {sha} of deployment "
                f"{deployment.deployment_id} (loaded at {at(load)})"
            )
            how = ", closed as crashed" if deployment.crashed else ""
            due = (
                f"{iso(deadline)} ({ttl} after the stop at {iso(stopped.time)}: "
                f"{at(stopped)}{how})"
            )
            if destroy is not None and destroy.time > deadline:
                out.append(
                    Violation.at(
                        "watchlist_not_destroyed",
                        destroy,
                        f"{name} was destroyed at {iso(destroy.time)}, after its "
                        f"deadline {due}",
                    )
                )
            elif destroy is None and horizon > deadline:
                out.append(
                    Violation.at(
                        "watchlist_not_destroyed",
                        load,
                        f"{name} is not destroyed: its deadline was {due} and the "
                        f"log has no watchlist_destroyed record for it by "
                        f"{iso(horizon)}",
                    )
                )
    return _in_order(out)


def counters_consistent(records: Sequence[Record], now: datetime) -> list[Violation]:
    """Every ``counters`` record adds up (``counters_inconsistent``).

    Each face detected is either wiped, skipped by the quality gate, or an alert:
    ``faces_wiped + alerts + faces_skipped == faces_detected``, and every count is
    an integer of at least zero.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).

    Returns:
        The violations, in log order.
    """
    del now
    out: list[Violation] = []
    for record in records:
        if record.event != "counters":
            continue
        values = {name: count(record.fields, name) for name in _COUNTERS}
        bad = [name for name, value in values.items() if value is None]
        where = f"the counters at {at(record)}"
        if bad:
            out.append(
                Violation.at(
                    "counters_inconsistent",
                    record,
                    f"{where} have no valid count for {', '.join(bad)}",
                )
            )
            continue
        detected, wiped, alerts, skipped = (values[name] or 0 for name in _COUNTERS)
        if wiped + alerts + skipped != detected:
            out.append(
                Violation.at(
                    "counters_inconsistent",
                    record,
                    f"{where} do not add up: faces_wiped {wiped} + alerts {alerts} "
                    f"+ faces_skipped {skipped} = {wiped + alerts + skipped}, but "
                    f"faces_detected is {detected}",
                )
            )
    return out


def no_biometric_content(records: Sequence[Record], now: datetime) -> list[Violation]:
    """No record holds biometric-looking content (``biometric_content``).

    The rule is the one :meth:`lfr.AuditLog.append` enforces
    (:func:`lfr.audit.events.biometric_fields`), applied again because a log
    may have been written by something else. The message names the fields, never
    their values.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).

    Returns:
        The violations, in log order.
    """
    del now
    out: list[Violation] = []
    for record in records:
        names = biometric_fields(record.fields)
        if names:
            out.append(
                Violation.at(
                    "biometric_content",
                    record,
                    f"{at(record)} ({record.event}) holds biometric-looking "
                    f"content in {', '.join(names)}",
                )
            )
    return out


def times_in_order(records: Sequence[Record], now: datetime) -> list[Violation]:
    """No record is dated before an earlier one (``time_went_back``).

    The log's writer stamps each record with its clock under the log's lock, so
    times never go backwards unless that clock was set back: a record dated more
    than :data:`lfr.audit._trail.CLOCK_SKEW` (2 seconds) before the latest time
    of the records before it is flagged, on that record. Every deadline the
    checks judge rests on these times, so a clock set back (to make a late purge
    look timely) must show.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).

    Returns:
        The violations, in log order.
    """
    del now
    out: list[Violation] = []
    latest: Record | None = None
    for record in records:
        if latest is not None and record.time < latest.time - CLOCK_SKEW:
            out.append(
                Violation.at(
                    "time_went_back",
                    record,
                    f"{at(record)} ({record.event}) is dated {iso(record.time)}, "
                    f"{latest.time - record.time} before {at(latest)} "
                    f"({iso(latest.time)}): the writer's clock went back",
                )
            )
        if latest is None or record.time > latest.time:
            latest = record
    return out


def alert_times_consistent(records: Sequence[Record], now: datetime) -> list[Violation]:
    """Every alert's own times agree with its record (``event_time_inconsistent``).

    The alert store accepts an alert whose ``time`` is at most a minute ahead of
    its clock, and sets ``expires`` to ``time + alert_ttl``. So an
    ``alert_raised`` record is flagged (on itself) when its ``time`` is more than
    :data:`lfr.audit._trail.ALERT_TIME_LEAD` plus ``CLOCK_SKEW`` after the
    record's own time (forward-dated: it would move the purge deadline; the
    checks then run retention from the record's time), when its ``expires`` is
    not ``time`` plus its deployment's ``alert_ttl`` (within a microsecond), or
    when ``expires`` is after the record's time plus ``alert_ttl``, the lead and
    the skew. Missing or unreadable times are not judged here, nor ``expires``
    when the deployment's start (so its policy) is not in the log.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).

    Returns:
        The violations, in log order.
    """
    del now
    trail = build(records)
    lead = ALERT_TIME_LEAD + CLOCK_SKEW
    out: list[Violation] = []
    for record in records:
        if record.event != "alert_raised":
            continue
        deployment = trail.deployments.get(text(record.fields, "deployment_id") or "")
        field_time = when(record.fields, "time")
        expires = when(record.fields, "expires")
        problems: list[str] = []
        if field_time is not None and field_time > record.time + lead:
            problems.append(
                f"its time {iso(field_time)} is {field_time - record.time} after "
                f"the record's own time {iso(record.time)}"
            )
        if deployment is not None and deployment.started is not None:
            ttl = deployment.policy.alert_ttl
            if (
                field_time is not None
                and expires is not None
                and abs(expires - (field_time + ttl)) > ROUNDING
            ):
                problems.append(
                    f"it expires at {iso(expires)}, not at its time plus the "
                    f"policy's alert_ttl {ttl} ({iso(field_time + ttl)})"
                )
            if expires is not None and expires > record.time + ttl + lead:
                problems.append(
                    f"it expires at {iso(expires)}, after the record's time plus "
                    f"alert_ttl {ttl} and {lead} of clock skew "
                    f"({iso(record.time + ttl + lead)})"
                )
        if problems:
            alert_id = text(record.fields, "alert_id") or "(no id)"
            out.append(
                Violation.at(
                    "event_time_inconsistent",
                    record,
                    f"alert {alert_id} ({at(record)}): {'; '.join(problems)}",
                )
            )
    return out


def no_late_alert_records(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Nothing is done to an alert after its retention ended (``after_expiry``).

    The alert store refuses to review, hold, release, action or export an alert
    whose retention has ended (its expiry, or the end of a hold in force; see
    :func:`lfr.audit._trail.purge_deadline`). Such a record logged more than
    ``CLOCK_SKEW`` after the retention end is flagged on itself; a review so
    flagged does not count for :func:`alerts_reviewed` or the deployment record.
    Records written by reconciliation (right after a ``trail_reconciled``
    anomaly) carry the reconciliation's time and are not judged (a notice names
    them).

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).
        policy: The auditor's policy: deadlines then use, field by field, the
            stricter of it and the recorded policy.

    Returns:
        The violations, in log order.
    """
    del now
    trail = build(records, policy)
    out: list[Violation] = []
    for alert in trail.alerts.values():
        end = purge_deadline(alert, trail.policy_of(alert)).end
        for record in alert.events:
            if record.event in LIVE_ONLY_EVENTS and alert.after(record, end):
                out.append(
                    Violation.at(
                        "after_expiry",
                        record,
                        f"{at(record)} ({record.event}) of alert {alert.alert_id} "
                        f"({at(alert.raised)}) is dated {iso(record.time)}, after "
                        f"its retention ended at {iso(end)}: the alert store "
                        "refuses this once an alert has expired",
                    )
                )
    return _in_order(out)


def looser_policy(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Every deployment ran within the auditor's policy (``looser_policy``).

    Only with an auditor's :class:`lfr.Policy` (none: no violation). Every
    ``deployment_started`` record (a deployment id started again included) is
    compared with it, and
    each of these is one violation on that record, naming the deployment, the
    field, the recorded and the allowed value:

    * ``alert_ttl``, ``max_hold``, ``purge_interval`` or
      ``watchlist_ttl_after_stop`` longer than the policy's, or
      ``two_person_review`` off where the policy asks for it;
    * a ``threshold`` below ``min_threshold``;
    * with ``max_watchlist_age`` set, a watchlist older than that at the start
      (the record's time minus its ``watchlist_created``);
    * a retention policy, threshold or (with ``max_watchlist_age``)
      ``watchlist_created`` that is missing or cannot be read, or a
      ``watchlist_created`` after the start (beyond the clock skew): the record
      cannot show that the policy was kept.

    A deployment with records but no ``deployment_started`` is flagged on its
    first record, as it cannot show what it ran with either.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (not used).
        policy: The auditor's policy.

    Returns:
        The violations, in log order.
    """
    del now
    if policy is None:
        return []
    out: list[Violation] = []
    for deployment in build(records).deployments.values():
        name = f"deployment {deployment.deployment_id}"
        started = deployment.started
        if started is None:
            seen = [
                *deployment.loads,
                *deployment.counters,
                *(alert.raised for alert in deployment.alerts),
                *([deployment.stopped] if deployment.stopped is not None else []),
            ]
            first = min(seen, key=lambda r: r.seq, default=None)
            if first is not None:
                out.append(
                    Violation.at(
                        "looser_policy",
                        first,
                        f"{name} has no deployment_started record (first seen at "
                        f"{at(first)}): it cannot show the policy and threshold it "
                        "ran with",
                    )
                )
            continue
        out += [
            Violation.at("looser_policy", start, f"{name} ({at(start)}): {why}")
            for start in (started, *deployment.restarts)
            for why in _looser(start, policy)
        ]
    return _in_order(out)


def _duration(value: object) -> str:
    """A duration for messages: ``3650 days``, ``24 h``, ``300 s``."""
    if not isinstance(value, timedelta):
        return str(value)
    seconds = value.total_seconds()
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{seconds:g} s"


def _looser(started: Record, policy: Policy) -> list[str]:
    """What in a ``deployment_started`` record is looser than ``policy``."""
    fields = started.fields
    out: list[str] = []
    raw = fields.get("policy")
    if not isinstance(raw, dict):
        out.append(
            "its retention policy is missing: it cannot show it kept the auditor's"
        )
    else:
        try:
            recorded = RetentionPolicy.from_json(raw)
        except ValueError as exc:
            out.append(
                f"its retention policy cannot be read ({exc}): it cannot show it "
                "kept the auditor's"
            )
        else:
            for name in policy.looser(recorded):
                if name == "two_person_review":
                    out.append(
                        "two_person_review was False; the policy requires two "
                        "different reviewers (True)"
                    )
                else:
                    out.append(
                        f"{name} was {_duration(getattr(recorded, name))}; the "
                        f"policy allows at most {_duration(getattr(policy, name))}"
                    )
    threshold: Any = fields.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or finite(threshold) is None
    ):
        out.append(
            "its match threshold is missing or not a number: it cannot show it "
            f"kept the policy's minimum {policy.min_threshold}"
        )
    elif threshold < policy.min_threshold:
        out.append(
            f"threshold was {threshold}; the policy allows no lower than "
            f"{policy.min_threshold}"
        )
    limit = policy.max_watchlist_age
    if limit is not None:
        out += _watchlist_age(started, limit)
    return out


def _watchlist_age(started: Record, limit: timedelta) -> list[str]:
    created = when(started.fields, "watchlist_created")
    if created is None:
        return [
            "it cannot show the watchlist's age: the record has no readable "
            f"watchlist_created (the policy allows at most {limit})"
        ]
    if created > started.time + CLOCK_SKEW:
        return [
            "it cannot show the watchlist's age: its watchlist_created "
            f"{iso(created)} is after the start {iso(started.time)}"
        ]
    age = started.time - created
    if age > limit:
        return [
            f"the watchlist was {age} old at the start (watchlist_created "
            f"{iso(created)}); the policy allows at most {limit}"
        ]
    return []


#: The promise checks :func:`run_checks` runs, in order.
CHECKS: tuple[Check, ...] = (
    times_in_order,
    alert_times_consistent,
    alerts_purged,
    holds_have_reasons,
    no_late_alert_records,
    alerts_reviewed,
    watchlists_destroyed,
    counters_consistent,
    no_biometric_content,
)

#: The checks in :data:`CHECKS` that judge deadlines with the auditor's policy.
POLICY_CHECKS: tuple[PolicyCheck, ...] = (
    alerts_purged,
    no_late_alert_records,
    alerts_reviewed,
    watchlists_destroyed,
)


def run_checks(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[Violation]:
    """Runs every check in :data:`CHECKS`, and :func:`looser_policy` with a policy.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (aware).
        policy: The auditor's policy, if any: :func:`looser_policy` then runs
            too, and the checks in :data:`POLICY_CHECKS` judge deadlines with the
            stricter of it and each recorded policy.

    Returns:
        All violations, ordered by record, then by kind.
    """
    judged: dict[Check, Check] = {}
    if policy is not None:
        judged = {check: partial(check, policy=policy) for check in POLICY_CHECKS}
    found = [
        violation
        for check in CHECKS
        for violation in judged.get(check, check)(records, now)
    ]
    found += looser_policy(records, now, policy=policy)
    return _in_order(found)


def notices(
    records: Sequence[Record], now: datetime, *, policy: Policy | None = None
) -> list[str]:
    """What an auditor should know that is not a broken promise.

    Deployments still running when the log ends, deployments that were killed
    and closed as crashed by a later start, records that refer to an alert never
    raised, repeated starts, stops or alerts, unreadable policies, alerts judged
    with the default policy, records reconciliation wrote after their alert's
    retention ended, and stopped deployments whose counters report a
    different number of alerts than the log raised.

    Args:
        records: The verified records, in log order.
        now: The time of the audit (aware; not used yet, kept for symmetry).
        policy: The auditor's policy, if any (retention ends are then judged
            with the stricter of it and the recorded policy).

    Returns:
        One sentence per notice.
    """
    del now
    trail = build(records, policy)
    out = list(trail.notices)
    for alert in trail.alerts.values():
        end = purge_deadline(alert, trail.policy_of(alert)).end
        for record in alert.events:
            if (
                record.seq in alert.reconciled
                and record.event in LIVE_ONLY_EVENTS
                and record.time > end + CLOCK_SKEW
            ):
                out.append(
                    f"{at(record)} ({record.event}) of alert {alert.alert_id} was "
                    f"written by reconciliation after the alert's retention ended "
                    f"({iso(end)}): its time is the reconciliation's, not the "
                    "change's"
                )
    for deployment in trail.deployments.values():
        if deployment.started is not None and deployment.stopped is None:
            out.append(
                f"deployment {deployment.deployment_id} (started at "
                f"{at(deployment.started)}) was still running when the log ends: "
                "its watchlist deadline cannot be checked yet"
            )
        if deployment.crashed and deployment.stopped is not None:
            out.append(_crash_notice(deployment.deployment_id, deployment.stopped))
        if deployment.stopped is not None and deployment.counters:
            counted = sum(count(r.fields, "alerts") or 0 for r in deployment.counters)
            if counted != len(deployment.alerts):
                out.append(
                    f"the counters of deployment {deployment.deployment_id} report "
                    f"{counted} alerts, but the log raised {len(deployment.alerts)}"
                )
    return out


def _crash_notice(deployment_id: str, stopped: Record) -> str:
    last = count(stopped.fields, "last_record")
    before = "" if last is None else f" after its last record (record {last})"
    return (
        f"deployment {deployment_id} was killed{before}; closed as crashed at "
        f"{at(stopped)} by the next start: its watchlist deadline runs from "
        f"{iso(stopped.time)}, and the watchlist copies it held in memory ended "
        "with its process, not wiped by lfr"
    )


def _in_order(violations: list[Violation]) -> list[Violation]:
    def key(v: Violation) -> tuple[int, int]:
        seq = -1 if v.record is None else v.record
        return seq, VIOLATION_KINDS.index(v.kind)

    return sorted(violations, key=key)
