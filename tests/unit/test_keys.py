"""lfr.Key, key files, passphrases and the KeyProvider protocol."""

from __future__ import annotations

import copy
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

import lfr
from lfr.errors import KeyFileError, WrongKeyError
from lfr.keys import (
    KEY_SIZE,
    Key,
    KeyProvider,
    Passphrase,
    ScryptParams,
    data_cipher,
    new_data_key,
    open_sealed,
    open_sealed_into,
    seal,
)

FAST = {"n": 2**10, "r": 8, "p": 1}


def fast_params() -> ScryptParams:
    return ScryptParams.fresh(**FAST)


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = Key.generate()
    path = key.save(tmp_path / "site.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Key.from_file(path)
    assert again.key_id == key.key_id
    wrapped = key.wrap(b"d" * KEY_SIZE, b"ctx")
    assert again.unwrap(wrapped, b"ctx") == bytearray(b"d" * KEY_SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["site.key"]  # no temp left


def test_keys_differ_and_wrong_keys_say_so() -> None:
    a, b = Key.generate(), Key.generate()
    assert a.key_id != b.key_id
    wrapped = a.wrap(new_data_key(), b"record 1")
    with pytest.raises(WrongKeyError, match=b.key_id):
        b.unwrap(wrapped, b"record 1")
    with pytest.raises(WrongKeyError):
        a.unwrap(wrapped, b"record 2")  # bound to its context
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(WrongKeyError):
        a.unwrap(bytes(tampered), b"record 1")


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    Key.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        Key.generate().save(path)
    assert path.read_bytes() == before
    Key.generate().save(path, overwrite=True)
    assert path.read_bytes() != before


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "cannot read"),
        (b"lfr-key-v1:AAAA\n", 0o600, "damaged"),
        (b"lfr-key-v1:!!!!\n", 0o600, "damaged"),
        (b"ssh-rsa AAAA\n", 0o600, "not an lfr key file"),
        (b"", 0o600, "not an lfr key file"),
        ("valid", 0o644, "readable by other users"),
    ],
)
def test_bad_key_files(
    tmp_path: Path, content: bytes | str | None, mode: int, message: str
) -> None:
    path = tmp_path / "k"
    if content == "valid":
        Key.generate().save(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    if path.exists():
        os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=message):
        Key.from_file(path)


def test_passphrase_keys_depend_on_salt_and_phrase() -> None:
    params = fast_params()
    one = Key.from_passphrase("correct horse", params)
    assert Key.from_passphrase("correct horse", params).key_id == one.key_id
    assert Passphrase("correct horse").derive(params).key_id == one.key_id
    assert Key.from_passphrase("correct horsE", params).key_id != one.key_id
    assert Key.from_passphrase("correct horse", fast_params()).key_id != one.key_id
    assert one.kdf == params
    assert ScryptParams.from_json(params.to_json()) == params
    with pytest.raises(ValueError, match="empty"):
        Key.from_passphrase("", params)
    with pytest.raises(ValueError, match="salt"):
        ScryptParams(b"short")
    with pytest.raises(ValueError, match="power of two"):
        ScryptParams(b"0123456789abcdef", n=1000)
    # A forged header cannot ask for 128 GiB, or hours of work.
    with pytest.raises(ValueError, match="MiB"):
        ScryptParams(b"0123456789abcdef", n=2**24, r=64)
    with pytest.raises(ValueError, match="more work"):
        ScryptParams(b"0123456789abcdef", n=2**20, r=8, p=16)
    ScryptParams(b"0123456789abcdef", n=2**20, r=8, p=1)  # 1 GiB: the limit
    with pytest.raises(ValueError, match="malformed"):  # as read from a header
        ScryptParams.from_json(
            {"kdf": "scrypt", "salt": "MDEyMzQ1Njc4OWFiY2RlZg==", "n": 2**24,
             "r": 64, "p": 16}
        )  # fmt: skip
    with pytest.raises(ValueError, match="malformed"):
        ScryptParams.from_json({"kdf": "scrypt", "salt": "%%%", "n": 2, "r": 1, "p": 1})


