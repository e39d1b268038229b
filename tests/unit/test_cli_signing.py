"""``lfr keys create --signing``: an audit-log signing key and its public key."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from lfr.audit import AuditLog, PublicKey, SigningKey, read_log
from lfr.keys import Key


def lfr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    out = lfr_cli("keys", "create", "--signing", str(path))
    assert out.returncode == 0, out.stderr
    pub = tmp_path / "audit.key.pub"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    key = SigningKey.load(path)
    assert PublicKey.load(pub) == key.public_key()
    assert key.key_id in out.stdout
    assert path.read_text() not in out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.key", "audit.key.pub"]

    log_path = tmp_path / "audit.jsonl"
    with AuditLog.create(log_path, key) as log:
        log.append("alert_purged", alert_id="a1")
    records, problems = read_log(log_path, PublicKey.load(pub))
    assert problems == []
    assert len(records) == 2


def test_create_signing_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    assert lfr_cli("keys", "create", "--signing", str(path)).returncode == 0
    first = SigningKey.load(path).key_id
    out = lfr_cli("keys", "create", "--signing", str(path))
    assert out.returncode == 1
    assert "exists" in out.stderr
    assert SigningKey.load(path).key_id == first

    out = lfr_cli("keys", "create", "--signing", "--force", str(path))
    assert out.returncode == 0, out.stderr
    second = SigningKey.load(path)
    assert second.key_id != first
    assert PublicKey.load(tmp_path / "audit.key.pub") == second.public_key()


def test_existing_public_key_file_blocks_creation(tmp_path: Path) -> None:
    (tmp_path / "audit.key.pub").write_text("someone else's\n")
    out = lfr_cli("keys", "create", "--signing", str(tmp_path / "audit.key"))
    assert out.returncode == 1
    assert "audit.key.pub exists" in out.stderr
    assert not (tmp_path / "audit.key").exists()


def test_plain_key_create_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    out = lfr_cli("keys", "create", str(path))
    assert out.returncode == 0, out.stderr
    assert Key.from_file(path).key_id in out.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["site.key"]


def test_help_mentions_signing() -> None:
    out = lfr_cli("keys", "create", "--help")
    assert out.returncode == 0
    assert "--signing" in out.stdout
