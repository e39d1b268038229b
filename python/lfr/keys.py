"""Keys: what encrypts watchlists and alerts, and how a site supplies it.

lfr uses envelope encryption everywhere it writes face data. Each watchlist file and
each stored alert gets its own random 256-bit data key (AES-256-GCM); only that data
key is stored, *wrapped* (encrypted) by a key-encryption key that never touches the
disk next to the data. The key-encryption key comes from a :class:`KeyProvider`:

* :class:`Key`, a local 256-bit key, read from a key file made by
  ``lfr keys create PATH`` (:meth:`Key.generate`, :meth:`Key.save`,
  :meth:`Key.from_file`) or derived from a passphrase with scrypt
  (:meth:`Key.from_passphrase`; the scrypt parameters are stored with the data, so
  :class:`Passphrase` can be given wherever a key is read);
* any object with ``key_id``, ``wrap`` and ``unwrap`` (the :class:`KeyProvider`
  protocol): a site's KMS or HSM, which then never hands its key to lfr.

Destroying a data key destroys what it encrypts (crypto-shredding): that is how the
alert store makes expiry final, even in backups.

Key material lives in a :class:`~lfr.secure.SecureBuffer` (locked where the memlock
limit allows, never in core dumps) and never appears in logs, exceptions or reprs:
those show :attr:`Key.key_id`, a public fingerprint. Every cipher lfr builds reads its
key from a secure buffer that the cipher's owner keeps for as long as the cipher
(:func:`_key_cipher`; :class:`lfr.ciphers.DataCipher` for data keys), so a
``cryptography`` build that keeps a reference to the key instead of copying it still
encrypts with the right key; :mod:`lfr.ciphers` checks that on import. Limits: the
passphrase ``str``, and the key schedule that OpenSSL keeps inside a live cipher
object, are not in lfr's secure memory (see docs/data-handling.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lfr._files import write_file
from lfr._keyfile import (
    SecretText,
    b64decode_into,
    b64decoded_size,
    b64encode_into,
    read_secret,
    strip_span,
)
from lfr.errors import KeyFileError, WrongKeyError
from lfr.secure import SecureBuffer

if TYPE_CHECKING:
    from lfr.ciphers import DataCipher

__all__ = [
    "KEY_SIZE",
    "Key",
    "KeyProvider",
    "Passphrase",
    "ScryptParams",
    "SecureKeyProvider",
    "Uncopyable",
    "data_cipher",
    "new_data_key",
    "open_sealed",
    "open_sealed_into",
    "seal",
]

#: Bytes in every lfr key (AES-256).
KEY_SIZE = 32
_NONCE = 12
_FILE_TAG = "lfr-key-v1"
#: What a key file starts with (after any leading whitespace).
_FILE_PREFIX = np.frombuffer(f"{_FILE_TAG}:".encode(), np.uint8)
#: Characters of a key in base64 (44 for 32 bytes, one '=' included).
_KEY_TEXT = 4 * -(-KEY_SIZE // 3)
#: The largest key file read (a key file written by lfr has 56 bytes).
_MAX_KEY_FILE = 4096
_ID_LABEL = b"lfr key id v1"


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys; a site's KMS or HSM can stand in for :class:`Key`.

    ``key_id`` is a public fingerprint stored next to wrapped keys, so that a wrong key
    is reported as such. ``context`` is bound to the wrapped key (authenticated, not
    secret): a wrapped key moved to another record or file does not unwrap.
    """

    @property
    def key_id(self) -> str:
        """A stable, public identifier of the key (never key material)."""
        ...

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        """Encrypts ``data_key`` for storage."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytearray:
        """Decrypts a wrapped data key; the caller wipes the result after use.

        lfr calls this only on providers without ``unwrap_into``
        (:class:`SecureKeyProvider`): it copies the result into secure memory at
        once and overwrites it with zeros. A ``bytes`` result (what KMS client
        libraries such as boto3 return) cannot be overwritten: that copy stays in
        the Python heap until its memory is reused.

        Raises:
            WrongKeyError: ``wrapped`` was not made by this key with this context,
                or was altered.
        """
        ...


@runtime_checkable
class SecureKeyProvider(KeyProvider, Protocol):
    """A :class:`KeyProvider` that can unwrap straight into lfr's secure memory.

    lfr prefers :meth:`unwrap_into` wherever a provider has it (:class:`Key` does),
    so the plaintext data key never exists outside a secure buffer.
    """

    def unwrap_into(self, wrapped: bytes, context: bytes, out: Any) -> None:
        """Decrypts a wrapped data key into ``out``, a writable 32-byte buffer.

        Raises:
            WrongKeyError: ``wrapped`` was not made by this key with this context,
                or was altered.
            ValueError: ``out`` is not a writable buffer of :data:`KEY_SIZE` bytes.
        """
        ...


def _key_cipher(buf: SecureBuffer) -> tuple[AESGCM, memoryview]:
    """An AES-GCM cipher over a view of a key's secure buffer (lfr's key discipline).

    The caller keeps the returned view, and the buffer, for as long as it keeps the
    cipher, and wipes the buffer only after dropping the cipher. No temporary copy of
    the key is made here, so it does not matter whether ``cryptography`` copies the
    key (OpenSSL 3.2 or later) or keeps a reference to it and reads it at every
    operation (builds against older OpenSSL): either way the cipher uses the key.
    """
    view = buf.memoryview()
    try:
        return AESGCM(view), view
    except BaseException:
        view.release()
        raise


class Uncopyable:
    """A holder of secrets that refuses pickling and copying.

    So no stray copy of the secret is made through them; ``_save_hint`` says what
    to do instead.
    """

    __slots__ = ()
    _save_hint = ""

    def _refuse(self) -> TypeError:
        return TypeError(
            f"a {type(self).__name__} cannot be pickled or copied{self._save_hint}"
        )

    def __reduce__(self) -> Any:
        raise self._refuse()

    def __copy__(self) -> Any:
        raise self._refuse()

    def __deepcopy__(self, memo: Any) -> Any:
        raise self._refuse()


#: The most memory scrypt parameters may ask for (bytes; the default needs 128 MiB).
MAX_SCRYPT_MEMORY = 1 << 30
#: The most work (n * r * p) they may ask for: 8 times the default.
MAX_SCRYPT_WORK = 8 * 2**17 * 8


@dataclass(frozen=True)
class ScryptParams:
    """scrypt parameters, stored with the data a passphrase protects.

    Attributes:
        salt: Random salt (16 bytes by default).
        n: CPU/memory cost, a power of two (memory is ``128 * n * r`` bytes:
            128 MiB for the default, OWASP's recommendation).
        r: Block size.
        p: Parallelism.
    """

    salt: bytes
    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or len(self.salt) < 8:
            raise ValueError("the scrypt salt must be at least 8 bytes")
        if self.n < 2 or self.n & (self.n - 1) or self.n > 2**24:
            raise ValueError(
                f"scrypt n must be a power of two up to 2**24, got {self.n}"
            )
        if not (1 <= self.r <= 64 and 1 <= self.p <= 16):
            raise ValueError(
                f"scrypt r must be in 1..64 and p in 1..16, got {self.r}, {self.p}"
            )
        # The parameters come from the (unauthenticated) header of the data they
        # protect: bounded, so a forged header cannot ask for 128 GiB or hours.
        if 128 * self.n * self.r > MAX_SCRYPT_MEMORY:
            raise ValueError(
                f"scrypt n={self.n}, r={self.r} needs {128 * self.n * self.r >> 20} "
                f"MiB; lfr allows at most {MAX_SCRYPT_MEMORY >> 20} MiB"
            )
        if self.n * self.r * self.p > MAX_SCRYPT_WORK:
            raise ValueError(
                f"scrypt n*r*p = {self.n * self.r * self.p} is more work than lfr "
                f"allows ({MAX_SCRYPT_WORK}: 8 times the default)"
            )

    @classmethod
    def fresh(cls, n: int = 2**17, r: int = 8, p: int = 1) -> ScryptParams:
        """New parameters with a random salt."""
        return cls(os.urandom(16), n, r, p)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the salt in base64)."""
        salt = base64.b64encode(self.salt).decode()
        return {"kdf": "scrypt", "salt": salt, "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_json(cls, data: Any) -> ScryptParams:
        """Reads :meth:`to_json`'s output.

        Raises:
            ValueError: It is not a valid scrypt parameter set.
        """
        if not isinstance(data, dict) or data.get("kdf") != "scrypt":
            raise ValueError("not scrypt parameters")
        try:
            salt = base64.b64decode(str(data["salt"]), validate=True)
            return cls(salt, int(data["n"]), int(data["r"]), int(data["p"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed scrypt parameters: {exc}") from None


class Passphrase(Uncopyable):
    """A passphrase, for places that read the scrypt parameters from the data.

    ``Watchlist.open(path, Passphrase(secret))`` derives the key with the salt and
    costs stored in the file. The text is never shown in reprs.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("a passphrase must be a non-empty str or bytes")
        self._secret = secret

    def derive(self, params: ScryptParams | None = None) -> Key:
        """The key for ``params`` (fresh parameters when None)."""
        return Key.from_passphrase(self._secret, params)

    def __repr__(self) -> str:
        return "Passphrase(<hidden>)"


class Key(Uncopyable):
    """A 256-bit AES key in locked memory: lfr's local :class:`KeyProvider`.

    Make one with :meth:`generate`, :meth:`from_file` or :meth:`from_passphrase`.
    It wraps data keys with AES-256-GCM. ``repr`` shows only :attr:`key_id`; a key
    cannot be pickled or copied; :meth:`destroy` wipes it.
    """

    __slots__ = ("_aead", "_buf", "_id", "_kdf", "_keyview")
    _save_hint = "; save it with Key.save"

    def __init__(self, _buf: SecureBuffer, kdf: ScryptParams | None = None) -> None:
        if not isinstance(_buf, SecureBuffer) or len(_buf) != KEY_SIZE:
            raise TypeError("use Key.generate, Key.from_file or Key.from_passphrase")
        self._buf = _buf
        self._kdf = kdf
        # hmac takes no memoryview; wiped below
        copy = bytearray(_buf.memoryview())
        try:
            self._id = hmac.new(copy, _ID_LABEL, hashlib.sha256).hexdigest()[:16]
        finally:
            copy[:] = bytes(len(copy))
        # The cipher's view (and so the buffer) lives until destroy(): see _key_cipher.
        aead, self._keyview = _key_cipher(_buf)
        self._aead: AESGCM | None = aead

    # -- making keys -------------------------------------------------------------

    @classmethod
    def _filled(cls, write: Any, kdf: ScryptParams | None = None) -> Key:
        buf = SecureBuffer(KEY_SIZE, allow_unlocked=True)
        try:
            view = buf.array(np.uint8, (KEY_SIZE,))
            write(view)
            del view
        except BaseException:
            buf.discard()
            raise
        return cls(buf, kdf)

    @classmethod
    def generate(cls) -> Key:
        """A new random key (from the operating system's CSPRNG)."""

        def fill(view: np.ndarray) -> None:
            with open("/dev/urandom", "rb", buffering=0) as rng:
                if rng.readinto(view.data) != KEY_SIZE:
                    raise OSError("short read from /dev/urandom")

        return cls._filled(fill)

    @classmethod
    def from_passphrase(
        cls, passphrase: str | bytes, params: ScryptParams | None = None
    ) -> Key:
        """The key scrypt derives from ``passphrase`` with ``params``.

        Args:
            passphrase: The passphrase (text is UTF-8 encoded).
            params: Salt and costs; fresh ones (random salt) when None. They are
                stored with whatever this key protects (:attr:`kdf`).

        Raises:
            ValueError: The passphrase is empty.
        """
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        if not secret:
            raise ValueError("the passphrase is empty")
        params = params or ScryptParams.fresh()
        derived = bytearray(
            hashlib.scrypt(
                secret,
                salt=params.salt,
                n=params.n,
                r=params.r,
                p=params.p,
                maxmem=256 * params.n * params.r + (1 << 20),
                dklen=KEY_SIZE,
            )
        )
        try:
            return cls._filled(
                lambda view: view.__setitem__(slice(None), derived), params
            )
        finally:
            derived[:] = bytes(KEY_SIZE)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Key:
        """Reads a key file written by :meth:`save` (``lfr keys create``).

        Raises:
            KeyFileError: The file is missing or unreadable, is not an lfr key file,
                or can be read by its group or others (fix: ``chmod 600 PATH``).
        """
        path = Path(path)
        secret = read_secret(path, _MAX_KEY_FILE)
        try:
            if secret.mode & 0o077:
                raise KeyFileError(
                    f"key file {path} is readable by other users (mode "
                    f"{secret.mode:04o}); run `chmod 600 {path}`"
                )
            return cls._filled(lambda view: _parse_key_file(path, secret, view))
        finally:
            secret.discard()

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Writes the key to a new file readable only by its owner (mode 0600).

        The file appears complete or not at all (written beside it, fsynced, then
        renamed). Keep it away from the data it protects, and back it up: without
        it, encrypted watchlists and alerts cannot be read.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite a key file")
        view = self._view()
        size = len(_FILE_PREFIX) + _KEY_TEXT + 1
        with SecureBuffer(size, allow_unlocked=True) as buf:
            text = buf.array(np.uint8, (size,))
            text[: len(_FILE_PREFIX)] = _FILE_PREFIX
            b64encode_into(view, text[len(_FILE_PREFIX) : -1])
            text[-1] = ord("\n")
            del view, text
            data = buf.memoryview()[:size]
            try:
                write_file(path, data, 0o600, overwrite=overwrite)
            finally:
                data.release()
        return path

    # -- KeyProvider --------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """Public fingerprint: the first 16 hex digits of HMAC-SHA256(key, label)."""
        return self._id

    @property
    def kdf(self) -> ScryptParams | None:
        """The scrypt parameters this key was derived with, or None."""
        return self._kdf

    def wrap(self, data_key: bytes | bytearray | memoryview, context: bytes) -> bytes:
        """Encrypts a data key with AES-256-GCM, bound to ``context``.

        ``data_key`` may be any 32-byte buffer, a secure buffer's view included.
        """
        return seal(self._cipher(), data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytearray:
        """Decrypts :meth:`wrap`'s output (the caller wipes it after use).

        For the :class:`KeyProvider` protocol only: the key passes through a Python
        ``bytes`` that cannot be wiped. lfr itself uses :meth:`unwrap_into`.

        Raises:
            WrongKeyError: Not wrapped by this key for this context, or altered.
        """
        try:
            return bytearray(open_sealed(self._cipher(), wrapped, context))
        except InvalidTag:
            raise self._cannot_unwrap() from None

    def unwrap_into(self, wrapped: bytes, context: bytes, out: Any) -> None:
        """Decrypts :meth:`wrap`'s output straight into ``out`` (no other copy).

        This is how lfr unwraps with a :class:`Key`
        (:meth:`lfr.ciphers.DataCipher.unwrap`): ``out`` is the data cipher's
        secure buffer.

        Raises:
            WrongKeyError: Not wrapped by this key for this context, or altered.
            ValueError: ``out`` is not a writable buffer of :data:`KEY_SIZE` bytes.
        """
        target = _bytes_view(out)
        if target.readonly or target.nbytes != KEY_SIZE:
            raise ValueError(f"out must be a writable buffer of {KEY_SIZE} bytes")
        if len(wrapped) != _NONCE + KEY_SIZE + 16:
            raise self._cannot_unwrap()
        try:
            open_sealed_into(self._cipher(), wrapped, context, target)
        except InvalidTag:
            raise self._cannot_unwrap() from None

    def _cannot_unwrap(self) -> WrongKeyError:
        return WrongKeyError(
            f"key {self._id} cannot unwrap this data key: it was wrapped by "
            "another key, for another record, or has been altered"
        )

    # -- lifetime -------------------------------------------------------------------

    def destroy(self) -> None:
        """Wipes the key; any later use raises ``ValueError``."""
        self._aead = None  # the cipher first: it may read the buffer until now
        self._keyview.release()
        if not self._buf.closed:
            self._buf.discard()

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` has run."""
        return self._buf.closed

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise ValueError("the key has been destroyed")
        return self._aead

    def _view(self) -> np.ndarray:
        if self._buf.closed:
            raise ValueError("the key has been destroyed")
        return self._buf.array(np.uint8, (KEY_SIZE,))

    def __repr__(self) -> str:
        state = ", destroyed" if self.destroyed else ""
        return f"Key(key_id={self._id!r}{state})"


def _parse_key_file(path: Path, secret: SecretText, out: np.ndarray) -> None:
    """Decodes a key file's text (``lfr-key-v1:`` and base64) into ``out``.

    The same format as ever: the file stripped of whitespace at both ends is the
    tag, a colon and the key's base64; parsed in place, no copy of the text made.
    """
    text = secret.text()
    try:
        start, end = strip_span(text)
        tag_end = start + len(_FILE_PREFIX)
        if end < tag_end or not np.array_equal(text[start:tag_end], _FILE_PREFIX):
            raise KeyFileError(f"{path} is not an lfr key file")
        body = text[tag_end:end]
        try:
            if b64decoded_size(body) != KEY_SIZE:
                raise KeyFileError(f"key file {path} is damaged (wrong length)")
            b64decode_into(body, out)
        except ValueError:
            raise KeyFileError(f"key file {path} is damaged") from None
        finally:
            del body
    finally:
        del text


class _Aead(Protocol):
    """What :func:`seal` and friends need: ``AESGCM`` or a :class:`DataCipher`."""

    def encrypt(self, nonce: bytes, data: Any, associated_data: bytes | None) -> bytes:
        """Encrypts ``data``; returns ciphertext and tag."""
        ...

    def decrypt(
        self, nonce: bytes, data: bytes, associated_data: bytes | None
    ) -> bytes:
        """Decrypts and authenticates ``data``."""
        ...

    def decrypt_into(
        self, nonce: bytes, data: bytes, associated_data: bytes | None, buf: Any
    ) -> int:
        """Decrypts and authenticates ``data`` into ``buf``; returns its length."""
        ...


def seal(cipher: _Aead, plaintext: Any, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce: ``nonce || ciphertext || tag``.

    ``plaintext`` may be any bytes-like object (a secure buffer view included).
    """
    nonce = os.urandom(_NONCE)
    return nonce + cipher.encrypt(nonce, _bytes_view(plaintext), aad)


def open_sealed(cipher: _Aead, sealed: bytes, aad: bytes) -> bytes:
    """Reverses :func:`seal`.

    Raises:
        cryptography.exceptions.InvalidTag: Wrong key or altered data.
    """
    if len(sealed) < _NONCE + 16:
        raise InvalidTag()
    return cipher.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)


def open_sealed_into(cipher: _Aead, sealed: bytes, aad: bytes, out: Any) -> None:
    """Reverses :func:`seal` straight into ``out``: no plaintext copy elsewhere.

    ``out`` is a writable buffer of exactly the plaintext's size, normally a
    secure buffer view.

    Raises:
        cryptography.exceptions.InvalidTag: Wrong key or altered data.
        ValueError: ``out`` has the wrong size.
    """
    if len(sealed) < _NONCE + 16:
        raise InvalidTag()
    cipher.decrypt_into(sealed[:_NONCE], sealed[_NONCE:], aad, _bytes_view(out))


def data_cipher(data_key: bytes | bytearray) -> DataCipher:
    """A cipher with its own secure copy of ``data_key`` (which the caller wipes).

    Kept for integrators' code; lfr itself makes data keys in secure memory
    (:meth:`lfr.ciphers.DataCipher.generate`, :meth:`~lfr.ciphers.DataCipher.unwrap`)
    and never holds one in a ``bytearray``. The result works with :func:`seal`,
    :func:`open_sealed` and :func:`open_sealed_into`; close it when done.

    Raises:
        ValueError: ``data_key`` does not have :data:`KEY_SIZE` bytes.
    """
    from lfr.ciphers import DataCipher

    return DataCipher.from_key(data_key)


def new_data_key() -> bytearray:
    """A fresh random data key in the Python heap (the caller wipes it after use).

    Kept for integrators' code; lfr uses :meth:`lfr.ciphers.DataCipher.generate`,
    which never puts the key outside secure memory.
    """
    return bytearray(os.urandom(KEY_SIZE))


def _bytes_view(data: Any) -> memoryview:
    """A flat byte view of any C-contiguous buffer (numpy arrays of any dtype)."""
    view = data.memoryview() if isinstance(data, SecureBuffer) else memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
