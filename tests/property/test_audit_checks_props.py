"""Hypothesis: the promise checks flag exactly the violations a log contains.

Random deployments (a policy, alerts raised at random minutes, random holds,
releases, reviews and purges, a stop, a watchlist destruction, counters, and a
random time of audit) are turned into records, and the expected violations are
worked out by a separate, deliberately plain model: it walks the alert's life
minute by minute with the alert store's rules (an alert is readable before its
expiry or while a hold lasts; a hold or release is only accepted while it is
readable; once unreadable it stays so) and says the alert had to be gone one
purge interval after it became unreadable. The checks must report exactly the
model's violations, on the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

import lfr
from lfr.audit import Record, checks
from lfr.audit.events import parse_time
from tests.support.audit_records import T0, Records

MINUTE = timedelta(minutes=1)
REVIEWERS = ("officer-1", "officer-2", "officer-3", "Officer-1", " officer-2 ")


def at(minute: int) -> datetime:
    return T0 + minute * MINUTE


@dataclass
class Action:
    """One later record of an alert."""

    minute: int
    kind: str  # "hold", "release", "review", "purge"
    until: int = 0
    reason: str = "case 17"
    reviewer: str = "officer-1"


@dataclass
class Alert:
    alert_id: str
    minute: int
    expires: int
    actions: list[Action] = field(default_factory=list)
    ahead: int = 0  # minutes its own time is ahead of its record's


@dataclass
class Scenario:
    policy: lfr.RetentionPolicy
    alerts: list[Alert]
    stop: int | None
    destroy: int | None
    counters: list[tuple[int, int, int, int, int]]  # minute, detected, wiped, ...
    now: int


def minutes(policy_value: timedelta) -> int:
    return int(policy_value.total_seconds() // 60)


@st.composite
def actions(draw: st.DrawFn, start: int) -> list[Action]:
    """An alert's later records: a timeline in small steps, mostly ending in a purge.

    Policies are short (minutes), so holds, releases and purges often fall
    exactly on, or next to, an expiry, the end of a hold, or a deadline.
    """
    now = start
    out: list[Action] = []
    for _ in range(draw(st.integers(0, 6))):
        now += draw(st.integers(0, 3) | st.integers(0, 12))
        kind = draw(
            st.sampled_from(["hold", "hold", "release", "review", "review", "export"])
        )
        out.append(
            Action(
                now,
                kind,
                until=now + draw(st.integers(-4, 40)),
                reason=draw(
                    st.sampled_from(["case 17", "case 17", "", "  ", ".", "-", "7"])
                ),
                reviewer=draw(st.sampled_from(REVIEWERS)),
            )
        )
    if draw(st.integers(0, 3)):
        gap = draw(st.integers(0, 6) | st.integers(0, 30))
        out.append(Action(now + gap, "purge"))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    policy = lfr.RetentionPolicy(
        alert_ttl=draw(st.integers(1, 20)) * MINUTE,
        max_hold=draw(st.integers(1, 40)) * MINUTE,
        purge_interval=draw(st.integers(1, 5)) * MINUTE,
        watchlist_ttl_after_stop=draw(st.integers(0, 60)) * MINUTE,
        two_person_review=draw(st.booleans()),
    )
    ttl = minutes(policy.alert_ttl)
    alerts = []
    for i in range(draw(st.integers(0, 5))):
        minute = draw(st.integers(0, 60))
        ahead = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 30]))
        exact = draw(st.booleans())
        expires = minute + ahead + ttl
        if not exact:
            expires += draw(st.integers(1 - ttl - ahead, 10))
        later = draw(actions(minute))
        alerts.append(Alert(f"alert-{i}", minute, expires, later, ahead))
    stop = draw(st.none() | st.integers(0, 120))
    destroy = draw(st.none() | st.integers(0, 240))
    counters = []
    for _ in range(draw(st.integers(0, 3))):
        wiped, alert_count, skipped = (draw(st.integers(0, 50)) for _ in range(3))
        detected = wiped + alert_count + skipped + draw(st.sampled_from([0, 0, 1, -1]))
        minute = draw(st.integers(0, 120))
        counters.append((minute, max(detected, 0), wiped, alert_count, skipped))
    return Scenario(policy, alerts, stop, destroy, counters, draw(st.integers(0, 300)))


def build(scenario: Scenario) -> list[Record]:
    """The scenario's records, in time order (ties in the order generated)."""
    entries: list[tuple[int, int, str, object]] = []
    for alert in scenario.alerts:
        entries.append((alert.minute, len(entries), "raise", alert))
        for action in alert.actions:
            entries.append((action.minute, len(entries), action.kind, (alert, action)))
    if scenario.stop is not None:
        entries.append((scenario.stop, len(entries), "stop", None))
    if scenario.destroy is not None:
        entries.append((scenario.destroy, len(entries), "destroy", None))
    for counter in scenario.counters:
        entries.append((counter[0], len(entries), "counters", counter))
    entries.sort(key=lambda e: (e[0], e[1]))

    log = Records()
    log.start(T0, policy=scenario.policy)
    for minute, _, kind, payload in entries:
        when = at(minute)
        if kind == "raise":
            assert isinstance(payload, Alert)
            log.alert(
                when,
                payload.alert_id,
                expires=at(payload.expires),
                field_time=at(payload.minute + payload.ahead),
            )
        elif kind == "stop":
            log.stop(when)
        elif kind == "destroy":
            log.destroy(when)
        elif kind == "counters":
            assert isinstance(payload, tuple)
            _, detected, wiped, alert_count, skipped = payload
            log.counters(
                when,
                detected=detected,
                wiped=wiped,
                alerts=alert_count,
                skipped=skipped,
            )
        else:
            assert isinstance(payload, tuple)
            alert, action = payload
            if kind == "hold":
                log.hold(when, alert.alert_id, at(action.until), action.reason)
            elif kind == "release":
                log.release(when, alert.alert_id)
            elif kind == "review":
                log.review(when, alert.alert_id, action.reviewer)
            elif kind == "export":
                log.add(when, "alert_exported", alert_id=alert.alert_id, by="dc-9")
            else:
                log.purge(when, alert.alert_id)
    return log.records


