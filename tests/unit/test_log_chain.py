"""A chain of audit logs bound to its alert store, and verifying against both.

Each attack is carried out the way a hostile operator with shell access would:
deleting or cutting the log file, putting an older copy back, starting a fresh
log, deleting rows from the store's SQLite file. Each must be refused by the
next :class:`lfr.alerts.Records` or reported by :func:`lfr.audit.verify`, and an
untouched control must pass.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lfr
from lfr.alerts import Records
from lfr.alerts.survey import StoreSurvey, survey_store
from lfr.audit import AuditLog, SigningKey, load_checkpoints, make_checkpoint, verify
from lfr.audit.chain import line_hashes, read_chain, store_violations
from lfr.errors import AuditError
from tests.support.forge import resign

CHAIN_KINDS = {"chain_gap", "chain_broken", "store_unaccounted"}


class Site:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store = folder / "alerts.db"
        self.log = folder / "audit.log"
        self.key = lfr.Key.generate()
        self.signing = SigningKey.generate()

    def open(self, log: Path | None = None) -> Records:
        return Records.open(self.store, self.key, log or self.log, self.signing)

    def raise_alerts(self, n: int, log: Path | None = None) -> list[str]:
        with self.open(log) as records:
            return [
                records.raise_alert(
                    subject_id=f"S-{i}",
                    score=0.9,
                    box=(1, 2, 30, 40),
                    crop=np.full((40, 32, 3), i, np.uint8),
                    camera_id="cam-1",
                    deployment_id="dep-1",
                ).alert_id
                for i in range(n)
            ]

    def verify(self, *logs: Path, store: bool = False) -> lfr.audit.AuditReport:
        *earlier, last = logs or (self.log,)
        return verify(
            last,
            self.signing.public_key(),
            earlier=earlier,
            store=self.store if store else None,
        )


def kinds(report: lfr.audit.AuditReport) -> set[str]:
    return {v.kind for v in report.violations}


def cut_last_lines(path: Path, k: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-k]))


def start_fields() -> dict[str, object]:
    return {
        "deployment_id": "dep-2",
        "camera_ids": ["cam-1"],
        "location": "Cardiff",
        "purpose": "wanted persons",
        "authorised_by": "Supt B",
        "watchlist_sha256": "11" * 32,
        "watchlist_size": 3,
        "model_id": "m",
        "threshold": 0.6,
        "policy": lfr.RetentionPolicy(),
        "lfr_version": lfr.__version__,
    }


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


# -- the store keeps the chain's head -------------------------------------------------


def test_the_store_records_its_logs_head(site: Site) -> None:
    assert site.raise_alerts(2)
    with lfr.AlertStore(site.store, site.key) as store:
        chain = store.chain
    with AuditLog.open(site.log, site.signing) as log:
        assert chain == log.head()
    assert chain is not None
    assert chain.records == len(line_hashes(site.log))


def test_the_honest_control_verifies_with_store(site: Site) -> None:
    site.raise_alerts(2)
    site.raise_alerts(1)
    report = site.verify(store=True)
    assert report.ok, report.violations
    assert report.store == str(site.store)
    assert any("2 alert(s)" not in n and "3 alert(s)" in n for n in report.notices)


# -- the log deleted, cut short, replaced ---------------------------------------------


def test_a_deleted_log_is_continued_and_verify_reports_the_gap(site: Site) -> None:
    site.raise_alerts(2)
    kept = site.folder / "audit-1.log"  # what the auditor was given before
    shutil.copy(site.log, kept)
    site.log.unlink()
    with site.open() as records:  # lfr run does this when the log is missing
        assert records.log.previous is not None
    alone = site.verify()
    assert "chain_gap" in kinds(alone)
    gap = next(v for v in alone.violations if v.kind == "chain_gap")
    assert "was not given" in gap.message
    # The whole chain, and the store, account for everything: the control.
    both = site.verify(kept, site.log, store=True)
    assert both.ok, both.violations
    assert both.logs == (str(kept), str(site.log))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_records_cut_from_the_log_are_refused_and_reported(site: Site, k: int) -> None:
    site.raise_alerts(6)
    before = site.log.read_bytes()
    cut_last_lines(site.log, k)
    cut = site.log.read_bytes()
    with pytest.raises(AuditError, match=r"cut from its end"):
        site.open()
    assert site.log.read_bytes() == cut  # refused before anything was written
    report = site.verify(store=True)
    assert "chain_gap" in kinds(report)
    site.log.write_bytes(before)  # the negative control: the whole log passes
    assert site.verify(store=True).ok


def test_an_older_copy_put_back_is_refused(site: Site) -> None:
    site.raise_alerts(1)
    older = site.log.read_bytes()
    site.raise_alerts(2)
    site.log.write_bytes(older)
    with pytest.raises(AuditError, match=r"older"):
        site.open()
    # Continued on its own (verifies alone), it diverges from what the store saw.
    with AuditLog.open(site.log, site.signing) as log:
        for _ in range(6):
            log.append("anomaly", kind="other", detail="padding")
    with pytest.raises(AuditError, match=r"another version"):
        site.open()
    report = site.verify(store=True)
    assert "chain_broken" in kinds(report)
    assert "store_unaccounted" in kinds(report)  # the 2 later alerts


def test_a_fresh_log_that_does_not_continue_the_chain_is_refused(site: Site) -> None:
    site.raise_alerts(1)
    other = site.folder / "fresh.log"
    AuditLog.create(other, site.signing).close()
    size = other.stat().st_size
    with pytest.raises(AuditError, match=r"starts a new chain"):
        site.open(other)
    assert other.stat().st_size == size
    with lfr.AlertStore(site.store, site.key) as store:
        assert store.chain is not None
        assert store.chain.log_id != AuditLog.open(other, site.signing).head().log_id


def test_a_log_of_another_chain_is_refused(site: Site, tmp_path: Path) -> None:
    site.raise_alerts(1)
    stranger = Site(tmp_path / "other")
    stranger.folder.mkdir()
    stranger.signing = site.signing
    stranger.raise_alerts(1)
    previous = AuditLog.open(stranger.log, site.signing).head()
    other = site.folder / "continues-another.log"
    AuditLog.create(other, site.signing, previous=previous).close()
    with pytest.raises(AuditError, match=r"continues log"):
        site.open(other)


# -- verifying a chain --------------------------------------------------------------


def chain_of_three(site: Site) -> list[Path]:
    logs = [site.folder / f"audit-{i}.log" for i in range(3)]
    for log in logs:
        site.raise_alerts(1, log)
    return logs


def test_a_chain_verifies_in_order(site: Site) -> None:
    logs = chain_of_three(site)
    report = site.verify(*logs, store=True)
    assert report.ok, report.violations
    assert report.records == sum(len(line_hashes(p)) for p in logs)


def test_a_log_missing_from_the_middle_is_a_gap(site: Site) -> None:
    logs = chain_of_three(site)
    report = site.verify(logs[0], logs[2])
    gaps = [v for v in report.violations if v.kind == "chain_gap"]
    assert gaps
    assert gaps[0].log == "audit-2.log"
    assert "missing between them" in gaps[0].message


def test_logs_out_of_order_are_reported(site: Site) -> None:
    logs = chain_of_three(site)
    report = site.verify(logs[1], logs[0], logs[2])
    assert {"chain_gap", "chain_broken"} & kinds(report)


def test_the_newest_log_withheld_is_a_gap_with_the_store(site: Site) -> None:
    logs = chain_of_three(site)
    report = site.verify(logs[0], logs[1], store=True)
    assert "chain_gap" in kinds(report)
    assert any("was not given" in v.message for v in report.violations)


def test_violations_in_a_chain_name_their_log(site: Site) -> None:
    logs = chain_of_three(site)
    with AuditLog.open(logs[1], site.signing) as log:
        log.append(
            "counters", deployment_id="d", camera_id="c", frames_processed=1,
            frames_dropped=0, faces_detected=1, faces_skipped=0, faces_wiped=5,
            alerts=0,
        )  # fmt: skip
    report = site.verify(*logs)
    bad = [v for v in report.violations if v.kind == "counters_inconsistent"]
    assert bad
    assert bad[0].log == "audit-1.log"
    assert bad[0].record is not None
    assert bad[0].record > len(line_hashes(logs[0]))


# -- the store against the logs -------------------------------------------------------


def test_an_alert_deleted_from_the_store_is_unaccounted(site: Site) -> None:
    ids = site.raise_alerts(2)
    assert site.verify(store=True).ok  # control
    with sqlite3.connect(site.store) as conn:
        conn.execute("DELETE FROM alerts WHERE alert_id = ?", (ids[0],))
    report = site.verify(store=True)
    bad = [v for v in report.violations if v.kind == "store_unaccounted"]
    assert len(bad) == 1
    assert ids[0] in bad[0].message
    assert "without an audited purge" in bad[0].message


def test_the_next_start_records_what_the_store_holds(site: Site) -> None:
    ids = site.raise_alerts(2)
    with sqlite3.connect(site.store) as conn:
        conn.execute("DELETE FROM alerts WHERE alert_id = ?", (ids[1],))
    with site.open() as records:
        started = records.audit_start(**start_fields())
    assert started.fields["store_alerts"] == 1
    assert started.fields["store_purged"] == 0
    report = site.verify()  # the log alone: no store file needed
    bad = [v for v in report.violations if v.kind == "store_unaccounted"]
    assert len(bad) == 1
    assert bad[0].record == started.seq
    assert "without an audited purge" in bad[0].message


def test_a_start_with_nothing_removed_verifies(site: Site) -> None:
    site.raise_alerts(2)
    with site.open() as records:
        records.audit_start(**start_fields())
    assert not CHAIN_KINDS & kinds(site.verify())


def test_another_stores_alerts_are_unaccounted(site: Site, tmp_path: Path) -> None:
    site.raise_alerts(1)
    other = Site(tmp_path / "b")
    other.folder.mkdir()
    other.raise_alerts(1)
    report = verify(site.log, site.signing.public_key(), store=other.store)
    assert {"chain_gap", "store_unaccounted"} <= kinds(report)


def test_the_survey_reads_without_writing(site: Site) -> None:
    ids = site.raise_alerts(2)
    before = {p.name: p.read_bytes() for p in site.folder.iterdir() if p.is_file()}
    survey = survey_store(site.store)
    assert survey.alerts == tuple(ids)
    assert not survey.key_checked
    checked = survey_store(site.store, site.key)
    assert checked.key_checked
    assert checked.unreadable == ()
    after = {p.name: p.read_bytes() for p in site.folder.iterdir() if p.is_file()}
    assert after == before
    with pytest.raises(lfr.errors.WrongKeyError):
        survey_store(site.store, lfr.Key.generate())


def test_a_swapped_data_key_is_reported_with_the_key(site: Site) -> None:
    a, b = site.raise_alerts(2)
    with sqlite3.connect(site.store) as conn:
        key_a = conn.execute(
            "SELECT wrapped_key FROM alerts WHERE alert_id = ?", (a,)
        ).fetchone()[0]
        conn.execute("UPDATE alerts SET wrapped_key = ? WHERE alert_id = ?", (key_a, b))
    assert site.verify(store=True).ok  # without the key it cannot be seen
    report = verify(
        site.log, site.signing.public_key(), store=site.store, store_key=site.key
    )
    assert any(b in v.message for v in report.violations)


# -- the CLI -------------------------------------------------------------------------


def lfr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_verifies_a_chain_with_its_store(site: Site) -> None:
    logs = chain_of_three(site)
    pub = site.folder / "auditor.pub"
    site.signing.public_key().save(pub)
    key_file = site.folder / "store.key"
    site.key.save(key_file)
    common = ["--public-key", str(pub), "--store", str(site.store)]
    ok = lfr_cli("audit", "verify", *map(str, logs), *common,
                 "--store-key-file", str(key_file))  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "logs (oldest first)" in ok.stdout
    assert "alert store" in ok.stdout
    gap = lfr_cli("audit", "verify", str(logs[-1]), *common)
    assert gap.returncode == 1
    assert "chain_gap" in gap.stdout
    assert "was not given" in gap.stdout
    bad = lfr_cli("audit", "verify", str(logs[-1]), "--public-key", str(pub),
                  "--store-key-file", str(key_file))  # fmt: skip
    assert bad.returncode != 0
    assert "--store" in bad.stderr


def resign_without(path: Path, key: SigningKey, event: str) -> None:
    """What a holder of the signing key can do: rewrite the log, re-signed."""
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    kept = [r for r in lines if r["event"] != event]
    for record in kept:
        if record["event"] == "counters":
            fields = record["fields"]
            record["fields"] = {
                **fields,
                "alerts": 0,
                "faces_wiped": fields["faces_wiped"] + 2,
            }
    resign(path, kept, key)


def test_a_log_rewritten_and_resigned_is_caught_by_its_store_and_checkpoints(
    site: Site,
) -> None:
    site.raise_alerts(2)
    with AuditLog.open(site.log, site.signing) as log:
        log.append(
            "counters", deployment_id="dep-1", camera_id="cam-1",
            frames_processed=10, frames_dropped=0, faces_detected=5,
            faces_skipped=0, faces_wiped=3, alerts=2,
        )  # fmt: skip
        checkpoint = make_checkpoint(log)
    points = site.folder / "off-site.jsonl"
    points.write_text(checkpoint.to_json() + "\n")
    # Every alert_raised removed, the counters fixed (alerts 0, wiped 5).
    resign_without(site.log, site.signing, "alert_raised")
    counters = [json.loads(x) for x in site.log.read_bytes().splitlines()]
    assert [r["fields"]["alerts"] for r in counters if r["event"] == "counters"] == [0]
    alone = site.verify()
    assert not {"alert_raised"} & {r["event"] for r in counters}
    assert alone.ok, alone.violations  # it verifies on its own: the attack
    with pytest.raises(AuditError):
        site.open()  # the store saw another log
    public = site.signing.public_key()
    by_store = verify(site.log, public, store=site.store)
    assert "store_unaccounted" in kinds(by_store)
    assert {"chain_gap", "chain_broken"} & kinds(by_store)  # a longer log was seen
    by_checkpoint = verify(site.log, public, checkpoints=load_checkpoints(points))
    assert "checkpoint_mismatch" in kinds(by_checkpoint)


# -- honest flows that must not be refused or flagged ---------------------------------


def test_a_process_still_writing_the_old_log_leaves_the_chain_alone(
    site: Site,
) -> None:
    """Rotation while a deployment writes the old log: no false refusal."""
    old = site.open()
    try:
        newer = site.folder / "audit-2.log"
        site.raise_alerts(1, newer)  # another process starts the next log
        old.raise_alert(
            subject_id="S", score=0.9, box=(1, 2, 30, 40),
            crop=np.zeros((40, 32, 3), np.uint8), camera_id="c", deployment_id="d",
        )  # fmt: skip
    finally:
        old.close()
    with lfr.AlertStore(site.store, site.key) as store:
        assert store.chain is not None
        assert store.chain.log_id == AuditLog.open(newer, site.signing).head().log_id
    site.open(newer).close()  # still the store's latest log
    report = site.verify(site.log, newer, store=True)
    assert not {"chain_gap", "chain_broken"} & kinds(report), report.violations
    assert any("after the point" in n for n in report.notices)


def test_a_start_after_another_process_died_mid_change_counts_true(
    site: Site,
) -> None:
    """B's start reconciles what A stored but never audited, then counts."""
    a = site.open()
    b = site.open()

    def killed(*_: object, **__: object) -> None:
        raise AuditError("simulated: killed between the store and the log")

    a._audit_raised = killed  # type: ignore[method-assign]
    with pytest.raises(AuditError):
        a.raise_alert(
            subject_id="S", score=0.9, box=(1, 2, 30, 40),
            crop=np.zeros((40, 32, 3), np.uint8), camera_id="c", deployment_id="dA",
        )  # fmt: skip
    a._owned = ()  # A dies: it never reconciles
    started = b.audit_start(**start_fields())
    b.close()
    assert started.fields["store_alerts"] == 1
    report = site.verify(store=True)
    assert not CHAIN_KINDS & kinds(report), report.violations


