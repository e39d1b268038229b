"""Checkpoints: records cut from the end, an older copy put back, another log's or a
forged checkpoint are found; an untouched log matches its checkpoints."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lfr.audit import (
    AuditLog,
    Checkpoint,
    SigningKey,
    check_against,
    load_checkpoints,
    make_checkpoint,
    verify,
)
from lfr.audit.checks import VIOLATION_KINDS
from lfr.audit.log import canonical
from lfr.errors import AuditError


def new_log(path: Path, key: SigningKey, n: int) -> AuditLog:
    log = AuditLog.create(path, key)
    append(log, n)
    return log


def append(log: AuditLog, n: int) -> None:
    for _ in range(n):
        log.append("alert_purged", alert_id=f"a{log.last_seq + 1}")


def cut(path: Path, k: int) -> None:
    """Removes the last ``k`` records, at a line boundary."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-k]))


def mismatches(path: Path, key: SigningKey, *cps: Checkpoint) -> list[str]:
    report = verify(path, key.public_key(), checkpoints=cps)
    kinds = [v.kind for v in report.violations]
    assert report.ok == (not kinds)
    assert all(k == "checkpoint_mismatch" for k in kinds), report.violations
    return [v.message for v in report.violations]


def test_the_kind_is_known() -> None:
    assert VIOLATION_KINDS[-2:] == ("checkpoint_mismatch", "looser_policy")


