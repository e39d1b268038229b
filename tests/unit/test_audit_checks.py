"""The promise checks on hand-made records, with known answers.

Records are built directly (no signing): each test makes one deployment, breaks
at most one promise, and checks that exactly that violation is reported, on the
right record.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import lfr
from lfr.audit import Violation, checks
from lfr.audit.report import render_markdown, summarise
from tests.support.audit_records import OTHER_SHA, SHA, T0, Records

H = timedelta(hours=1)
S = timedelta(seconds=1)
DAY = timedelta(days=1)
PURGE = lfr.RetentionPolicy().purge_interval  # 5 minutes
LATER = T0 + 100 * DAY


def found(records: Records, now: datetime = LATER) -> list[tuple[str, int | None]]:
    return [(v.kind, v.record) for v in checks.run_checks(records.records, now)]


def compliant() -> Records:
    """One deployment that keeps every promise."""
    log = Records()
    log.start(T0)
    log.alert(T0 + H, "a1")
    log.review(T0 + H + 60 * S, "a1", "officer-1")
    log.review(T0 + H + 120 * S, "a1", "officer-2", "confirmed")
    log.add(T0 + 2 * H, "alert_actioned", alert_id="a1", action="engaged", by="pc-1")
    log.alert(T0 + 2 * H, "a2")
    log.review(T0 + 2 * H + S, "a2", "officer-1", "false_alert")
    log.review(T0 + 2 * H + 2 * S, "a2", "officer-2", "false_alert")
    log.counters(T0 + 3 * H, detected=40, wiped=35, alerts=2, skipped=3)
    log.stop(T0 + 4 * H)
    log.purge(T0 + H + DAY + PURGE, "a1")  # exactly at its deadline
    log.purge(T0 + 2 * H + DAY, "a2")
    log.destroy(T0 + 4 * H + DAY)  # exactly at its deadline
    return log


def test_compliant_deployment_has_no_violations_or_notices() -> None:
    log = compliant()
    assert checks.run_checks(log.records, LATER) == []
    assert checks.notices(log.records, LATER) == []


def test_every_check_is_run() -> None:
    assert len(checks.CHECKS) == 9
    names = {check.__name__ for check in checks.CHECKS}
    assert names == {
        "times_in_order",
        "alert_times_consistent",
        "no_late_alert_records",
        "alerts_purged",
        "holds_have_reasons",
        "alerts_reviewed",
        "watchlists_destroyed",
        "counters_consistent",
        "no_biometric_content",
    }


# -- alerts purged by their deadline ----------------------------------------------


def reviewed_alert(log: Records, at: datetime, alert_id: str = "a1") -> None:
    log.alert(at, alert_id)
    log.review(at + S, alert_id, "officer-1")
    log.review(at + 2 * S, alert_id, "officer-2")


def test_purge_one_second_late_is_flagged_on_the_purge() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    purge = log.purge(T0 + DAY + PURGE + S, "a1")
    assert found(log) == [("alert_not_purged", purge.seq)]
    (violation,) = checks.alerts_purged(log.records, LATER)
    assert violation.line == purge.line
    assert "a1" in violation.message
    assert "SUBJECT" not in violation.message


def test_purge_at_the_deadline_is_in_time() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.purge(T0 + DAY + PURGE, "a1")
    assert found(log) == []


def test_unpurged_alert_is_flagged_once_the_deadline_has_passed() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    raised = log.records[2]
    deadline = T0 + DAY + PURGE
    assert found(log, deadline - S) == []
    assert found(log, deadline) == []
    assert found(log, deadline + S) == [("alert_not_purged", raised.seq)]


def test_now_earlier_than_the_log_counts_as_the_logs_end() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.add(T0 + 3 * DAY, "anomaly", kind="other")
    assert found(log, T0) == [("alert_not_purged", 2)]


def test_held_alert_is_kept_until_the_hold_ends() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 10 * DAY)
    assert found(log, T0 + 10 * DAY + PURGE) == []
    assert found(log, T0 + 10 * DAY + PURGE + S) == [("alert_not_purged", 2)]
    purge = log.purge(T0 + 10 * DAY + PURGE, "a1")
    assert found(log) == []
    log.records.remove(purge)
    late = log.purge(T0 + 10 * DAY + PURGE + S, "a1")
    assert found(log) == [("alert_not_purged", late.seq)]


def test_hold_shorter_than_the_expiry_does_not_shorten_it() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 2 * H)
    assert found(log, T0 + DAY + PURGE) == []


def test_release_after_expiry_starts_the_purge_interval() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 10 * DAY)
    released = T0 + 3 * DAY
    log.release(released, "a1")
    assert found(log, released + PURGE) == []
    assert found(log, released + PURGE + S) == [("alert_not_purged", 2)]
    purge = log.purge(released + PURGE + S, "a1")
    assert found(log) == [("alert_not_purged", purge.seq)]


def test_release_before_expiry_restores_the_expiry() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 10 * DAY)
    log.release(T0 + 2 * H, "a1")
    assert found(log, T0 + DAY + PURGE) == []
    assert found(log, T0 + DAY + PURGE + S) == [("alert_not_purged", 2)]


def test_the_last_hold_decides() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 10 * DAY)
    log.hold(T0 + 2 * DAY, "a1", until=T0 + 5 * DAY)
    assert found(log, T0 + 5 * DAY + PURGE) == []
    assert found(log, T0 + 5 * DAY + PURGE + S) == [("alert_not_purged", 2)]


def test_hold_ending_in_the_past_ends_the_retention_at_the_hold() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 10 * DAY)
    replaced = T0 + 3 * DAY
    log.hold(replaced, "a1", until=T0 + 2 * DAY)  # kept until now, due at once
    assert found(log, replaced + PURGE) == []
    assert found(log, replaced + PURGE + S) == [("alert_not_purged", 2)]


def test_hold_at_the_instant_of_expiry_keeps_nothing() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.hold(T0 + DAY, "a1", until=T0 + 10 * DAY)
    assert found(log, T0 + DAY + PURGE + S) == [("alert_not_purged", 2)]


def test_hold_after_the_retention_ended_keeps_nothing() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    # Within the purge interval after expiry: the store refuses such a hold.
    hold = log.hold(T0 + DAY + 60 * S, "a1", until=T0 + 10 * DAY)
    purge = log.purge(T0 + 2 * DAY, "a1")
    assert found(log) == [("after_expiry", hold.seq), ("alert_not_purged", purge.seq)]
    (violation,) = checks.alerts_purged(log.records, LATER)
    assert "cannot keep it" in violation.message


def test_hold_logged_after_the_deadline_is_the_evidence() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    hold = log.hold(T0 + 2 * DAY, "a1", until=T0 + 10 * DAY)
    log.purge(T0 + 2 * DAY + S, "a1")
    assert found(log) == [
        ("alert_not_purged", hold.seq),
        ("after_expiry", hold.seq),
    ]


def test_hold_longer_than_max_hold_counts_up_to_max_hold() -> None:
    policy = lfr.RetentionPolicy(max_hold=2 * DAY)
    log = Records()
    log.start(T0, policy=policy)
    reviewed_alert(log, T0)
    log.hold(T0 + H, "a1", until=T0 + 30 * DAY)
    assert found(log, T0 + H + 2 * DAY + PURGE) == []
    assert found(log, T0 + H + 2 * DAY + PURGE + S) == [("alert_not_purged", 2)]


def test_expiry_beyond_the_policy_counts_up_to_alert_ttl() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1", expires=T0 + 30 * DAY)
    log.review(T0 + S, "a1", "officer-1")
    log.review(T0 + S, "a1", "officer-2")
    assert found(log, T0 + DAY + PURGE + S) == [
        ("event_time_inconsistent", 2),
        ("alert_not_purged", 2),
    ]


def test_deadline_follows_the_deployments_policy() -> None:
    policy = lfr.RetentionPolicy(alert_ttl=H, purge_interval=timedelta(minutes=1))
    log = Records()
    log.start(T0, policy=policy)
    log.alert(T0, "a1", ttl=H)
    log.review(T0 + S, "a1", "officer-1")
    log.review(T0 + S, "a1", "officer-2")
    assert found(log, T0 + H + 60 * S) == []
    assert found(log, T0 + H + 61 * S) == [("alert_not_purged", 2)]


def test_alert_without_deployment_start_uses_the_default_policy() -> None:
    log = Records()
    log.alert(T0, "a1", deployment="ghost", ttl=H)
    log.review(T0 + S, "a1", "officer-1")
    log.review(T0 + S, "a1", "officer-2")
    # The deadline is the expiry plus the default policy's purge interval.
    assert found(log, T0 + H + PURGE) == []
    assert found(log, T0 + H + PURGE + S) == [("alert_not_purged", 1)]
    notices = checks.notices(log.records, LATER)
    assert len(notices) == 1
    assert "ghost" in notices[0]
    assert "default retention policy" in notices[0]


def test_records_after_the_purge_are_ignored() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    log.purge(T0 + H, "a1")
    hold = log.hold(T0 + 50 * DAY, "a1", until=T0 + 51 * DAY)
    # It does not move the purge deadline; it is a record the store refuses.
    assert found(log) == [("after_expiry", hold.seq)]


# -- holds have reasons -------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   ", None, 17])
def test_hold_without_reason_is_flagged_on_the_hold(reason: object) -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0)
    hold = log.hold(T0 + H, "a1", until=T0 + 2 * DAY, reason=reason)
    log.purge(T0 + 2 * DAY, "a1")
    assert found(log) == [("hold_without_reason", hold.seq)]


# -- reviews ------------------------------------------------------------------------


def test_alert_purged_without_review_is_flagged_on_the_purge() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1")
    purge = log.purge(T0 + DAY, "a1")
    assert found(log) == [("alert_not_reviewed", purge.seq)]


def test_review_after_the_purge_does_not_count() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1")
    purge = log.purge(T0 + DAY, "a1")
    log.review(T0 + DAY + S, "a1", "officer-1")
    log.review(T0 + DAY + S, "a1", "officer-2")
    assert found(log) == [("alert_not_reviewed", purge.seq)]


def test_one_reviewer_is_a_single_review_under_two_person_review() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1")
    log.review(T0 + S, "a1", "officer-1")
    purge = log.purge(T0 + DAY, "a1")
    assert found(log) == [("single_review", purge.seq)]


def test_the_same_reviewer_twice_counts_once() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1")
    log.review(T0 + S, "a1", "officer-1", "inconclusive")
    log.review(T0 + 2 * S, "a1", "officer-1", "confirmed")
    purge = log.purge(T0 + DAY, "a1")
    assert found(log) == [("single_review", purge.seq)]


def test_one_reviewer_is_enough_without_two_person_review() -> None:
    log = Records()
    log.start(T0, policy=lfr.RetentionPolicy(two_person_review=False))
    log.alert(T0, "a1")
    log.review(T0 + S, "a1", "officer-1")
    log.purge(T0 + DAY, "a1")
    assert found(log) == []


def test_unreviewed_alert_is_judged_once_its_deadline_passed() -> None:
    log = Records()
    log.start(T0)
    raised = log.alert(T0, "a1")
    deadline = T0 + DAY + PURGE
    assert found(log, deadline) == []
    assert found(log, deadline + S) == [
        ("alert_not_purged", raised.seq),
        ("alert_not_reviewed", raised.seq),
    ]


# -- watchlists destroyed -----------------------------------------------------------


def stopped_deployment() -> Records:
    log = Records()
    log.start(T0)
    log.stop(T0 + 8 * H)
    return log


def test_watchlist_destroyed_one_second_late_is_flagged_on_the_destruction() -> None:
    log = stopped_deployment()
    destroy = log.destroy(T0 + 8 * H + DAY + S)
    assert found(log) == [("watchlist_not_destroyed", destroy.seq)]


def test_watchlist_never_destroyed_is_flagged_on_its_load_after_the_deadline() -> None:
    log = stopped_deployment()
    deadline = T0 + 8 * H + DAY
    assert found(log, deadline) == []
    assert found(log, deadline + S) == [("watchlist_not_destroyed", 1)]


def test_destruction_without_deployment_id_counts() -> None:
    log = stopped_deployment()
    log.destroy(T0 + 9 * H, deployment=None)
    assert found(log) == []


def test_destruction_of_another_deployments_watchlist_does_not_count() -> None:
    log = stopped_deployment()
    log.destroy(T0 + 9 * H, deployment="dep-2")
    log.destroy(T0 + 9 * H, OTHER_SHA)
    assert found(log) == [("watchlist_not_destroyed", 1)]


def test_every_loaded_watchlist_must_be_destroyed() -> None:
    log = Records()
    log.start(T0)
    load = log.add(
        T0 + H,
        "watchlist_loaded",
        deployment_id="dep-1",
        watchlist_sha256=OTHER_SHA,
        watchlist_size=1300,
        model_id="dlib-resnet",
    )
    log.destroy(T0 + H + S)  # the first watchlist, destroyed when replaced
    log.stop(T0 + 8 * H)
    assert found(log) == [("watchlist_not_destroyed", load.seq)]
    log.destroy(T0 + 9 * H, OTHER_SHA)
    assert found(log) == []


def test_destruction_before_a_reload_does_not_count() -> None:
    log = Records()
    log.start(T0)
    log.destroy(T0 + H)
    reload = log.add(
        T0 + 2 * H,
        "watchlist_loaded",
        deployment_id="dep-1",
        watchlist_sha256=SHA,
        watchlist_size=1200,
        model_id="dlib-resnet",
    )
    log.stop(T0 + 8 * H)
    assert found(log) == [("watchlist_not_destroyed", reload.seq)]


def test_running_deployment_has_no_watchlist_deadline_but_a_notice() -> None:
    log = Records()
    log.start(T0)
    assert found(log) == []
    (notice,) = checks.notices(log.records, LATER)
    assert "still running" in notice


def crashed_deployment() -> Records:
    """dep-1 killed after an alert; the next start closed it at T0 + 8 h."""
    log = Records()
    log.start(T0)
    log.alert(T0 + H, "a1")
    log.add(
        T0 + 8 * H,
        "deployment_stopped",
        deployment_id="dep-1",
        reason="crashed",
        last_record=2,
    )
    return log


def test_crashed_deployment_counts_as_stopped_at_its_close() -> None:
    log = crashed_deployment()
    deadline = T0 + 8 * H + DAY
    assert checks.watchlists_destroyed(log.records, deadline) == []
    (late,) = checks.watchlists_destroyed(log.records, deadline + S)
    assert (late.kind, late.record) == ("watchlist_not_destroyed", 1)
    assert "closed as crashed" in late.message
    log.add(
        T0 + 8 * H,
        "watchlist_destroyed",
        watchlist_sha256=SHA,
        deployment_id="dep-1",
        cause="process_ended",
    )
    assert checks.watchlists_destroyed(log.records, deadline + S) == []


def test_crashed_deployment_gets_a_notice() -> None:
    log = crashed_deployment()
    notices = checks.notices(log.records, LATER)
    crashed = [n for n in notices if "was killed" in n]
    assert crashed == [
        "deployment dep-1 was killed after its last record (record 2); closed as "
        "crashed at record 3, line 4 by the next start: its watchlist deadline "
        "runs from 2026-03-02T17:00:00Z, and the watchlist copies it held in "
        "memory ended with its process, not wiped by lfr"
    ]
    assert not any("still running" in n for n in notices)
    # Control: a deployment stopped normally gets no such notice.
    assert not any(
        "was killed" in n for n in checks.notices(compliant().records, LATER)
    )


def test_summary_and_markdown_name_a_crash() -> None:
    log = crashed_deployment()
    (summary,) = summarise(log.records)
    assert summary.crashed
    assert summary.stopped == T0 + 8 * H
    assert summary.duration is None
    assert summary.to_json()["crashed"] is True
    (normal,) = summarise(compliant().records)
    assert not normal.crashed
    assert normal.duration == 4 * H


def test_export_of_an_alert_never_raised_gives_a_notice() -> None:
    log = Records()
    log.start(T0)
    reviewed_alert(log, T0 + H)
    log.stop(T0 + 2 * H)
    log.destroy(T0 + 3 * H)
    log.add(T0 + 5 * H, "alert_exported", alert_id="a1", by="dc-9")
    assert checks.notices(log.records, LATER) == []
    export = log.add(T0 + 5 * H, "alert_exported", alert_id="zz", by="dc-9")
    assert checks.notices(log.records, LATER) == [
        f"record {export.seq}, line {export.line} (alert_exported) refers to alert "
        "zz, which was not raised earlier in the log"
    ]
    assert found(log, T0 + 5 * H) == []


def test_policy_ttl_zero_means_at_the_stop() -> None:
    policy = lfr.RetentionPolicy(watchlist_ttl_after_stop=timedelta(0))
    log = Records()
    log.start(T0, policy=policy)
    log.stop(T0 + H)
    log.destroy(T0 + H)
    assert found(log) == []
    log.records.pop()
    late = log.destroy(T0 + H + S)
    assert found(log) == [("watchlist_not_destroyed", late.seq)]


# -- counters -------------------------------------------------------------------------


def test_counters_off_by_one_are_flagged() -> None:
    log = Records()
    log.start(T0)
    log.counters(T0 + H, detected=10, wiped=7, alerts=1, skipped=2)
    bad = log.counters(T0 + 2 * H, detected=10, wiped=8, alerts=1, skipped=2)
    short = log.counters(T0 + 3 * H, detected=10, wiped=6, alerts=1, skipped=2)
    assert found(log) == [
        ("counters_inconsistent", bad.seq),
        ("counters_inconsistent", short.seq),
    ]
    assert "11" in checks.counters_consistent(log.records, LATER)[0].message


@pytest.mark.parametrize("value", [-1, "3", 2.0, None, True])
def test_counters_with_an_invalid_count_are_flagged(value: object) -> None:
    log = Records()
    log.start(T0)
    record = log.counters(T0 + H, detected=3, wiped=3, alerts=0, skipped=0)
    fields = dict(record.fields)
    if value is None:
        del fields["faces_wiped"]
    else:
        fields["faces_wiped"] = value
    log.records[-1] = type(record)(
        seq=record.seq,
        time=record.time,
        event=record.event,
        fields=fields,
        line=record.line,
    )
    (violation,) = checks.counters_consistent(log.records, LATER)
    assert (violation.kind, violation.record) == ("counters_inconsistent", record.seq)
    assert "faces_wiped" in violation.message


def test_counters_disagreeing_with_the_alerts_raised_give_a_notice() -> None:
    log = Records()
    log.start(T0)
    log.counters(T0 + H, detected=10, wiped=8, alerts=2, skipped=0)
    log.stop(T0 + 2 * H)
    log.destroy(T0 + 3 * H)
    assert found(log) == []
    notices = checks.notices(log.records, LATER)
    assert any("report 2 alerts, but the log raised 0" in n for n in notices)


# -- biometric content ---------------------------------------------------------------


def test_biometric_fields_are_flagged_by_name_only() -> None:
    log = Records()
    log.start(T0)
    bad = log.add(T0 + H, "anomaly", kind="other", embedding=[0.125] * 128)
    log.add(T0 + H, "anomaly", kind="other", detail="x" * 20)
    assert found(log) == [("biometric_content", bad.seq)]
    (violation,) = checks.no_biometric_content(log.records, LATER)
    assert "embedding" in violation.message
    assert "0.125" not in violation.message


# -- the results --------------------------------------------------------------------


def test_violations_are_in_log_order() -> None:
    log = Records()
    log.start(T0)
    log.alert(T0, "a1")
    log.counters(T0 + H, detected=1, wiped=1, alerts=1, skipped=0)
    log.hold(T0 + H, "a1", until=T0 + 2 * H, reason="")
    log.stop(T0 + 2 * H)
    seqs = [seq if seq is not None else -1 for _, seq in found(log)]
    assert seqs == sorted(seqs)
    assert len(seqs) == 5  # not purged, not reviewed, counters, hold, watchlist


def test_violation_validates_its_kind() -> None:
    with pytest.raises(ValueError, match="unknown violation kind"):
        Violation("late", 1, 2, "message")
    with pytest.raises(ValueError, match="message"):
        Violation("integrity", 1, 2, "")
    assert Violation("integrity", None, None, "m").to_json() == {
        "kind": "integrity",
        "record": None,
        "line": None,
        "log": None,
        "message": "m",
    }
    assert Violation("integrity", 3, 4, "m", "audit-2.log").to_json()["log"] == (
        "audit-2.log"
    )


def test_checks_survive_malformed_fields() -> None:
    log = Records()
    log.add(T0, "deployment_started", deployment_id="dep-1", policy="nonsense")
    log.add(T0, "alert_raised", alert_id="a1", deployment_id="dep-1", time=3)
    log.add(T0, "alert_held", alert_id="a1", until="not a time", reason="case")
    log.add(T0, "alert_reviewed", alert_id="a1")
    log.add(T0, "counters")
    log.add(T0, "watchlist_destroyed")
    log.add(T0, "alert_purged", alert_id="zz")
    assert checks.run_checks(log.records, LATER)
    notices = checks.notices(log.records, LATER)
    assert any("policy" in n for n in notices)
    assert any("zz" in n for n in notices)
    summarise(log.records)


def test_summary_counts_outcomes() -> None:
    log = compliant()
    log.alert(T0 + 3 * H, "a3", subject="SUBJECT-0003")  # unreviewed
    log.alert(T0 + 3 * H, "a4", subject="SUBJECT-0004")
    log.review(T0 + 3 * H, "a4", "officer-1", "confirmed")
    log.review(T0 + 3 * H, "a4", "officer-2", "false_alert")  # no agreement
    (summary,) = summarise(log.records)
    assert summary.deployment_id == "dep-1"
    assert summary.started == T0
    assert summary.stopped == T0 + 4 * H
    assert summary.duration == 4 * H
    assert summary.camera_ids == ("cam-1", "cam-2")
    assert summary.watchlist_size == 1200
    assert (summary.faces_detected, summary.faces_wiped) == (40, 35)
    assert (summary.faces_skipped, summary.frames_processed) == (3, 100)
    assert summary.alerts == 4
    assert summary.confirmed == 1
    assert summary.false_alerts == 1
    assert summary.inconclusive == 1
    assert summary.unreviewed == 1
    assert summary.engagements == 1


def test_markdown_holds_counts_and_no_subject_ids() -> None:
    log = compliant()
    (summary,) = summarise(log.records)
    report = lfr.audit.AuditReport(
        ok=True,
        path="/var/log/lfr/dep-1.log",
        records=len(log.records),
        violations=(),
        notices=(),
        deployments=(summary,),
        verified_at=LATER,
    )
    page = render_markdown(report)
    assert "| Alerts | 2 |" in page
    assert "| Confirmed alerts | 1 |" in page
    assert "| False alerts | 1 |" in page
    assert "| Engagements | 1 |" in page
    assert "| Authorising officer | Supt A. Example |" in page
    assert "**OK**" in page
    assert "SUBJECT" not in page
    assert "/var/log" not in page
