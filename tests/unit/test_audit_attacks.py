"""Attacks on the audit trail that a signed, well-chained log could hide.

Each test writes a real signed log with :class:`lfr.AuditLog` on a fake clock
and verifies it with :func:`lfr.audit.verify`: the attack must be reported as its
violation, on the right record, and the honest control must verify clean.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import lfr
from lfr.audit import AuditLog, SigningKey, verify
from lfr.audit.log import read_log
from lfr.audit.report import summarise

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)
H = timedelta(hours=1)
DAY = timedelta(days=1)
POLICY = lfr.RetentionPolicy(two_person_review=True)
PURGE = POLICY.purge_interval
NOW = T0 + 60 * DAY


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


Writer = Callable[[AuditLog, Clock], None]


def start(log: AuditLog, clock: Clock) -> None:
    log.append(
        "deployment_started",
        deployment_id="dep-1",
        camera_ids=["cam-1"],
        location="Cardiff city centre",
        purpose="wanted persons",
        authorised_by="Supt B. Example",
        watchlist_sha256="11" * 32,
        watchlist_size=812,
        model_id="dlib-resnet",
        threshold=0.6,
        policy=POLICY,
        lfr_version=lfr.__version__,
    )


def raise_alert(
    log: AuditLog,
    clock: Clock,
    alert_id: str = "a1",
    *,
    ahead: timedelta = timedelta(0),
    expires: datetime | None = None,
) -> datetime:
    own = clock.now + ahead
    log.append(
        "alert_raised",
        alert_id=alert_id,
        deployment_id="dep-1",
        camera_id="cam-1",
        subject_id="SUBJECT-7f3a",
        score=0.74,
        time=own,
        expires=expires if expires is not None else own + POLICY.alert_ttl,
    )
    return own


def review(log: AuditLog, reviewer: str, alert_id: str = "a1") -> None:
    log.append(
        "alert_reviewed", alert_id=alert_id, reviewer=reviewer, decision="confirmed"
    )


def write(tmp_path: Path, body: Writer) -> tuple[Path, SigningKey]:
    key = SigningKey.generate()
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    with AuditLog.create(path, key, clock=clock) as log:
        clock.now = T0 + S
        start(log, clock)
        body(log, clock)
    return path, key


def kinds(tmp_path: Path, body: Writer) -> list[tuple[str, int | None]]:
    path, key = write(tmp_path, body)
    report = verify(path, key.public_key(), now=NOW)
    assert report.ok == (not report.violations)
    for violation in report.violations:
        assert "SUBJECT" not in violation.message
    return [(v.kind, v.record) for v in report.violations]


def honest(log: AuditLog, clock: Clock) -> None:
    clock.now = T0 + H
    raise_alert(log, clock)
    clock.now += 60 * S
    review(log, "pc-1")
    clock.now += 60 * S
    review(log, "ps-2")
    clock.now = T0 + H + DAY + PURGE
    log.append("alert_purged", alert_id="a1")


def test_the_honest_control_verifies_ok(tmp_path: Path) -> None:
    assert kinds(tmp_path, honest) == []


# -- item 4: times ------------------------------------------------------------------


def test_clock_set_back_before_a_late_purge_is_time_went_back(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + 20 * DAY  # much later: the purge is overdue
        log.append("anomaly", kind="other", detail="something at day 20")
        clock.now -= 19 * DAY  # the clock set back ~19 days, to look in time
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == [("time_went_back", 6)]


def test_a_clock_set_back_ten_days_is_reported_on_each_record(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        honest(log, clock)
        clock.now -= 10 * DAY
        log.append("anomaly", kind="other", detail="after the clock went back")

    assert kinds(tmp_path, body) == [("time_went_back", 6)]


def test_a_clock_back_within_the_skew_is_tolerated(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        honest(log, clock)
        clock.now -= 2 * S
        log.append("anomaly", kind="other", detail="2 s back")
        clock.now -= S
        log.append("anomaly", kind="other", detail="3 s back from the high mark")

    assert kinds(tmp_path, body) == [("time_went_back", 7)]


def test_forward_dated_alert_is_flagged_and_buys_no_retention(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock, ahead=365 * DAY)
        review(log, "pc-1")
        review(log, "ps-2")

    # The purge deadline runs from the record's own time, not a year on.
    path, key = write(tmp_path, body)
    report = verify(path, key.public_key(), now=T0 + H + DAY + PURGE)
    assert [(v.kind, v.record) for v in report.violations] == [
        ("event_time_inconsistent", 2)
    ]
    assert "after the record's own time" in report.violations[0].message
    report = verify(path, key.public_key(), now=T0 + H + DAY + PURGE + S)
    assert [(v.kind, v.record) for v in report.violations] == [
        ("event_time_inconsistent", 2),
        ("alert_not_purged", 2),
    ]


def test_alert_time_a_minute_ahead_is_the_stores_skew(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock, ahead=60 * S)
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + H + 60 * S + DAY + PURGE
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == []


@pytest.mark.parametrize(
    "shift", [timedelta(days=300), S, -S, -H], ids=["year", "+1s", "-1s", "-1h"]
)
def test_expiry_not_time_plus_ttl_is_event_time_inconsistent(
    tmp_path: Path, shift: timedelta
) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock, expires=clock.now + POLICY.alert_ttl + shift)
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + DAY  # in time for the shortest of them
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == [("event_time_inconsistent", 2)]


def test_expiry_within_a_microsecond_is_the_stores_rounding(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H + timedelta(microseconds=7)
        own = clock.now
        raise_alert(
            log, clock, expires=own + POLICY.alert_ttl - timedelta(microseconds=1)
        )
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + H + DAY
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == []


@pytest.mark.parametrize(
    "event",
    ["alert_reviewed", "alert_held", "alert_actioned", "alert_exported"],
)
def test_a_record_after_expiry_is_flagged(tmp_path: Path, event: str) -> None:
    table: dict[str, dict[str, object]] = {
        "alert_reviewed": {"reviewer": "pc-9", "decision": "confirmed"},
        "alert_held": {"reason": "case 17", "until": T0 + 9 * DAY, "by": "sgt-4"},
        "alert_actioned": {"action": "engaged", "by": "pc-1"},
        "alert_exported": {"by": "dc-9"},
    }
    fields = table[event]

    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + H + DAY + 3 * S  # expired 3 s ago (skew is 2 s)
        log.append(event, alert_id="a1", **fields)
        clock.now = T0 + H + DAY + PURGE
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == [("after_expiry", 5)]


def test_a_record_at_expiry_within_the_skew_is_in_time(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        clock.now = T0 + H + DAY + 2 * S
        review(log, "ps-2")
        clock.now = T0 + H + DAY + PURGE
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == []


def test_two_reviews_after_expiry_count_for_nothing(tmp_path: Path) -> None:
    """The issue's attack: both reviews recorded after the alert expired."""

    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        clock.now = T0 + H + DAY + H  # both too late
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + H + DAY + H + S
        log.append("alert_purged", alert_id="a1")

    path, key = write(tmp_path, body)
    report = verify(path, key.public_key(), now=NOW)
    assert [(v.kind, v.record) for v in report.violations] == [
        ("after_expiry", 3),
        ("after_expiry", 4),
        ("alert_not_purged", 5),
        ("alert_not_reviewed", 5),
    ]