def test_no_key_material_in_reprs_or_pickles(tmp_path: Path) -> None:
    key = Key.generate()
    text = key.save(tmp_path / "k").read_text()
    secret = text.split(":", 1)[1].strip()
    assert secret not in repr(key)
    assert key.key_id in repr(key)
    assert "hunter2" not in repr(Passphrase("hunter2"))
    for obj in (key, Passphrase("hunter2")):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_destroy_wipes_and_refuses_use() -> None:
    key = Key.generate()
    key.destroy()
    assert key.destroyed
    assert "destroyed" in repr(key)
    with pytest.raises(ValueError, match="destroyed"):
        key.wrap(new_data_key(), b"")
    key.destroy()  # idempotent


def test_key_is_a_key_provider() -> None:
    assert isinstance(Key.generate(), KeyProvider)
    assert lfr.Key is Key
    assert lfr.KeyProvider is KeyProvider


class Vault:
    """A stand-in for a site's KMS: it never reveals its key to lfr."""

    def __init__(self) -> None:
        self._inner = Key.generate()

    @property
    def key_id(self) -> str:
        return "vault:" + self._inner.key_id

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        return self._inner.wrap(data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytearray:
        return self._inner.unwrap(wrapped, context)


def test_a_custom_provider_fits_the_protocol() -> None:
    vault = Vault()
    assert isinstance(vault, KeyProvider)
    data = new_data_key()
    assert vault.unwrap(vault.wrap(data, b"c"), b"c") == data


def test_seal_round_trips_into_buffers() -> None:
    cipher = data_cipher(new_data_key())
    values = np.arange(64, dtype=np.float32)
    sealed = seal(cipher, values, b"aad")
    assert values.tobytes() not in sealed
    out = np.zeros_like(values)
    open_sealed_into(cipher, sealed, b"aad", out)
    np.testing.assert_array_equal(out, values)
    assert open_sealed(cipher, sealed, b"aad") == values.tobytes()
    with pytest.raises(ValueError, match="32 bytes"):
        data_cipher(b"short")


# -- key files in secure memory (issue 15) ------------------------------------------


def test_a_key_file_written_by_the_old_code_loads(tmp_path: Path) -> None:
    """The format is unchanged: the old writer's file loads, and saves the same."""
    import base64

    raw = os.urandom(KEY_SIZE)
    old = b"lfr-key-v1:" + base64.b64encode(raw) + b"\n"  # what save() wrote
    path = tmp_path / "old.key"
    path.write_bytes(old)
    path.chmod(0o600)
    key = Key.from_file(path)
    assert key.unwrap(key.wrap(raw, b"c"), b"c") == raw
    wrapped = key.wrap(b"x" * KEY_SIZE, b"ctx")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert AESGCM(raw).decrypt(wrapped[:12], wrapped[12:], b"ctx") == b"x" * 32
    assert key.save(tmp_path / "new.key").read_bytes() == old
    # Whitespace around the text, as the old reader's strip() allowed.
    path.write_bytes(b"  \n" + old.strip() + b"\r\n\n")
    assert Key.from_file(path).key_id == key.key_id


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"lfr-key-v1:" + b"A" * 43 + b"!\n", "damaged"),
        (b"lfr-key-v1:" + b"A" * 40 + b"\n", "wrong length"),
        (b"lfr-key-v1: " + b"A" * 43 + b"=\n", "damaged"),
        (b"lfr-key-v1:" + b"A" * 42 + b"B=\n", "damaged"),  # non-zero padding bits
        (b"lfr-key-v2:" + b"A" * 43 + b"=\n", "not an lfr key file"),
        (b"lfr-key-v1:" + b"A" * 5000, "larger than a key file"),
    ],
)
def test_malformed_key_files_are_refused_without_their_text(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message) as info:
        Key.from_file(path)
    assert "AAAA" not in str(info.value)


def test_key_file_codec_makes_no_heap_temporaries() -> None:
    """numpy temporaries would be traced by tracemalloc; secure memory is not."""
    import tracemalloc

    from lfr._keyfile import b64decode_into, b64encode_into

    with (
        lfr.SecureBuffer(3 << 20, allow_unlocked=True) as a,
        lfr.SecureBuffer(4 << 20, allow_unlocked=True) as b,
    ):
        data, text = a.array(np.uint8), b.array(np.uint8)
        data[:] = 7
        tracemalloc.start()
        try:
            b64encode_into(data, text)
            b64decode_into(text, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert int(data[-1]) == 7
        del data, text
    assert peak < 64 * 1024  # a copy would be megabytes