def test_an_untouched_log_matches_its_checkpoints(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "audit.log"
    cps = []
    with new_log(path, key, 2) as log:
        for _ in range(3):
            cps.append(make_checkpoint(log))
            append(log, 2)
        cps.append(make_checkpoint(log))
    assert [c.records for c in cps] == [3, 5, 7, 9]
    report = verify(path, key.public_key(), checkpoints=cps)
    assert report.ok, report.violations
    assert any("matches 4 of 4 checkpoint(s)" in n for n in report.notices)
    assert report.last_record_sha256 == cps[-1].head
    assert check_against(path, key.public_key(), cps) == []


@pytest.mark.parametrize("k", [1, 3, 5])
def test_records_cut_from_the_end_are_found(tmp_path: Path, k: int) -> None:
    key = SigningKey.generate()
    path = tmp_path / "audit.log"
    with new_log(path, key, 9) as log:
        cp = make_checkpoint(log)
    assert cp.records == 10
    assert mismatches(path, key, cp) == []  # negative control: untouched
    cut(path, k)
    assert verify(path, key.public_key()).ok  # the chain alone cannot tell
    (message,) = mismatches(path, key, cp)
    assert f"holds {10 - k} records" in message
    assert f"{k} record(s) were cut" in message
    (problem,) = check_against(path, key.public_key(), [cp])
    assert problem.kind == "truncated"


def test_an_older_copy_put_back_is_found(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "audit.log"
    copy = tmp_path / "copy.log"
    with new_log(path, key, 3) as log:
        early = make_checkpoint(log)
        shutil.copyfile(path, copy)
        append(log, 4)
        late = make_checkpoint(log)
    assert mismatches(path, key, early, late) == []  # negative control
    shutil.copyfile(copy, path)  # the older copy, put back
    assert verify(path, key.public_key()).ok
    (message,) = mismatches(path, key, early, late)  # early still matches
    assert "holds 4 records" in message
    assert "an older copy" in message
    # The copy continued past the checkpoint's length: another version.
    with AuditLog.open(path, key) as log:
        append(log, 6)
    assert verify(path, key.public_key()).ok
    problems = check_against(path, key.public_key(), [early, late])
    assert [(p.kind, p.record, p.line) for p in problems] == [
        ("diverged", late.records - 1, late.records)
    ]
    (message,) = mismatches(path, key, early, late)
    assert "another version" in message


def test_another_logs_checkpoint_is_found(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with (
        new_log(tmp_path / "a.log", key, 2) as a,
        new_log(tmp_path / "b.log", key, 2) as b,
    ):
        cp_a, cp_b = make_checkpoint(a), make_checkpoint(b)
    assert cp_a.log_id != cp_b.log_id
    assert mismatches(tmp_path / "a.log", key, cp_a) == []  # negative control
    (message,) = mismatches(tmp_path / "a.log", key, cp_b)
    assert "another log" in message
    assert cp_b.log_id in message
    (problem,) = check_against(tmp_path / "a.log", key.public_key(), [cp_b])
    assert problem.kind == "another_log"


def forged(cp: Checkpoint, **changes: object) -> str:
    obj = json.loads(cp.to_json())
    obj.update(changes)
    return canonical(obj).decode()


def test_a_forged_checkpoint_is_refused(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "audit.log"
    with new_log(path, key, 5) as log:
        cp = make_checkpoint(log)
    genuine = Checkpoint.from_json(cp.to_json())
    assert genuine == cp  # negative control: the round trip
    genuine.verify_signature(key.public_key())
    assert mismatches(path, key, genuine) == []
    cut(path, 2)
    # A smaller count, hoping to cover the cut: well-formed, but not signed.
    lower = Checkpoint.from_json(forged(cp, records=4))
    with pytest.raises(AuditError, match="does not verify"):
        lower.verify_signature(key.public_key())
    (message,) = mismatches(path, key, lower)
    assert "changed after signing, or forged" in message
    (problem,) = check_against(path, key.public_key(), [lower])
    assert problem.kind == "bad_signature"
    # Another signature of the right length.
    bad = Checkpoint.from_json(forged(cp, signature=_flip(cp.signature)))
    with pytest.raises(AuditError, match="does not verify"):
        bad.verify_signature(key.public_key())
    # Signed properly, but with another key.
    other = SigningKey.generate()
    with new_log(tmp_path / "other.log", other, 1) as log2:
        foreign = make_checkpoint(log2)
    stolen = Checkpoint.from_json(forged(foreign, log_id=cp.log_id))
    with pytest.raises(AuditError, match="not the log's key"):
        stolen.verify_signature(key.public_key())


def _flip(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"records": 3}',
        "NaN",
    ],
)
def test_a_malformed_checkpoint_is_a_typed_error(text: str) -> None:
    with pytest.raises(AuditError, match="malformed audit checkpoint"):
        Checkpoint.from_json(text)


def test_malformed_fields_are_typed_errors(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with new_log(tmp_path / "audit.log", key, 1) as log:
        cp = make_checkpoint(log)
    Checkpoint.from_json(cp.to_json())  # negative control
    for changes in (
        {"records": 0},
        {"records": True},
        {"records": "3"},
        {"head": "AB" * 32},
        {"time": "yesterday"},
        {"signature": "!!"},
        {"format": "lfr-audit-checkpoint/9"},
        {"extra": 1},
    ):
        with pytest.raises(AuditError, match="malformed"):
            Checkpoint.from_json(forged(cp, **changes))
    spaced = json.dumps(json.loads(cp.to_json()), indent=1)
    with pytest.raises(AuditError, match="canonical"):
        Checkpoint.from_json(spaced)


def test_a_checkpoint_catches_up_with_other_writers(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "audit.log"
    with new_log(path, key, 1) as a, AuditLog.open(path, key) as b:
        append(b, 3)
        cp = make_checkpoint(a)  # a wrote nothing since b's records
    assert cp.records == 5
    assert mismatches(path, key, cp) == []


def test_load_checkpoints(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with new_log(tmp_path / "audit.log", key, 1) as log:
        cps = [make_checkpoint(log), make_checkpoint(log)]
    file = tmp_path / "cps.jsonl"
    lines = [c.to_json() for c in cps]
    file.write_text("\n".join(lines) + "\n\n" + lines[0][:30])  # torn last line
    assert load_checkpoints(file) == cps
    file.write_text(lines[0] + "\n{oops}\n" + lines[1] + "\n")
    with pytest.raises(AuditError, match="line 2"):
        load_checkpoints(file)


# -- the command line --------------------------------------------------------------


def lfr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_checkpoint_and_verify(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "audit.key")
    key.public_key().save(tmp_path / "kept.pub")
    path = tmp_path / "audit.log"
    new_log(path, key, 4).close()
    out = lfr_cli(
        "audit", "checkpoint", str(path), "--signing-key", str(tmp_path / "audit.key")
    )
    assert out.returncode == 0, out.stderr
    printed = Checkpoint.from_json(out.stdout.strip())
    assert printed.records == 5
    cp_file = tmp_path / "elsewhere" / "cp.json"
    cp_file.parent.mkdir()
    out = lfr_cli(
        "audit",
        "checkpoint",
        str(path),
        "--signing-key",
        str(tmp_path / "audit.key"),
        "--out",
        str(cp_file),
    )
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(cp_file.stat().st_mode) == 0o644
    (written,) = load_checkpoints(cp_file)
    assert (written.records, written.head) == (printed.records, printed.head)
    verify_args = (
        "audit",
        "verify",
        str(path),
        "--public-key",
        str(tmp_path / "kept.pub"),
    )
    out = lfr_cli(*verify_args, "--checkpoint", str(cp_file))
    assert out.returncode == 0, out.stdout + out.stderr  # negative control
    cut(path, 1)
    assert lfr_cli(*verify_args).returncode == 0  # the chain alone cannot tell
    out = lfr_cli(*verify_args, "--checkpoint", str(cp_file))
    assert out.returncode == 1
    assert "checkpoint_mismatch" in out.stdout
    assert "1 record(s) were cut from its end" in out.stdout
    # Several files; a malformed one is an error that names it.
    bad = tmp_path / "bad.json"
    bad.write_text("{nope}\n")
    out = lfr_cli(*verify_args, "--checkpoint", str(cp_file), "--checkpoint", str(bad))
    assert out.returncode == 1
    assert "malformed audit checkpoint" in out.stderr
    assert str(bad) in out.stderr


def test_cli_checkpoint_needs_the_logs_key(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    other.save(tmp_path / "other.key")
    new_log(tmp_path / "audit.log", key, 1).close()
    out = lfr_cli(
        "audit",
        "checkpoint",
        str(tmp_path / "audit.log"),
        "--signing-key",
        str(tmp_path / "other.key"),
    )
    assert out.returncode == 1
    assert out.stdout == ""


def test_cli_run_takes_checkpoints() -> None:
    out = lfr_cli("run", "--help")
    assert out.returncode == 0
    assert "--checkpoints" in out.stdout
