"""lfr.ciphers: data keys owned by their cipher, and the import-time self-test.

The self-test is checked against a simulated key-referencing ``AESGCM`` (what
``cryptography`` built against OpenSSL < 3.2 does: keep the key object and read it at
each operation). Combined with the old discipline (build the cipher from a temporary
copy of the key, then wipe the copy) it must fail; with lfr's discipline it must pass
and encrypt correctly. Negative controls both ways: the real, copying ``AESGCM`` passes
under both disciplines, which is why the old code passed every test.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lfr
from lfr import ciphers, keys
from lfr.ciphers import DataCipher, check_ciphers, references_key
from lfr.errors import CipherSelfTestError, WrongKeyError
from lfr.keys import KEY_SIZE, Key, SecureKeyProvider, open_sealed, seal
from tests.support.cipher_fakes import REAL_AESGCM, ReferencingAESGCM, old_discipline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def referencing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "AESGCM", ReferencingAESGCM)
    monkeypatch.setattr(ciphers, "AESGCM", ReferencingAESGCM)


# -- the fake itself ---------------------------------------------------------------


def test_the_fake_references_its_key(referencing: None) -> None:
    assert references_key()


def test_the_installed_aesgcm_copies_its_key() -> None:
    # Informational on other builds; on this wheel it copies, which is why the old
    # discipline passed every test.
    assert not references_key()


# -- the self-test -----------------------------------------------------------------


def test_self_test_catches_a_referencing_cipher_with_an_early_wipe(
    referencing: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys, "_key_cipher", old_discipline)
    with pytest.raises(CipherSelfTestError, match="does not encrypt with its key"):
        check_ciphers()


def test_self_test_passes_a_referencing_cipher_with_lfrs_discipline(
    referencing: None,
) -> None:
    check_ciphers()
    with DataCipher.generate() as cipher:
        sealed = cipher.seal(b"alert record", b"aad")
        assert cipher.open(sealed, b"aad") == b"alert record"


def test_a_referencing_cipher_encrypts_with_the_right_key(referencing: None) -> None:
    material = bytearray(os.urandom(KEY_SIZE))
    cipher = DataCipher.from_key(material)
    reference = REAL_AESGCM(bytes(material))
    material[:] = bytes(KEY_SIZE)  # the caller wipes its copy at once
    with cipher:
        sealed = cipher.seal(b"alert record", b"aad")
    assert open_sealed(reference, sealed, b"aad") == b"alert record"


def test_the_real_cipher_passes_under_both_disciplines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_ciphers()
    monkeypatch.setattr(keys, "_key_cipher", old_discipline)
    check_ciphers()  # the copying wheel hides the old discipline's flaw


def test_the_self_test_fails_the_import_of_lfr() -> None:
    # A key-referencing AESGCM and the old discipline, in place before lfr.ciphers
    # is imported: `import lfr` itself must fail with the self-test's error.
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.support.cipher_fakes import install
install(old={{old}})
try:
    import lfr
except ImportError as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
print("imported")
"""
    results = {}
    for old in (True, False):
        done = subprocess.run(
            [sys.executable, "-c", code.format(old=old)],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "python")),
            check=False,
        )
        results[old] = (done.returncode, done.stdout + done.stderr)
    assert results[True][0] == 3, results[True][1]
    assert "CipherSelfTestError" in results[True][1]
    assert "does not encrypt with its key" in results[True][1]
    assert results[False] == (0, "imported\n"), results[False][1]  # negative control


# -- DataCipher ----------------------------------------------------------------------


def test_a_closed_cipher_refuses_use_and_its_buffer_is_gone() -> None:
    cipher = DataCipher.generate()
    buf = cipher._buf
    assert not buf.closed
    sealed = cipher.seal(b"x", b"a")
    cipher.close()
    assert cipher.closed
    assert buf.closed  # wiped and unmapped
    for use in (
        lambda: cipher.seal(b"x", b"a"),
        lambda: cipher.open(sealed, b"a"),
        lambda: cipher.wrap(Key.generate(), b"c"),
    ):
        with pytest.raises(ValueError, match="closed"):
            use()
    cipher.close()  # idempotent


def test_with_closes_the_cipher_also_on_error() -> None:
    with pytest.raises(RuntimeError), DataCipher.generate() as cipher:
        raise RuntimeError
    assert cipher.closed


