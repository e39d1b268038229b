"""The audit signed by a key inside a PKCS#11 token: a real SoftHSM2 token.

Each test makes its own token in a temporary directory (``SOFTHSM2_CONF``), so
nothing is installed or initialised by hand. The key is Ed25519 and never leaves
the token; what it signs verifies with the ordinary verifier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import lfr
from lfr.audit import AuditLog, PublicKey, read_log, verify
from lfr.audit.token import MODULE_ENV, PIN_ENV, TokenSigner
from lfr.pipeline import Deployment

MODULE = os.environ.get(MODULE_ENV) or "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321"
# CI sets LFR_REQUIRE_HSM=1 (.ci/run): there, a missing SoftHSM2 fails, not skips.
_REQUIRED = os.environ.get("LFR_REQUIRE_HSM") == "1"
if _REQUIRED:
    import pkcs11  # noqa: F401  (fails loudly when missing)
else:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
if shutil.which("softhsm2-util") is None or not os.path.exists(MODULE):
    if _REQUIRED:
        raise RuntimeError(f"LFR_REQUIRE_HSM=1 but SoftHSM2 is missing ({MODULE})")
    pytest.skip("SoftHSM2 is not installed (Debian: softhsm2)", allow_module_level=True)


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SoftHSM2 token labelled ``lfr-test``; the environment points at it.

    One per module: the PKCS#11 library reads its configuration once per process.
    Each test uses its own key label.
    """
    folder = tmp_path_factory.mktemp("softhsm")
    tokens = folder / "tokens"
    tokens.mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", MODULE_ENV, PIN_ENV)}
    os.environ.update({"SOFTHSM2_CONF": str(conf), MODULE_ENV: MODULE, PIN_ENV: PIN})
    try:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", "lfr-test",
             "--pin", PIN, "--so-pin", "98765"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield "lfr-test"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_a_log_signed_in_the_token_verifies(token: str, tmp_path: Path) -> None:
    with TokenSigner.generate(token, "log") as signer:
        assert isinstance(signer, lfr.protocols.Signer)
        public = signer.public_key()
        with AuditLog.create(tmp_path / "audit.log", signer) as log:
            log.append("alert_purged", alert_id="a-1")
    records, problems = read_log(tmp_path / "audit.log", public)
    assert problems == []
    assert [r.event for r in records] == ["log_created", "alert_purged"]
    # Opened again later (a new session): the same key, found by its label.
    with TokenSigner.open(token, "log") as again:
        assert again.public_key() == public
        with AuditLog.open(tmp_path / "audit.log", again) as log:
            log.append("alert_purged", alert_id="a-2")
    assert read_log(tmp_path / "audit.log", public)[1] == []
    # Negative control: another key does not verify it.
    other = lfr.SigningKey.generate().public_key()
    assert read_log(tmp_path / "audit.log", other)[1] != []


def test_token_errors_are_clear(token: str) -> None:
    with pytest.raises(lfr.AuditError, match="no single Ed25519 key pair"):
        TokenSigner.open(token, "missing")
    with pytest.raises(lfr.AuditError, match="cannot log in"):
        TokenSigner.open(token, "errors", pin="0000")
    with pytest.raises(lfr.AuditError, match="no single token"):
        TokenSigner.open("no-such-token", "errors")
    with TokenSigner.generate(token, "errors"):
        pass
    with pytest.raises(lfr.AuditError, match="already holds"):
        TokenSigner.generate(token, "errors")


def test_a_deployment_signed_through_the_token_verifies(
    token: str, tmp_path: Path, yunet_path: Path, embedder_path: Path
) -> None:
    embedder = lfr.FaceEmbedder()
    key = lfr.Key.generate()
    wl = lfr.Watchlist.create(tmp_path / "w.lfrw", key, embedder=embedder)
    wl.add(
        "R-1", np.random.default_rng(0).standard_normal((1, embedder.dim), np.float32)
    )
    store = lfr.AlertStore(tmp_path / "alerts.db", lfr.Key.generate())  # its own
    with TokenSigner.generate(token, "deployment") as signer:
        with Deployment(
            source=[np.zeros((120, 160, 3), np.uint8)] * 3,
            watchlist=wl,
            store=store,
            audit=tmp_path / "audit.log",
            signing_key=signer,
            embedder=embedder,
        ) as dep:
            assert dep.wait(60)
        public = signer.public_key()
    store.close()
    report = verify(tmp_path / "audit.log", public)
    assert report.ok, report.violations
    assert report.records >= 5


def test_the_cli_makes_the_key_in_the_token(token: str, tmp_path: Path) -> None:
    spec = f"pkcs11:token={token};object=cli"
    pub = tmp_path / "audit.pub"
    out = subprocess.run(
        [sys.executable, "-m", "lfr", "keys", "create", "--signing", spec,
         "--public-key", str(pub)],
        capture_output=True, text=True, timeout=60, check=False, env=os.environ,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "never leaves the token" in out.stdout
    assert not list(tmp_path.glob("*.key"))  # no key file anywhere
    with TokenSigner.open(token, "cli") as signer:
        assert signer.public_key() == PublicKey.load(pub)


def test_the_cli_signs_through_the_token(token: str, tmp_path: Path) -> None:
    """lfr alerts and lfr audit checkpoint with --signing-key 'pkcs11:...'."""
    spec = f"pkcs11:token={token};object=cli-sign"
    pub = tmp_path / "audit.pub"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lfr", *args],
            capture_output=True, text=True, timeout=120, check=False, env=os.environ,
        )  # fmt: skip

    made = cli("keys", "create", "--signing", spec, "--public-key", str(pub))
    assert made.returncode == 0, made.stderr
    key = lfr.Key.generate()
    key.save(tmp_path / "store.key")
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    with TokenSigner.open(token, "cli-sign") as signer:  # noqa: SIM117
        with lfr.Records.open(store, key, log, signer) as records:
            alert = records.raise_alert(
                subject_id="S-1", score=0.9, box=(1, 2, 30, 40),
                crop=np.zeros((40, 32, 3), np.uint8), camera_id="c",
                deployment_id="d",
            )  # fmt: skip
    opts = ["--store", str(store), "--key-file", str(tmp_path / "store.key"),
            "--audit", str(log), "--signing-key", spec]  # fmt: skip
    for reviewer in ("pc-1", "pc-2"):
        done = cli("alerts", "review", alert.alert_id, "--reviewer", reviewer,
                   "--decision", "confirmed", *opts)  # fmt: skip
        assert done.returncode == 0, done.stderr
    points = tmp_path / "checkpoints.jsonl"
    point = cli("audit", "checkpoint", str(log), "--signing-key", spec,
                "--out", str(points))  # fmt: skip
    assert point.returncode == 0, point.stderr
    written, problems = read_log(log, PublicKey.load(pub))
    assert problems == []
    assert [r.event for r in written].count("alert_reviewed") == 2
    checked = cli("audit", "verify", str(log), "--public-key", str(pub),
                  "--checkpoint", str(points), "--store", str(store))  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The control: another key's public key does not verify the log.
    other = tmp_path / "other.pub"
    lfr.SigningKey.generate().public_key().save(other)
    wrong = cli("audit", "verify", str(log), "--public-key", str(other))
    assert wrong.returncode == 1
