"""End to end: a real signed log, ``lfr.audit.verify`` and ``lfr audit``.

Two deployments are written with :class:`lfr.AuditLog` on a fake clock: one keeps
every promise, the other breaks four (a late purge, a single review under
two-person review, counters off by one, a watchlist never destroyed). The report,
the command line and the publishable record must say exactly that, and the record
must hold counts, never the subject ids of the alerts.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import lfr
import lfr.audit.report
from lfr.audit import AuditLog, PublicKey, SigningKey

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
DAY = timedelta(days=1)
NOW = T0 + 30 * DAY
SUBJECTS = ("SUBJECT-7f3a", "SUBJECT-91bc", "SUBJECT-c04d")
POLICY = lfr.RetentionPolicy()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def start(log: AuditLog, deployment: str, sha: str) -> None:
    log.append(
        "deployment_started",
        deployment_id=deployment,
        camera_ids=["cam-1"],
        location="Cardiff city centre",
        purpose="wanted persons | violent offences",
        authorised_by="Supt B. Example",
        watchlist_sha256=sha,
        watchlist_size=812,
        model_id="dlib-resnet",
        threshold=0.6,
        policy=POLICY,
        lfr_version=lfr.__version__,
    )


def alert(log: AuditLog, clock: Clock, deployment: str, alert_id: str, n: int) -> None:
    log.append(
        "alert_raised",
        alert_id=alert_id,
        deployment_id=deployment,
        camera_id="cam-1",
        subject_id=SUBJECTS[n],
        score=0.74,
        time=clock.now,
        expires=clock.now + POLICY.alert_ttl,
    )


def write_log(path: Path, key: SigningKey, *, with_violations: bool) -> None:
    clock = Clock()
    with AuditLog.create(path, key, clock=clock) as log:
        clock.now = T0 + H
        start(log, "dep-ok", "11" * 32)
        alert(log, clock, "dep-ok", "a-ok-1", 0)
        log.append(
            "alert_reviewed", alert_id="a-ok-1", reviewer="pc-1", decision="confirmed"
        )
        log.append(
            "alert_reviewed", alert_id="a-ok-1", reviewer="ps-2", decision="confirmed"
        )
        log.append("alert_actioned", alert_id="a-ok-1", action="engaged", by="pc-1")
        log.append(
            "counters",
            deployment_id="dep-ok",
            camera_id="cam-1",
            frames_processed=9000,
            frames_dropped=3,
            faces_detected=420,
            faces_skipped=60,
            faces_wiped=359,
            alerts=1,
        )
        clock.now = T0 + 6 * H
        log.append("deployment_stopped", deployment_id="dep-ok")
        clock.now = T0 + 7 * H
        log.append(
            "watchlist_destroyed", watchlist_sha256="11" * 32, deployment_id="dep-ok"
        )
        clock.now = T0 + H + DAY
        log.append("alert_purged", alert_id="a-ok-1")
        if not with_violations:
            return
        clock.now = T0 + 2 * DAY
        start(log, "dep-bad", "22" * 32)
        alert(log, clock, "dep-bad", "a-bad-1", 1)
        log.append(
            "alert_reviewed",
            alert_id="a-bad-1",
            reviewer="pc-3",
            decision="false_alert",
        )
        alert(log, clock, "dep-bad", "a-bad-2", 2)
        log.append(
            "alert_reviewed", alert_id="a-bad-2", reviewer="pc-3", decision="confirmed"
        )
        log.append(
            "alert_reviewed", alert_id="a-bad-2", reviewer="ps-4", decision="confirmed"
        )
        log.append(
            "counters",
            deployment_id="dep-bad",
            camera_id="cam-1",
            frames_processed=5000,
            frames_dropped=0,
            faces_detected=100,
            faces_skipped=10,
            faces_wiped=89,
            alerts=2,
        )  # 89 + 2 + 10 = 101: one face unaccounted for
        clock.now = T0 + 2 * DAY + 4 * H
        log.append("deployment_stopped", deployment_id="dep-bad")
        clock.now = T0 + 3 * DAY
        log.append("alert_purged", alert_id="a-bad-2")  # in time
        clock.now = T0 + 5 * DAY
        log.append("alert_purged", alert_id="a-bad-1")  # days late


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def auditor_key(tmp_path: Path, key: SigningKey) -> Path:
    """The public key as an auditor holds it: obtained apart from the log."""
    path = tmp_path / "auditor" / "force.pub"
    path.parent.mkdir()
    key.public_key().save(path)
    return path


@pytest.fixture
def good_log(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "good.log"
    write_log(path, key, with_violations=False)
    return path


@pytest.fixture
def bad_log(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "bad.log"
    write_log(path, key, with_violations=True)
    return path


def lfr_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compliant_log_verifies(good_log: Path, key: SigningKey) -> None:
    report = lfr.audit.verify(good_log, key.public_key(), now=NOW)
    assert report.ok, report.violations
    assert report.violations == ()
    assert report.notices == ()
    assert report.records == 10
    (summary,) = report.deployments
    assert (summary.alerts, summary.confirmed, summary.engagements) == (1, 1, 1)
    assert summary.duration == 5 * H


def test_violations_are_found_on_the_right_records(
    bad_log: Path, key: SigningKey
) -> None:
    report = lfr.audit.verify(bad_log, key.public_key(), now=NOW)
    assert not report.ok
    found = sorted((v.kind, v.record) for v in report.violations)
    assert found == [
        ("alert_not_purged", 19),
        ("counters_inconsistent", 16),
        ("single_review", 19),
        ("watchlist_not_destroyed", 10),
    ]
    for violation in report.violations:
        assert violation.line == violation.record + 1  # type: ignore[operator]
        assert not any(s in violation.message for s in SUBJECTS)
    bad = report.deployments[1]
    assert (bad.alerts, bad.confirmed, bad.false_alerts, bad.unreviewed) == (2, 1, 1, 0)


def test_deadlines_not_yet_reached_are_not_violations(
    tmp_path: Path, key: SigningKey
) -> None:
    clock = Clock()
    path = tmp_path / "running.log"
    with AuditLog.create(path, key, clock=clock) as log:
        start(log, "dep-1", "33" * 32)
        clock.now = T0 + 8 * H
        log.append("deployment_stopped", deployment_id="dep-1")
    due = T0 + 8 * H + POLICY.watchlist_ttl_after_stop
    assert lfr.audit.verify(path, key.public_key(), now=due).ok
    late = lfr.audit.verify(path, key.public_key(), now=due + timedelta(seconds=1))
    assert [(v.kind, v.record) for v in late.violations] == [
        ("watchlist_not_destroyed", 1)
    ]


def test_a_modified_record_is_an_integrity_violation_and_the_prefix_is_checked(
    bad_log: Path, key: SigningKey
) -> None:
    lines = bad_log.read_bytes().split(b"\n")
    lines[12] = lines[12].replace(b"pc-3", b"pc-9")  # a review, re-attributed
    bad_log.write_bytes(b"\n".join(lines))
    report = lfr.audit.verify(bad_log, key.public_key(), now=NOW)
    assert report.records == 12
    integrity = [v for v in report.violations if v.kind == "integrity"]
    assert len(integrity) == 1
    assert (integrity[0].record, integrity[0].line) == (12, 13)
    # The unreviewed alert of the verified prefix is still judged.
    assert ("alert_not_reviewed", 11) in {(v.kind, v.record) for v in report.violations}
    assert any("still running" in n for n in report.notices)


def test_a_torn_last_line_is_a_notice(good_log: Path, key: SigningKey) -> None:
    with open(good_log, "ab") as f:
        f.write(b'{"event":"alert_pur')
    report = lfr.audit.verify(good_log, key.public_key(), now=NOW)
    assert report.ok
    assert report.records == 10
    assert any("incomplete" in n for n in report.notices)


def test_the_wrong_key_is_an_integrity_violation(good_log: Path) -> None:
    report = lfr.audit.verify(good_log, SigningKey.generate().public_key(), now=NOW)
    assert [v.kind for v in report.violations] == ["integrity"]
    assert report.records == 0


def test_verify_refuses_a_naive_now(good_log: Path, key: SigningKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        lfr.audit.verify(good_log, key.public_key(), now=datetime(2026, 4, 1))


def test_last_record_hash_matches_the_file(good_log: Path, key: SigningKey) -> None:
    report = lfr.audit.verify(good_log, key.public_key(), now=NOW)
    last = good_log.read_bytes().rstrip(b"\n").split(b"\n")[-1]
    assert report.last_record_sha256 == hashlib.sha256(last).hexdigest()


# -- the command line -----------------------------------------------------------------


def test_cli_verify_ok_exits_0(good_log: Path, auditor_key: Path) -> None:
    out = lfr_cli("audit", "verify", good_log, "--public-key", auditor_key)
    assert out.returncode == 0, out.stderr
    assert "records verified: 10" in out.stdout
    assert "result: OK" in out.stdout


def test_cli_verify_json(bad_log: Path, auditor_key: Path) -> None:
    out = lfr_cli(
        "audit", "verify", bad_log, "--public-key", auditor_key, "--json",
        "--now", "2026-04-01T00:00:00Z",
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {
        "ok",
        "path",
        "records",
        "violations",
        "notices",
        "deployments",
        "verified_at",
        "last_record_sha256",
        "logs",
        "store",
        "policy",
    }
    assert data["policy"] is None
    assert data["ok"] is False
    assert data["verified_at"] == "2026-04-01T00:00:00Z"
    assert {v["kind"] for v in data["violations"]} == {
        "alert_not_purged",
        "counters_inconsistent",
        "single_review",
        "watchlist_not_destroyed",
    }
    assert set(data["violations"][0]) == {"kind", "record", "line", "log", "message"}
    assert [d["deployment_id"] for d in data["deployments"]] == ["dep-ok", "dep-bad"]
    assert not any(s in out.stdout for s in SUBJECTS)


def test_cli_verify_text_names_records_and_lines(
    bad_log: Path, auditor_key: Path
) -> None:
    out = lfr_cli("audit", "verify", bad_log, "--public-key", auditor_key)
    assert out.returncode == 1
    assert "result: 4 violation(s)" in out.stdout
    assert "record 16, line 17: counters_inconsistent" in out.stdout
    # Every outcome counted in the summary line, inconclusive ones too.
    assert "2 alerts (1 confirmed, 1 false, 0 inconclusive, 0 unreviewed)" in out.stdout


def test_cli_report_writes_the_deployment_record(
    bad_log: Path, auditor_key: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "published"
    out = lfr_cli(
        "audit", "report", bad_log, "--public-key", auditor_key, "--out", out_dir
    )
    assert out.returncode == 1, out.stderr
    md = out_dir / "deployment-record.md"
    js = out_dir / "deployment-record.json"
    assert f"wrote {js}" in out.stdout
    assert f"wrote {md}" in out.stdout
    page = md.read_text(encoding="utf-8")
    assert "## Deployment dep-ok" in page
    assert "## Deployment dep-bad" in page
    assert "| Location | Cardiff city centre |" in page
    assert "| Purpose | wanted persons \\| violent offences |" in page
    assert "| Faces seen | 420 |" in page
    assert "| Alerts | 2 |" in page
    assert "| Confirmed alerts | 1 |" in page
    assert "| False alerts | 1 |" in page
    assert "| Engagements | 1 |" in page
    assert "| Duration | 5 h 00 min |" in page
    assert "4 violation(s) found" in page
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["log"] == "bad.log"
    assert "path" not in data
    for text in (page, js.read_text(encoding="utf-8")):
        assert not any(s in text for s in SUBJECTS)
        assert str(tmp_path) not in text


def test_cli_report_of_a_compliant_log_exits_0(
    good_log: Path, auditor_key: Path, tmp_path: Path
) -> None:
    out = lfr_cli(
        "audit", "report", good_log, "--public-key", auditor_key, "--out", tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "**OK**" in (tmp_path / "deployment-record.md").read_text()


def test_cli_reports_unreadable_inputs(good_log: Path, tmp_path: Path) -> None:
    out = lfr_cli("audit", "verify", good_log, "--public-key", tmp_path / "none.pub")
    assert out.returncode == 1
    assert "lfr audit verify:" in out.stderr
    assert "Traceback" not in out.stderr
    pub = tmp_path / "k.pub"
    SigningKey.generate().public_key().save(pub)
    out = lfr_cli("audit", "verify", tmp_path / "missing.log", "--public-key", pub)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr


def test_the_exported_public_key_reads_back(good_log: Path, key: SigningKey) -> None:
    exported = PublicKey.load(f"{good_log}.pub")
    assert exported == key.public_key()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(lfr.audit.report, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