# -- the model ------------------------------------------------------------------------


def minute_of(record: Record) -> int:
    return int((record.time - T0) / MINUTE)


def gone_at(
    base: int, events: list[tuple[int, str, int]], max_hold: int, horizon: int
) -> int:
    """The minute after which the alert store no longer keeps the alert.

    ``events`` are (minute, "hold"/"release", until) before the purge, in order.
    """
    held_until: int | None = None
    pending = list(events)
    for minute in range(0, horizon + 1):
        while pending and pending[0][0] == minute:
            _, kind, until = pending.pop(0)
            readable = minute < base or (held_until is not None and minute < held_until)
            if not readable:
                continue  # the store refuses it
            if kind == "hold":
                held_until = min(until, minute + max_hold)
            elif held_until is not None and minute < held_until:
                held_until = None
        kept = minute < base or (held_until is not None and minute < held_until)
        if not kept:
            return minute
    raise AssertionError("horizon too short")


def expected(scenario: Scenario, records: list[Record]) -> list[tuple[str, int]]:
    policy = scenario.policy
    pi = minutes(policy.purge_interval)
    horizon = max(scenario.now, max(minute_of(r) for r in records))
    out: list[tuple[str, int]] = []
    by_alert: dict[str, list[Record]] = {}
    raised: dict[str, Record] = {}
    for record in records:
        alert_id = record.fields.get("alert_id")
        if record.event == "alert_raised":
            raised[str(alert_id)] = record
        elif alert_id is not None:
            by_alert.setdefault(str(alert_id), []).append(record)
        reason = str(record.fields.get("reason", ""))
        if record.event == "alert_held" and not any(c.isalnum() for c in reason):
            out.append(("hold_without_reason", record.seq))
        if record.event == "counters":
            f = record.fields
            if (
                f["faces_wiped"] + f["alerts"] + f["faces_skipped"]
                != f["faces_detected"]
            ):
                out.append(("counters_inconsistent", record.seq))

    for alert in scenario.alerts:
        raise_record = raised[alert.alert_id]
        later = by_alert.get(alert.alert_id, [])
        purge = next((r for r in later if r.event == "alert_purged"), None)
        before = [r for r in later if purge is None or r.seq < purge.seq]
        ttl = minutes(policy.alert_ttl)
        own = alert.minute + alert.ahead
        # The alert's time may lead its record's by a minute and 2 s of skew.
        forward = alert.ahead >= 2
        if (
            forward
            or alert.expires != own + ttl
            or alert.expires >= alert.minute + ttl + 2
        ):
            out.append(("event_time_inconsistent", raise_record.seq))
        base = min(alert.expires, (alert.minute if forward else own) + ttl)
        events = [
            (
                minute_of(r),
                "hold" if r.event == "alert_held" else "release",
                int((parse_time(r.fields["until"]) - T0) / MINUTE)
                if r.event == "alert_held"
                else 0,
            )
            for r in before
            if r.event in ("alert_held", "alert_released")
        ]
        gone = gone_at(base, events, minutes(policy.max_hold), 5000)
        deadline = gone + pi
        # The store refuses these once the alert is gone; the log's skew is 2 s,
        # less than a minute, so a record at the minute it went is still in time.
        live_only = ("alert_reviewed", "alert_held", "alert_released", "alert_exported")
        for r in later:
            if r.event in live_only and minute_of(r) > gone:
                out.append(("after_expiry", r.seq))
        end_of_existence = minute_of(purge) if purge is not None else horizon
        if end_of_existence > deadline:
            evidence = next(
                (
                    r.seq
                    for r in [*before, *([purge] if purge else [])]
                    if r.event in ("alert_held", "alert_released", "alert_purged")
                    and minute_of(r) > deadline
                ),
                raise_record.seq,
            )
            out.append(("alert_not_purged", evidence))
        if purge is not None or horizon > deadline:
            where = purge.seq if purge is not None else raise_record.seq
            reviewers = {
                " ".join(r.fields["reviewer"].casefold().split())
                for r in before
                if r.event == "alert_reviewed" and minute_of(r) <= gone
            }
            needed = 2 if policy.two_person_review else 1
            if not reviewers:
                out.append(("alert_not_reviewed", where))
            elif len(reviewers) < needed:
                out.append(("single_review", where))

    if scenario.stop is not None:
        deadline = scenario.stop + minutes(policy.watchlist_ttl_after_stop)
        destroy = next((r for r in records if r.event == "watchlist_destroyed"), None)
        if destroy is not None and minute_of(destroy) > deadline:
            out.append(("watchlist_not_destroyed", destroy.seq))
        elif destroy is None and horizon > deadline:
            out.append(("watchlist_not_destroyed", 1))
    return sorted(out, key=lambda v: (v[1], checks.VIOLATION_KINDS.index(v[0])))