def test_close_always_closes(site: Site) -> None:
    records = site.open()
    records._dirty = True  # the next lock reconciles: make that fail

    def failing(*_: object) -> None:
        raise lfr.errors.KeyFileError("simulated key service failure")

    records._reconcile_locked = failing  # type: ignore[method-assign,assignment]
    records.close()
    assert records.closed
    assert records.log.closed


def test_both_files_restored_from_a_backup_need_a_checkpoint(site: Site) -> None:
    """Out of reach without checkpoints (docs/audit.md says so); caught with one."""
    site.raise_alerts(1)
    backup = site.folder / "backup"
    backup.mkdir()
    for name in ("alerts.db", "audit.log"):
        shutil.copy(site.folder / name, backup / name)
    site.raise_alerts(2)
    with AuditLog.open(site.log, site.signing) as log:
        points = site.folder / "off-site.jsonl"
        points.write_text(make_checkpoint(log).to_json() + "\n")
    for name in ("alerts.db", "audit.log"):
        (site.folder / name).unlink()
        shutil.copy(backup / name, site.folder / name)
    assert site.verify(store=True).ok  # the limit: a consistent older pair
    report = verify(
        site.log,
        site.signing.public_key(),
        store=site.store,
        checkpoints=load_checkpoints(points),
    )
    assert "checkpoint_mismatch" in kinds(report)


