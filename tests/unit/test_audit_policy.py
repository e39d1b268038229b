"""The auditor brings the rules: ``verify(policy=)`` and ``lfr audit --policy``.

A hostile operator records a 10-year retention and single-person review in his
own ``deployment_started`` record. Without the auditor's policy the log verifies
(the negative control: it shows these tests can fail); with it, the looser policy
is ``looser_policy`` and every deadline runs on the auditor's 24 hours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import lfr
from lfr.audit import AuditLog, SigningKey, verify
from tests.support.forge import resign

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
DAY = timedelta(days=1)
NOW = T0 + 30 * DAY
TEN_YEARS = lfr.RetentionPolicy(alert_ttl=3650 * DAY, two_person_review=False)
AUDITOR = lfr.Policy(min_threshold=0.9)
SHA = "11" * 32


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def write(
    path: Path,
    key: SigningKey,
    *,
    recorded: lfr.RetentionPolicy = TEN_YEARS,
    threshold: float = 0.95,
    created: datetime | None = T0 - H,
    purge_after: timedelta = 2 * DAY,
    reviewers: tuple[str, ...] = ("pc-1",),
) -> Path:
    """One deployment, one alert reviewed and purged ``purge_after`` later."""
    clock = Clock()
    start: dict[str, Any] = {
        "deployment_id": "dep-1",
        "camera_ids": ["cam-1"],
        "location": "Cardiff city centre",
        "purpose": "wanted persons",
        "authorised_by": "Supt B. Example",
        "watchlist_sha256": SHA,
        "watchlist_size": 812,
        "model_id": "dlib-resnet",
        "threshold": threshold,
        "policy": recorded,
        "lfr_version": lfr.__version__,
    }
    if created is not None:
        start["watchlist_created"] = created
    with AuditLog.create(path, key, clock=clock) as log:
        log.append("deployment_started", **start)
        clock.now = T0 + H
        raised = clock.now
        log.append(
            "alert_raised",
            alert_id="a1",
            deployment_id="dep-1",
            camera_id="cam-1",
            subject_id="SUBJECT-7f3a",
            score=0.97,
            time=raised,
            expires=raised + recorded.alert_ttl,
        )
        for reviewer in reviewers:
            log.append(
                "alert_reviewed", alert_id="a1", reviewer=reviewer, decision="confirmed"
            )
        log.append(
            "counters",
            deployment_id="dep-1",
            camera_id="cam-1",
            frames_processed=900,
            frames_dropped=0,
            faces_detected=40,
            faces_skipped=9,
            faces_wiped=30,
            alerts=1,
        )
        clock.now = T0 + 6 * H
        log.append("deployment_stopped", deployment_id="dep-1")
        clock.now = T0 + 7 * H
        log.append("watchlist_destroyed", watchlist_sha256=SHA, deployment_id="dep-1")
        clock.now = raised + purge_after
        log.append("alert_purged", alert_id="a1")
    return path


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def kinds(report: lfr.audit.AuditReport) -> list[tuple[str, int | None]]:
    return [(v.kind, v.record) for v in report.violations]


def test_the_ten_year_log_verifies_without_a_policy(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(tmp_path / "audit.log", key)
    report = verify(log, key.public_key(), now=NOW)
    assert report.ok, report.violations
    assert report.policy is None
    (summary,) = report.deployments
    assert summary.threshold == 0.95
    assert summary.policy == TEN_YEARS.to_json()
    assert summary.watchlist_created == T0 - H


def test_the_ten_year_log_is_looser_policy_with_the_auditors(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(tmp_path / "audit.log", key)
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    looser = [v for v in report.violations if v.kind == "looser_policy"]
    assert [(v.record, v.line) for v in looser] == [(1, 2), (1, 2)]
    ttl, review = (v.message for v in looser)
    assert "deployment dep-1 (record 1, line 2)" in ttl
    assert "alert_ttl was 3650 days; the policy allows at most 1 day" in ttl
    assert "two_person_review was False" in review
    assert report.policy == AUDITOR.to_json()


def test_a_purge_two_days_late_is_judged_by_the_auditors_24_hours(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(tmp_path / "audit.log", key)
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    assert ("alert_not_purged", 7) in kinds(report)
    assert ("single_review", 7) in kinds(report)
    # The same purge ten hours after the alert is in time under both.
    honest = write(tmp_path / "honest.log", key, purge_after=10 * H)
    assert ("alert_not_purged", 7) not in kinds(
        verify(honest, key.public_key(), now=NOW, policy=AUDITOR)
    )


def test_a_threshold_below_the_minimum_is_flagged(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(
        tmp_path / "audit.log",
        key,
        recorded=lfr.RetentionPolicy(),
        threshold=0.6,
        purge_after=10 * H,
        reviewers=("pc-1", "ps-2"),
    )
    assert verify(log, key.public_key(), now=NOW).ok
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    (violation,) = report.violations
    assert violation.kind == "looser_policy"
    assert "threshold was 0.6; the policy allows no lower than 0.9" in (
        violation.message
    )


@pytest.mark.parametrize(
    ("created", "message"),
    [
        (None, "cannot show the watchlist's age: the record has no readable"),
        (T0 - 3 * DAY, "the watchlist was 3 days, 0:00:00 old at the start"),
        (T0 + H, "is after the start"),
    ],
)
def test_the_watchlist_age_is_judged(
    tmp_path: Path, key: SigningKey, created: datetime | None, message: str
) -> None:
    log = write(
        tmp_path / "audit.log",
        key,
        recorded=lfr.RetentionPolicy(),
        created=created,
        purge_after=10 * H,
        reviewers=("pc-1", "ps-2"),
    )
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    (violation,) = report.violations
    assert violation.kind == "looser_policy"
    assert message in violation.message
    ageless = lfr.Policy(min_threshold=0.9, max_watchlist_age=None)
    assert verify(log, key.public_key(), now=NOW, policy=ageless).ok


def test_the_clean_control_verifies_with_the_policy(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(
        tmp_path / "audit.log",
        key,
        recorded=lfr.RetentionPolicy(alert_ttl=12 * H),
        purge_after=10 * H,
        reviewers=("pc-1", "ps-2"),
    )
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    assert report.ok, report.violations
    assert report.to_json()["policy"] == AUDITOR.to_json()
    assert report.to_json()["deployments"][0]["threshold"] == 0.95


def test_the_record_shows_the_policy_and_threshold_in_force(
    tmp_path: Path, key: SigningKey
) -> None:
    log = write(tmp_path / "audit.log", key)
    report = verify(log, key.public_key(), now=NOW, policy=AUDITOR)
    page = lfr.audit.report.render_markdown(report)
    assert "| Match threshold | 0.95 |" in page
    assert "alerts kept 3650 days" in page
    assert "single-person review" in page
    assert "Judged against the auditor's policy: alerts kept 24 h" in page
    assert "match threshold at least 0.9" in page
    assert "SUBJECT-7f3a" not in page


# --- the command line -------------------------------------------------------------


def lfr_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path, key: SigningKey) -> tuple[Path, Path, Path]:
    log = write(tmp_path / "audit.log", key)
    pub = tmp_path / "auditor" / "force.pub"
    pub.parent.mkdir()
    key.public_key().save(pub)
    policy = tmp_path / "auditor" / "policy.json"
    policy.write_text(json.dumps(AUDITOR.to_json()))
    return log, pub, policy


def test_cli_verify_with_the_policy_reports_looser_policy(
    files: tuple[Path, Path, Path],
) -> None:
    log, pub, policy = files
    now = ("--now", NOW.isoformat())
    plain = lfr_cli("audit", "verify", log, "--public-key", pub, *now)
    assert plain.returncode == 0, plain.stderr
    assert "threshold in force: 0.95" in plain.stdout
    assert "policy in force: alerts kept 3650 days" in plain.stdout
    assert "single-person review" in plain.stdout
    assert "judged against: the policy each deployment recorded" in plain.stdout
    out = lfr_cli("audit", "verify", log, "--public-key", pub, "--policy", policy, *now)
    assert out.returncode == 1, out.stderr
    digest = __import__("hashlib").sha256(policy.read_bytes()).hexdigest()
    assert f"judged against policy: {policy} (sha256 {digest})" in out.stdout
    assert "looser_policy: deployment dep-1" in out.stdout
    assert "alert_not_purged" in out.stdout


def test_cli_report_with_the_policy(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    log, pub, policy = files
    out_dir = tmp_path / "record"
    out = lfr_cli(
        "audit", "report", log, "--public-key", pub, "--out", out_dir,
        "--policy", policy, "--now", NOW.isoformat(),
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "judged against policy" in out.stdout
    record = json.loads((out_dir / "deployment-record.json").read_text())
    assert record["policy"] == AUDITOR.to_json()
    assert "looser_policy" in {v["kind"] for v in record["violations"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"lfr_policy": 9}', "unknown policy version 9"),
        ('{"lfr_policy": 1, "alert_ttl_seconds": NaN}', "may not hold NaN"),
        (None, "cannot read policy file"),
    ],
)
def test_cli_a_bad_policy_file_exits_2(
    files: tuple[Path, Path, Path], tmp_path: Path, content: str | None, message: str
) -> None:
    log, pub, _ = files
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    for command in ("verify", "report"):
        extra = ("--out", tmp_path / "out") if command == "report" else ()
        out = lfr_cli(
            "audit", command, log, "--public-key", pub, "--policy", bad, *extra
        )
        assert out.returncode == 2
        assert f"lfr audit {command}: " in out.stderr
        assert message in out.stderr
    assert not (tmp_path / "out").exists()


def test_a_deployment_started_again_is_judged_at_every_start(
    tmp_path: Path, key: SigningKey
) -> None:
    """The second start of one deployment id cannot slip past the policy."""
    honest = {
        "recorded": lfr.RetentionPolicy(alert_ttl=12 * H),
        "purge_after": 10 * H,
        "reviewers": ("pc-1", "ps-2"),
    }
    path = write(tmp_path / "a.log", key, **honest)  # type: ignore[arg-type]
    with AuditLog.open(path, key, clock=lambda: T0 + 12 * H) as log:
        again = log.append(
            "deployment_started",
            deployment_id="dep-1",
            camera_ids=["cam-1"],
            location="Cardiff",
            purpose="wanted persons",
            authorised_by="Supt B",
            watchlist_sha256="22" * 32,
            watchlist_size=5,
            model_id="dlib-resnet",
            threshold=0.3,
            policy=lfr.RetentionPolicy(),
            lfr_version=lfr.__version__,
            watchlist_created=datetime(2020, 1, 1, tzinfo=timezone.utc),
        )
    report = verify(path, key.public_key(), now=NOW, policy=AUDITOR)
    second = [v for v in report.violations if v.kind == "looser_policy"]
    assert {v.record for v in second} == {again.seq}
    assert any("threshold" in v.message for v in second)
    assert any("watchlist" in v.message for v in second)
    # Its watchlist must be destroyed too, policy or not.
    plain = verify(path, key.public_key(), now=NOW)
    assert "watchlist_not_destroyed" in {v.kind for v in plain.violations}
    # The control: the same log without the second start.
    clean = write(tmp_path / "b.log", key, **honest)  # type: ignore[arg-type]
    report = verify(clean, key.public_key(), now=NOW, policy=AUDITOR)
    assert report.ok, report.violations


@pytest.mark.parametrize("field", ["threshold", "policy"])
def test_a_huge_number_in_a_signed_record_is_judged_not_a_crash(
    tmp_path: Path, key: SigningKey, field: str
) -> None:
    """A key holder can sign any JSON; 10**400 must not stop the audit."""
    path = write(tmp_path / "a.log", key, recorded=lfr.RetentionPolicy())
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    fields = lines[1]["fields"]
    if field == "threshold":
        fields["threshold"] = 10**400
    else:
        fields["policy"] = {**fields["policy"], "alert_ttl_seconds": 10**400}
    resign(path, lines, key)
    report = verify(path, key.public_key(), now=NOW, policy=AUDITOR)
    assert not report.ok
    assert "looser_policy" in {v.kind for v in report.violations}
    assert not [v for v in report.violations if v.kind == "integrity"]
    verify(path, key.public_key(), now=NOW)  # and without a policy: no crash
