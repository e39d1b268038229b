"""``lfr alerts``: list, show, review and purge an alert store from the shell."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.audit import AuditLog, SigningKey, read_log, verify


def lfr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def random_crop(seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)


@dataclass
class Site:
    """A store (two live alerts, one expired), its key file and an audit log."""

    store: Path
    key_file: Path
    signing_key: Path
    audit: Path
    live: list[lfr.Alert]
    expired: lfr.Alert

    def opts(self) -> list[str]:
        return ["--store", str(self.store), "--key-file", str(self.key_file)]

    def audit_opts(self) -> list[str]:
        return ["--audit", str(self.audit), "--signing-key", str(self.signing_key)]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    key = lfr.Key.generate()
    key_file = key.save(tmp_path / "alerts.key")
    store_path = tmp_path / "alerts.db"
    now = datetime.now(timezone.utc)
    # First, by a store whose clock is 25 h behind: expired (24 h) by now but not
    # yet purged when the CLI opens the store. (Made first: the store's clock
    # high-water mark would not let a later write go back in time.)
    with lfr.AlertStore(store_path, key, clock=lambda: now - timedelta(hours=25)) as s:
        expired = s._add(
            subject_id="S-old",
            score=0.61,
            box=(0, 0, 40, 48),
            crop=random_crop(9),
            camera_id="cam-2",
            deployment_id="dep-1",
        )
    with lfr.AlertStore(store_path, key) as s:
        live = [
            s._add(
                subject_id=f"S-{i}",
                score=0.7 + i / 100,
                box=(10, 20, 50, 68),
                crop=random_crop(i),
                camera_id="cam-1",
                deployment_id="dep-1",
                time=now - timedelta(minutes=10 - i),
                image_format="png" if i == 0 else "jpeg",
            )
            for i in range(2)
        ]
    key.destroy()
    signing = SigningKey.generate()
    signing_key = signing.save(tmp_path / "audit.key")
    audit = tmp_path / "audit.jsonl"
    with AuditLog.create(audit, signing) as log:
        for alert in [expired, *live]:
            log.append(
                "alert_raised",
                alert_id=alert.alert_id,
                subject_id=alert.subject_id,
                score=alert.score,
                deployment_id=alert.deployment_id,
                camera_id=alert.camera_id,
                time=alert.time,
                expires=alert.expires,
            )
    return Site(store_path, key_file, signing_key, audit, live, expired)


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(image, np.uint8)


def audit_events(site: Site) -> list[tuple[str, dict[str, object]]]:
    records, problems = read_log(
        site.audit, SigningKey.load(site.signing_key).public_key()
    )
    assert problems == []
    return [(r.event, dict(r.fields)) for r in records]


# -- list ----------------------------------------------------------------------------


def test_list_plain_and_json(site: Site) -> None:
    out = lfr_cli("alerts", "list", *site.opts())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line, alert in zip(lines, site.live):
        assert alert.alert_id in line
        assert alert.subject_id in line
        assert "cam-1" in line
    assert site.expired.alert_id not in out.stdout

    out = lfr_cli("alerts", "list", *site.opts(), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["alert_id"] for r in rows] == [a.alert_id for a in site.live]
    assert rows == [a.to_json() for a in site.live]
    for row in rows:
        assert {"alert_id", "subject_id", "score", "time", "camera_id"} <= row.keys()


def test_an_empty_store_says_so(site: Site, tmp_path: Path) -> None:
    key = lfr.Key.generate()
    key_file = key.save(tmp_path / "empty.key")
    lfr.AlertStore(tmp_path / "empty.db", key).close()
    for extra in ((), ("--json",)):
        out = lfr_cli(
            "alerts", "list", "--store", str(tmp_path / "empty.db"),
            "--key-file", str(key_file), *extra,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout == ""  # one line per alert, and there is none
        assert "no live alerts in" in out.stderr
    # Control: a store with alerts does not say so.
    out = lfr_cli("alerts", "list", *site.opts())
    assert "no live alerts" not in out.stderr


def test_passphrase_is_refused_clearly(site: Site) -> None:
    out = lfr_cli("alerts", "list", "--store", str(site.store), "--passphrase")
    assert out.returncode == 1
    assert "--key-file" in out.stderr
    assert "passphrase" in out.stderr
    # Not offered, then refused: --help does not show it.
    assert "--passphrase" not in lfr_cli("alerts", "list", "--help").stdout


def test_missing_store_and_wrong_key(site: Site, tmp_path: Path) -> None:
    out = lfr_cli(
        "alerts", "list", "--store", str(tmp_path / "nope.db"), "--key-file",
        str(site.key_file),
    )  # fmt: skip
    assert out.returncode == 1
    assert "no alert store" in out.stderr
    assert not (tmp_path / "nope.db").exists()

    other = lfr.Key.generate().save(tmp_path / "other.key")
    out = lfr_cli(
        "alerts", "list", "--store", str(site.store), "--key-file", str(other)
    )
    assert out.returncode == 1
    assert out.stderr.startswith("lfr alerts list: ")
    assert "Traceback" not in out.stderr


def test_audit_needs_both_options(site: Site) -> None:
    out = lfr_cli("alerts", "list", *site.opts(), "--audit", str(site.audit))
    assert out.returncode == 1
    assert "--signing-key" in out.stderr


def test_list_without_a_log_destroys_nothing(site: Site) -> None:
    before = site.audit.read_bytes()
    out = lfr_cli("alerts", "list", *site.opts())
    assert out.returncode == 0, out.stderr
    assert site.expired.alert_id not in out.stdout
    assert "does not purge" in out.stderr  # says so, once
    assert site.audit.read_bytes() == before
    conn = sqlite3.connect(site.store)
    try:
        rows = conn.execute(
            "SELECT count(*) FROM alerts WHERE wrapped_key IS NOT NULL"
        ).fetchone()
        tombs = conn.execute("SELECT count(*) FROM tombstones").fetchone()
    finally:
        conn.close()
    assert (rows[0], tombs[0]) == (3, 0)  # the expired alert is still there
    key = lfr.Key.from_file(site.key_file)
    try:
        with lfr.AlertStore(site.store, key) as store:
            assert not store.purging
    finally:
        key.destroy()


def test_list_with_the_log_purges_and_audits(site: Site) -> None:
    out = lfr_cli("alerts", "list", *site.opts(), *site.audit_opts())
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
    purged = [f for e, f in audit_events(site) if e == "alert_purged"]
    assert purged == [{"alert_id": site.expired.alert_id}]


@pytest.mark.parametrize(
    "action",
    [
        ["show", "ID", "--out", "x.png", "--by", "o-1"],
        ["review", "ID", "--reviewer", "o-1", "--decision", "confirmed"],
        ["hold", "ID", "--reason", "case 1", "--until", "1d", "--by", "o-1"],
        ["release", "ID", "--by", "o-1"],
        ["action", "ID", "--action", "engaged", "--by", "o-1"],
        ["purge"],
    ],
    ids=lambda a: a[0],
)
def test_changes_and_exports_need_the_log(
    site: Site, tmp_path: Path, action: list[str]
) -> None:
    before = (site.store.read_bytes(), site.audit.read_bytes())
    args = [a.replace("ID", site.live[0].alert_id) for a in action]
    args = [str(tmp_path / a) if a == "x.png" else a for a in args]
    out = lfr_cli("alerts", args[0], *args[1:], *site.opts())
    assert out.returncode == 1
    assert "--audit LOG --signing-key SK" in out.stderr
    assert (site.store.read_bytes(), site.audit.read_bytes()) == before
    assert not (tmp_path / "x.png").exists()


# -- show ----------------------------------------------------------------------------


def show(site: Site, alert_id: str, target: Path, *more: str) -> Any:
    return lfr_cli(
        "alerts", "show", alert_id, *site.opts(), *site.audit_opts(), "--out",
        str(target), "--by", "officer-9", *more,
    )  # fmt: skip


def test_show_writes_the_crop_as_stored_and_audits_it(
    site: Site, tmp_path: Path
) -> None:
    png, jpeg = site.live
    target = tmp_path / "crop.png"
    out = show(site, png.alert_id, target)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes().startswith(b"\x89PNG")
    image = read_image(target)
    assert np.array_equal(image, random_crop(0))
    assert target.read_bytes() not in out.stdout.encode()

    stored = tmp_path / "crop.jpg"
    out = show(site, jpeg.alert_id, stored)
    assert out.returncode == 0, out.stderr
    assert stored.read_bytes().startswith(b"\xff\xd8\xff")
    decoded = read_image(stored)
    assert decoded.shape == (48, 40, 3)
    exported = [f for e, f in audit_events(site) if e == "alert_exported"]
    assert exported == [
        {"alert_id": png.alert_id, "by": "officer-9"},
        {"alert_id": jpeg.alert_id, "by": "officer-9"},
    ]


def test_show_reencodes_to_another_extension(site: Site, tmp_path: Path) -> None:
    png = site.live[0]
    target = tmp_path / "crop.bmp"
    out = show(site, png.alert_id, target)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes().startswith(b"BM")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert np.array_equal(read_image(target), random_crop(0))


def test_show_refuses_to_overwrite_without_force(site: Site, tmp_path: Path) -> None:
    png = site.live[0]
    target = tmp_path / "crop.png"
    target.write_bytes(b"mine")
    out = show(site, png.alert_id, target)
    assert out.returncode == 1
    assert "exists" in out.stderr
    assert target.read_bytes() == b"mine"
    assert not [e for e, _ in audit_events(site) if e == "alert_exported"]
    out = show(site, png.alert_id, target, "--force")
    assert out.returncode == 0, out.stderr
    assert target.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_show_expired_and_unknown(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "crop.png"
    expired = site.expired.alert_id
    out = show(site, expired, target)
    assert out.returncode == 1
    assert f"alert {expired} expired" in out.stderr
    assert "Traceback" not in out.stderr
    assert not target.exists()

    unknown = "0b5d4a8e-3f7e-4b59-9d59-6d0e4a1b2c3d"
    out = show(site, unknown, target)
    assert out.returncode == 1
    assert f"no alert {unknown}" in out.stderr
    assert not target.exists()
    assert not [e for e, _ in audit_events(site) if e == "alert_exported"]


# -- review, hold, release, action ---------------------------------------------------


def test_review_is_recorded_in_the_store_and_the_log(site: Site) -> None:
    alert = site.live[0]
    for reviewer, decision in (
        ("officer-1", "confirmed"),
        ("officer-2", "false_alert"),
    ):
        out = lfr_cli(
            "alerts", "review", alert.alert_id, *site.opts(), *site.audit_opts(),
            "--reviewer", reviewer, "--decision", decision, "--note", "seen on CCTV",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert decision in out.stdout

    key = lfr.Key.from_file(site.key_file)
    with lfr.AlertStore(site.store, key) as store:
        reviews = store.get(alert.alert_id).reviews
    key.destroy()
    assert [(r.reviewer, r.decision, r.note) for r in reviews] == [
        ("officer-1", "confirmed", "seen on CCTV"),
        ("officer-2", "false_alert", "seen on CCTV"),
    ]

    events = audit_events(site)
    reviewed = [f for e, f in events if e == "alert_reviewed"]
    assert reviewed == [
        {"alert_id": alert.alert_id, "reviewer": "officer-1", "decision": "confirmed"},
        {
            "alert_id": alert.alert_id,
            "reviewer": "officer-2",
            "decision": "false_alert",
        },
    ]
    report = verify(site.audit, SigningKey.load(site.signing_key).public_key())
    assert not [v for v in report.violations if v.kind == "integrity"]
    assert not [v for v in report.violations if alert.alert_id in v.message]


def test_review_bad_input(site: Site) -> None:
    alert = site.live[1]
    out = lfr_cli(
        "alerts", "review", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--reviewer", "officer-1", "--decision", "maybe",
    )  # fmt: skip
    assert out.returncode == 2
    assert "invalid choice" in out.stderr

    out = lfr_cli(
        "alerts", "review", site.expired.alert_id, *site.opts(), *site.audit_opts(),
        "--reviewer", "officer-1", "--decision", "confirmed",
    )  # fmt: skip
    assert out.returncode == 1
    assert "expired" in out.stderr


def test_review_with_a_wrong_signing_key_changes_nothing(
    site: Site, tmp_path: Path
) -> None:
    alert = site.live[0]
    other = SigningKey.generate().save(tmp_path / "other.key")
    before = site.audit.read_bytes()
    out = lfr_cli(
        "alerts", "review", alert.alert_id, *site.opts(), "--audit", str(site.audit),
        "--signing-key", str(other), "--reviewer", "officer-1", "--decision",
        "confirmed",
    )  # fmt: skip
    assert out.returncode == 1
    assert "audit log" in out.stderr
    assert site.audit.read_bytes() == before
    key = lfr.Key.from_file(site.key_file)
    with lfr.AlertStore(site.store, key) as store:
        assert store.get(alert.alert_id).reviews == ()
    key.destroy()


def test_hold_release_and_action_are_audited(site: Site) -> None:
    alert = site.live[0]
    until = (datetime.now(timezone.utc) + timedelta(days=7)).replace(microsecond=0)
    out = lfr_cli(
        "alerts", "hold", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--reason", "case 42", "--until", until.isoformat(), "--by", "officer-3",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "held until" in out.stdout
    out = lfr_cli(
        "alerts", "action", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--action", "engaged", "--by", "officer-4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = lfr_cli(
        "alerts", "release", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--by", "officer-3",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = lfr_cli(
        "alerts", "release", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--by", "officer-3",
    )  # fmt: skip
    assert out.returncode == 1
    assert "not on hold" in out.stderr
    events = [
        (e, f)
        for e, f in audit_events(site)
        if e not in ("alert_raised", "log_created")
    ]
    assert events == [
        (
            "alert_held",
            {
                "alert_id": alert.alert_id,
                "reason": "case 42",
                "until": until.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "by": "officer-3",
            },
        ),
        (
            "alert_actioned",
            {"alert_id": alert.alert_id, "action": "engaged", "by": "officer-4"},
        ),
        ("alert_released", {"alert_id": alert.alert_id, "by": "officer-3"}),
    ]
    out = lfr_cli(
        "alerts", "action", alert.alert_id, *site.opts(), *site.audit_opts(),
        "--action", "arrested", "--by", "officer-4",
    )  # fmt: skip
    assert out.returncode == 2


# -- purge ---------------------------------------------------------------------------


def test_purge_records_each_purged_alert(site: Site) -> None:
    out = lfr_cli("alerts", "purge", *site.opts(), *site.audit_opts())
    assert out.returncode == 0, out.stderr
    assert "purged 1 expired alert(s); 2 live" in out.stdout
    purged = [f for e, f in audit_events(site) if e == "alert_purged"]
    assert purged == [{"alert_id": site.expired.alert_id}]
    report = verify(site.audit, SigningKey.load(site.signing_key).public_key())
    assert not [v for v in report.violations if v.kind == "integrity"]

    out = lfr_cli("alerts", "purge", *site.opts(), *site.audit_opts())
    assert out.returncode == 0, out.stderr
    assert "purged 0 expired alert(s); 2 live" in out.stdout
    assert len([e for e, _ in audit_events(site) if e == "alert_purged"]) == 1


def short_site(tmp_path: Path, ttl: float) -> tuple[Site, lfr.Alert, lfr.Alert]:
    """A store whose alerts live ``ttl`` seconds, two alerts, audited."""
    key = lfr.Key.generate()
    key_file = key.save(tmp_path / "alerts.key")
    store_path = tmp_path / "alerts.db"
    signing = SigningKey.generate()
    signing_key = signing.save(tmp_path / "audit.key")
    audit = tmp_path / "audit.jsonl"
    policy = lfr.RetentionPolicy(
        alert_ttl=timedelta(seconds=ttl),
        purge_interval=timedelta(seconds=60),
        two_person_review=False,  # this site checks retention only
    )
    with lfr.Records.open(store_path, key, audit, signing, policy=policy) as records:
        log = records.log
        log.append(
            "deployment_started", deployment_id="dep-1", camera_ids=["cam-1"],
            location="here", purpose="test", authorised_by="Supt X",
            watchlist_sha256="0" * 64, watchlist_size=1, model_id="m",
            threshold=0.9, policy=policy, lfr_version=lfr.__version__,
        )  # fmt: skip
        alerts = [
            records.raise_alert(
                subject_id=f"S-{i}",
                score=0.8,
                box=(0, 0, 40, 48),
                crop=random_crop(i),
                camera_id="cam-1",
                deployment_id="dep-1",
            )
            for i in range(2)
        ]
    key.destroy()
    site = Site(store_path, key_file, signing_key, audit, alerts, alerts[0])
    return site, alerts[0], alerts[1]


def test_an_audited_purge_and_a_cli_hold_leave_no_violation(tmp_path: Path) -> None:
    site, held, plain = short_site(tmp_path, ttl=3)
    out = lfr_cli(
        "alerts", "hold", held.alert_id, *site.opts(), *site.audit_opts(),
        "--reason", "case 7", "--until", "1d", "--by", "officer-1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = lfr_cli(
        "alerts", "review", plain.alert_id, *site.opts(), *site.audit_opts(),
        "--reviewer", "officer-2", "--decision", "false_alert",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    deadline = plain.expires + timedelta(seconds=20)
    while datetime.now(timezone.utc) <= plain.expires:
        assert datetime.now(timezone.utc) < deadline
        time.sleep(0.1)
    # After expiry: list without the log destroys nothing ...
    out = lfr_cli("alerts", "list", *site.opts())
    assert out.returncode == 0, out.stderr
    assert held.alert_id in out.stdout
    assert plain.alert_id not in out.stdout
    assert not [e for e, _ in audit_events(site) if e == "alert_purged"]
    # ... and an audited purge before the deadline leaves no violation.
    out = lfr_cli("alerts", "purge", *site.opts(), *site.audit_opts())
    assert out.returncode == 0, out.stderr
    assert "purged 1 expired alert(s); 1 live" in out.stdout
    assert [f for e, f in audit_events(site) if e == "alert_purged"] == [
        {"alert_id": plain.alert_id}
    ]
    public = SigningKey.load(site.signing_key).public_key()
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    report = verify(site.audit, public, now=later)
    assert not report.violations, report.violations
    # Negative control: without the hold record, the kept alert is a violation.
    lines = site.audit.read_bytes().splitlines(keepends=True)
    forged = tmp_path / "forged.jsonl"
    with AuditLog.create(forged, SigningKey.load(site.signing_key)) as log:
        for record in read_log(site.audit, public)[0][1:]:
            if record.event != "alert_held":
                log.append(record.event, **dict(record.fields))
    assert len(lines) > 3
    report = verify(forged, public, now=later)
    assert [v.kind for v in report.violations if held.alert_id in v.message] == [
        "alert_not_purged",
        "alert_not_reviewed",
    ]


def test_purge_after_a_short_ttl_reconciles_an_unaudited_store(tmp_path: Path) -> None:
    """A store changed without its log: the CLI first records what it lacks."""
    key = lfr.Key.generate()
    key_file = key.save(tmp_path / "alerts.key")
    store_path = tmp_path / "alerts.db"
    policy = lfr.RetentionPolicy(alert_ttl=timedelta(seconds=2))
    with lfr.AlertStore(store_path, key, policy=policy) as store:
        alert = store._add(
            subject_id="S-1",
            score=0.8,
            box=(0, 0, 40, 48),
            crop=random_crop(1),
            camera_id="cam-1",
            deployment_id="dep-1",
        )
    key.destroy()
    signing = SigningKey.generate()
    signing_key = signing.save(tmp_path / "audit.key")
    audit = tmp_path / "audit.jsonl"
    AuditLog.create(audit, signing).close()
    deadline = alert.expires + timedelta(seconds=10)
    while datetime.now(timezone.utc) < alert.expires:
        assert datetime.now(timezone.utc) < deadline
        time.sleep(0.1)
    out = lfr_cli(
        "alerts", "purge", "--store", str(store_path), "--key-file", str(key_file),
        "--audit", str(audit), "--signing-key", str(signing_key),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "purged 1 expired alert(s); 0 live" in out.stdout
    assert "alert_raised" in out.stderr  # the note says what was reconciled
    records, problems = read_log(audit, signing.public_key())
    assert problems == []
    assert [(r.event, r.fields.get("alert_id")) for r in records[1:]] == [
        ("anomaly", None),
        ("alert_raised", alert.alert_id),
        ("alert_purged", alert.alert_id),
    ]
    assert records[1].fields["kind"] == "trail_reconciled"


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime not installed")
def test_a_clock_set_back_with_faketime_reads_no_expired_alert(tmp_path: Path) -> None:
    """``lfr alerts`` under a clock 10 days back (libfaketime, the real process)."""
    site, old, _ = short_site(tmp_path, ttl=2)
    deadline = old.expires + timedelta(seconds=20)
    while datetime.now(timezone.utc) <= old.expires:
        assert datetime.now(timezone.utc) < deadline
        time.sleep(0.1)
    key = lfr.Key.from_file(site.key_file)
    signing = SigningKey.load(site.signing_key)
    with lfr.Records.open(site.store, key, site.audit, signing) as records:
        later = records.raise_alert(
            subject_id="S-9",
            score=0.8,
            box=(0, 0, 40, 48),
            crop=random_crop(9),
            camera_id="cam-1",
            deployment_id="dep-1",
        )  # fmt: skip  (a write after the expiry: the store's high-water mark)
    key.destroy()

    def back(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["faketime", "-f", "-10d", sys.executable, "-m", "lfr", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = back("alerts", "list", *site.opts())
    assert out.returncode == 0, out.stderr
    assert later.alert_id in out.stdout
    assert old.alert_id not in out.stdout  # expired, whatever the clock says
    out = back("alerts", "list", *site.opts(), *site.audit_opts())
    assert out.returncode == 0, out.stderr
    kinds = [f["kind"] for e, f in audit_events(site) if e == "anomaly"]
    assert "clock_went_back" in kinds


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime not installed")
def test_faketime_really_sets_the_clock_back(tmp_path: Path) -> None:
    """Negative control: with no write after the expiry, the set-back clock reads
    the expired alert (so the mark, not faketime failing, is what refuses it)."""
    site, old, _ = short_site(tmp_path, ttl=2)
    deadline = old.expires + timedelta(seconds=20)
    while datetime.now(timezone.utc) <= old.expires:
        assert datetime.now(timezone.utc) < deadline
        time.sleep(0.1)
    out = subprocess.run(
        ["faketime", "-f", "-10d", sys.executable, "-m", "lfr", "alerts", "list",
         *site.opts()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert old.alert_id in out.stdout


def test_a_damaged_alert_is_reported_and_does_not_hide_the_others(site: Site) -> None:
    first, second = site.live
    conn = sqlite3.connect(site.store)
    try:
        (wrapped,) = conn.execute(
            "SELECT wrapped_key FROM alerts WHERE alert_id = ?", (first.alert_id,)
        ).fetchone()
        conn.execute(
            "UPDATE alerts SET wrapped_key = ? WHERE alert_id = ?",
            (wrapped, second.alert_id),
        )
        conn.commit()
    finally:
        conn.close()
    out = lfr_cli("alerts", "list", *site.opts())
    assert out.returncode == 1
    assert first.alert_id in out.stdout
    assert second.alert_id not in out.stdout
    assert f"alert {second.alert_id} does not authenticate" in out.stderr
    assert second.subject_id not in out.stderr  # no identity of a damaged alert