def test_a_purge_of_an_alert_no_log_raised_is_unaccounted(site: Site) -> None:
    with AuditLog.create(site.log, site.signing) as log:
        log.append("alert_purged", alert_id="ghost")
        head = log.head()
    survey = StoreSurvey(str(site.store), "store-1", (), ("ghost",), head)
    chain = read_chain([site.log], site.signing.public_key())
    found, _ = store_violations(chain, survey)
    assert [v.kind for v in found] == ["store_unaccounted"]
    assert "no log of the chain raised it" in found[0].message
    # The control: a chain that does not start at its first log may have raised it.
    later = site.folder / "later.log"
    with AuditLog.create(later, site.signing, previous=head) as log:
        log.append("alert_purged", alert_id="ghost")
        survey = StoreSurvey(str(site.store), "s", (), ("ghost",), log.head())
    found, _ = store_violations(read_chain([later], site.signing.public_key()), survey)
    assert found == []


def test_the_published_record_names_the_chain_and_store_by_file_name(
    site: Site,
) -> None:
    logs = chain_of_three(site)
    pub = site.folder / "auditor.pub"
    site.signing.public_key().save(pub)
    out = site.folder / "published"
    done = lfr_cli("audit", "report", *map(str, logs), "--public-key", str(pub),
                   "--store", str(site.store), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    page = (out / "deployment-record.md").read_text(encoding="utf-8")
    data = json.loads((out / "deployment-record.json").read_text(encoding="utf-8"))
    assert "`audit-0.log`, `audit-1.log`, `audit-2.log`" in page
    assert "alert store `alerts.db`" in page
    assert data["logs"] == ["audit-0.log", "audit-1.log", "audit-2.log"]
    assert data["store"] == "alerts.db"
    for text in (page, json.dumps(data)):
        assert str(site.folder) not in text