@settings(max_examples=500)
@given(scenarios())
def test_checks_flag_exactly_the_violations_in_the_log(scenario: Scenario) -> None:
    records = build(scenario)
    now = at(scenario.now)
    found = [(v.kind, v.record) for v in checks.run_checks(records, now)]
    want = expected(scenario, records)
    for kind in sorted({k for k, _ in want}):
        event(kind)
    assert found == want
    for violation in checks.run_checks(records, now):
        assert violation.line == violation.record + 1  # type: ignore[operator]
        assert "SUBJECT" not in violation.message


@given(scenarios())
def test_a_later_audit_finds_at_least_as_much(scenario: Scenario) -> None:
    records = build(scenario)
    early = checks.run_checks(records, at(scenario.now))
    late = checks.run_checks(records, at(scenario.now + 100))
    assert {(v.kind, v.record) for v in early} <= {(v.kind, v.record) for v in late}


def test_the_model_catches_a_late_purge() -> None:
    """The model itself can say "violation" (a check on the test)."""
    policy = lfr.RetentionPolicy(alert_ttl=10 * MINUTE, purge_interval=MINUTE)
    alert = Alert("a", 0, 10, [Action(12, "purge")])
    scenario = Scenario(policy, [alert], None, None, [], 20)
    records = build(scenario)
    assert ("alert_not_purged", 3) in expected(scenario, records)