def test_a_cipher_is_not_copied_or_shown() -> None:
    with DataCipher.generate() as cipher:
        assert repr(cipher) == "DataCipher(<hidden>)"
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(cipher)
    assert repr(cipher) == "DataCipher(closed)"


def test_unwrap_goes_straight_into_secure_memory_with_a_key() -> None:
    kek = Key.generate()
    assert isinstance(kek, SecureKeyProvider)
    with DataCipher.generate() as cipher:
        wrapped = cipher.wrap(kek, b"ctx")
        sealed = cipher.seal(b"record", b"aad")
    with DataCipher.unwrap(kek, wrapped, b"ctx") as again:
        assert again.open(sealed, b"aad") == b"record"
    with pytest.raises(WrongKeyError):
        DataCipher.unwrap(kek, wrapped, b"other")
    with pytest.raises(WrongKeyError):
        DataCipher.unwrap(Key.generate(), wrapped, b"ctx")


class Vault:
    """A site's KMS without unwrap_into: lfr falls back to unwrap()."""

    def __init__(self, result: type = bytearray) -> None:
        self._inner = Key.generate()
        self._result = result
        self.returned: list[Any] = []
        self.given: list[bytearray] = []

    @property
    def key_id(self) -> str:
        return "vault:" + self._inner.key_id

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        assert isinstance(data_key, bytearray)
        self.given.append(data_key)
        return self._inner.wrap(data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> Any:
        plain = self._result(self._inner.unwrap(wrapped, context))
        self.returned.append(plain)
        return plain


def test_a_provider_without_unwrap_into_falls_back_and_is_wiped() -> None:
    vault = Vault()
    assert not isinstance(vault, SecureKeyProvider)
    with DataCipher.generate() as cipher:
        wrapped = cipher.wrap(vault, b"ctx")
        sealed = cipher.seal(b"record", b"aad")
    assert vault.given[0] == bytearray(KEY_SIZE)  # lfr's copy was wiped after wrap
    with DataCipher.unwrap(vault, wrapped, b"ctx") as again:
        assert again.open(sealed, b"aad") == b"record"
    assert vault.returned[0] == bytearray(KEY_SIZE)  # the result was wiped


def test_a_bytes_result_still_works() -> None:
    vault = Vault(result=bytes)
    with DataCipher.generate() as cipher:
        wrapped = cipher.wrap(vault, b"ctx")
        sealed = cipher.seal(b"record", b"aad")
    with DataCipher.unwrap(vault, wrapped, b"ctx") as again:
        assert again.open(sealed, b"aad") == b"record"


def test_a_provider_returning_a_wrong_length_is_refused() -> None:
    class Short(Vault):
        def unwrap(self, wrapped: bytes, context: bytes) -> Any:
            return bytearray(16)

    with pytest.raises(ValueError, match="16 bytes"):
        DataCipher.unwrap(Short(), b"w" * 60, b"ctx")


def test_from_key_checks_the_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DataCipher.from_key(b"short")


def test_data_cipher_is_kept_for_integrators() -> None:
    material = bytearray(os.urandom(KEY_SIZE))
    cipher = keys.data_cipher(material)
    reference = REAL_AESGCM(bytes(material))
    material[:] = bytes(KEY_SIZE)
    assert isinstance(cipher, DataCipher)
    assert open_sealed(reference, seal(cipher, b"v", b"a"), b"a") == b"v"
    cipher.close()


def test_unwrap_into_checks_its_output() -> None:
    kek = Key.generate()
    with DataCipher.generate() as cipher:
        wrapped = cipher.wrap(kek, b"c")
    with pytest.raises(ValueError, match="writable buffer of 32 bytes"):
        kek.unwrap_into(wrapped, b"c", bytearray(16))
    with pytest.raises(ValueError, match="writable buffer of 32 bytes"):
        kek.unwrap_into(wrapped, b"c", bytes(32))
    with pytest.raises(WrongKeyError):
        kek.unwrap_into(wrapped[:-1], b"c", bytearray(32))


def test_a_key_keeps_its_cipher_view_until_destroyed() -> None:
    key = Key.generate()
    assert key._buf.views == 1  # the cipher's view
    key.destroy()
    assert key._buf.closed
    assert lfr.Key is Key
