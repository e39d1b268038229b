"""SigningKey files parsed and written in secure memory; destroy() (issue 15)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr.audit import SigningKey
from lfr.errors import KeyFileError


def pem(key: object, encryption: object = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_a_file_written_by_the_old_code_loads_and_saves_the_same(
    tmp_path: Path,
) -> None:
    original = Ed25519PrivateKey.generate()
    old = pem(original)  # what SigningKey.save wrote before
    key = SigningKey.load(write(tmp_path / "old.key", old))
    assert key.public_key().verify(original.sign(b"r"), b"r")
    assert key.save(tmp_path / "new.key").read_bytes() == old


@pytest.mark.parametrize(
    "dress",
    [
        lambda t: t.replace(b"\n", b"\r\n"),  # copied through Windows
        lambda t: b"# the audit key of site 7\n" + t,  # a comment before BEGIN
        lambda t: b"Bag Attributes\n    localKeyID: 01\n" + t + b"trailing\n",
    ],
    ids=["crlf", "comment", "openssl-bag-text"],
)
def test_pem_text_openssl_accepts_around_the_key_loads(
    tmp_path: Path, dress: object
) -> None:
    original = Ed25519PrivateKey.generate()
    text = dress(pem(original))  # type: ignore[operator]
    # Control: cryptography (OpenSSL) itself reads this text.
    assert isinstance(serialization.load_pem_private_key(text, None), Ed25519PrivateKey)
    key = SigningKey.load(write(tmp_path / "k.key", text))
    assert key.public_key().verify(original.sign(b"r"), b"r")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_openssl_genpkey_files_load(tmp_path: Path) -> None:
    path = tmp_path / "o.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
        check=True,
        timeout=30,
    )
    path.chmod(0o600)
    key = SigningKey.load(path)
    assert key.save(tmp_path / "n.key").read_bytes() == path.read_bytes()


def test_other_keys_are_refused_with_the_reason(tmp_path: Path) -> None:
    x25519 = write(tmp_path / "x.key", pem(X25519PrivateKey.generate()))
    with pytest.raises(KeyFileError, match="not Ed25519"):
        SigningKey.load(x25519)
    locked = pem(
        Ed25519PrivateKey.generate(), serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(KeyFileError, match="encrypted"):
        SigningKey.load(write(tmp_path / "e.key", locked))
    big = write(tmp_path / "big.key", b"-" * (17 * 1024))
    with pytest.raises(KeyFileError, match="larger than a key file"):
        SigningKey.load(big)
    body = pem(Ed25519PrivateKey.generate()).splitlines()[1]
    damaged = b"-----BEGIN PRIVATE KEY-----\n" + body[:-2] + b"!!\n"
    damaged += b"-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError, match="not a PEM private key") as info:
        SigningKey.load(write(tmp_path / "d.key", damaged))
    assert body[:20].decode() not in str(info.value)


def test_destroy_wipes_and_refuses_use(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.sign(b"x")
    key.destroy()
    assert key.destroyed
    assert "destroyed" in repr(key)
    with pytest.raises(ValueError, match="destroyed"):
        key.sign(b"x")
    with pytest.raises(ValueError, match="destroyed"):
        key.save(tmp_path / "k")
    key.destroy()  # twice is fine
    assert not os.path.exists(tmp_path / "k")


def test_a_key_made_from_a_cryptography_object_signs_but_cannot_save(
    tmp_path: Path,
) -> None:
    key = SigningKey(Ed25519PrivateKey.generate())
    assert key.public_key().verify(key.sign(b"d"), b"d")
    with pytest.raises(ValueError, match="no seed"):
        key.save(tmp_path / "k")