def test_a_review_after_expiry_does_not_count(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        clock.now = T0 + H + DAY + H  # a second reviewer, too late
        review(log, "ps-2")
        clock.now = T0 + H + DAY + H + S
        log.append("alert_purged", alert_id="a1")

    path, key = write(tmp_path, body)
    report = verify(path, key.public_key(), now=NOW)
    assert [(v.kind, v.record) for v in report.violations] == [
        ("after_expiry", 4),
        ("alert_not_purged", 5),
        ("single_review", 5),
    ]


def test_a_late_review_is_not_an_outcome_in_the_record(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        clock.now = T0 + H + 2 * DAY
        review(log, "pc-1")

    path, key = write(tmp_path, body)
    records, _ = read_log(path, key.public_key())
    (summary,) = summarise(records)
    assert summary.unreviewed == 1
    assert summary.confirmed == 0


def test_a_hold_in_force_keeps_records_in_time(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        review(log, "ps-2")
        clock.now = T0 + 2 * H
        log.append(
            "alert_held", alert_id="a1", reason="case 17", until=T0 + 5 * DAY, by="s"
        )
        clock.now = T0 + 3 * DAY
        log.append("alert_exported", alert_id="a1", by="dc-9")
        clock.now = T0 + 5 * DAY + PURGE
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == []


def test_reconciled_records_after_expiry_are_a_notice(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        clock.now = T0 + H + DAY + H  # the process crashed; reopened later
        log.append("anomaly", kind="trail_reconciled", detail="1 review")
        review(log, "ps-2")
        log.append("alert_purged", alert_id="a1")

    path, key = write(tmp_path, body)
    report = verify(path, key.public_key(), now=NOW)
    # The purge is late (an hour), but the reconciled review is not after_expiry.
    assert [(v.kind, v.record) for v in report.violations] == [("alert_not_purged", 6)]
    assert any("reconciliation" in notice for notice in report.notices)


# -- item 5: hold reasons and people ------------------------------------------------


@pytest.mark.parametrize("reason", [".", "-", " - ", "…", "?!"])
def test_a_hold_reason_without_a_letter_or_digit_is_flagged(
    tmp_path: Path, reason: str
) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        review(log, "ps-2")
        log.append(
            "alert_held", alert_id="a1", reason=reason, until=T0 + 2 * DAY, by="s"
        )
        clock.now = T0 + 2 * DAY + PURGE
        log.append("alert_purged", alert_id="a1")

    # (AuditLog.append itself refuses an empty or all-blank reason.)
    assert kinds(tmp_path, body) == [("hold_without_reason", 5)]


@pytest.mark.parametrize("second", ["PC-1", "pc-1 ", " Pc-1", "pc-1\t"])
def test_the_same_reviewer_in_another_case_is_one_person(
    tmp_path: Path, second: str
) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "pc-1")
        review(log, second)
        clock.now = T0 + H + DAY
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == [("single_review", 5)]


def test_inner_blanks_are_collapsed_not_removed(tmp_path: Path) -> None:
    def body(log: AuditLog, clock: Clock) -> None:
        clock.now = T0 + H
        raise_alert(log, clock)
        review(log, "PC  Jones")
        review(log, "pc jones")
        review(log, "pcjones")
        clock.now = T0 + H + DAY
        log.append("alert_purged", alert_id="a1")

    assert kinds(tmp_path, body) == []
