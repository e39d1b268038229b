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
those show :attr:`Key.key_id`, a public fingerprint. Limits: the passphrase ``str`` and
the copy that ``cryptography`` keeps inside its cipher objects are not wiped by lfr.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lfr._files import write_file
from lfr.errors import KeyFileError, WrongKeyError
from lfr.secure import SecureBuffer

__all__ = [
    "KEY_SIZE",
    "Key",
    "KeyProvider",
    "Passphrase",
    "ScryptParams",
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

        Raises:
            WrongKeyError: ``wrapped`` was not made by this key with this context,
                or was altered.
        """
        ...


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

    __slots__ = ("_aead", "_buf", "_id", "_kdf")
    _save_hint = "; save it with Key.save"

    def __init__(self, _buf: SecureBuffer, kdf: ScryptParams | None = None) -> None:
        if not isinstance(_buf, SecureBuffer) or len(_buf) != KEY_SIZE:
            raise TypeError("use Key.generate, Key.from_file or Key.from_passphrase")
        self._buf = _buf
        self._kdf = kdf
        view = memoryview(_buf)
        copy = bytearray(view)  # hmac takes no memoryview; wiped below
        try:
            self._id = hmac.new(copy, _ID_LABEL, hashlib.sha256).hexdigest()[:16]
            self._aead: AESGCM | None = AESGCM(view)
        finally:
            copy[:] = bytes(len(copy))
            view.release()

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
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                raw = bytearray(f.read(256))
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            if stat.S_IMODE(mode) & 0o077:
                raise KeyFileError(
                    f"key file {path} is readable by other users (mode "
                    f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
                )
            tag, _, body = bytes(raw).strip().partition(b":")
            if tag.decode(errors="replace") != _FILE_TAG:
                raise KeyFileError(f"{path} is not an lfr key file")
            try:
                material = bytearray(base64.b64decode(body, validate=True))
            except ValueError:
                raise KeyFileError(f"key file {path} is damaged") from None
            try:
                if len(material) != KEY_SIZE:
                    raise KeyFileError(f"key file {path} is damaged (wrong length)")
                return cls._filled(lambda view: view.__setitem__(slice(None), material))
            finally:
                material[:] = bytes(len(material))
        finally:
            raw[:] = bytes(len(raw))

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
        text = bytearray(f"{_FILE_TAG}:".encode())
        text += base64.b64encode(view.data) + b"\n"
        del view
        try:
            write_file(path, text, 0o600, overwrite=overwrite)
        finally:
            text[:] = bytes(len(text))
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

    def wrap(self, data_key: bytes | bytearray, context: bytes) -> bytes:
        """Encrypts a data key with AES-256-GCM, bound to ``context``."""
        return seal(self._cipher(), data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytearray:
        """Decrypts :meth:`wrap`'s output (the caller wipes it after use).

        Raises:
            WrongKeyError: Not wrapped by this key for this context, or altered.
        """
        try:
            return bytearray(open_sealed(self._cipher(), wrapped, context))
        except InvalidTag:
            raise WrongKeyError(
                f"key {self._id} cannot unwrap this data key: it was wrapped by "
                "another key, for another record, or has been altered"
            ) from None

    # -- lifetime -------------------------------------------------------------------

    def destroy(self) -> None:
        """Wipes the key; any later use raises ``ValueError``."""
        self._aead = None
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


def seal(cipher: AESGCM, plaintext: Any, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce: ``nonce || ciphertext || tag``.

    ``plaintext`` may be any bytes-like object (a secure buffer view included).
    """
    nonce = os.urandom(_NONCE)
    return nonce + cipher.encrypt(nonce, _bytes_view(plaintext), aad)


def open_sealed(cipher: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Reverses :func:`seal`.

    Raises:
        cryptography.exceptions.InvalidTag: Wrong key or altered data.
    """
    if len(sealed) < _NONCE + 16:
        raise InvalidTag()
    return cipher.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)


def open_sealed_into(cipher: AESGCM, sealed: bytes, aad: bytes, out: Any) -> None:
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


def data_cipher(data_key: bytes | bytearray) -> AESGCM:
    """An AES-256-GCM cipher for a data key (which the caller then wipes)."""
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"a data key has {KEY_SIZE} bytes, got {len(data_key)}")
    return AESGCM(data_key)  # no bytes copy: the caller's bytearray is wiped


def new_data_key() -> bytearray:
    """A fresh random data key (the caller wipes it after use)."""
    return bytearray(os.urandom(KEY_SIZE))


def _bytes_view(data: Any) -> memoryview:
    """A flat byte view of any C-contiguous buffer (numpy arrays of any dtype)."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
