"""Ed25519 keys that sign and verify audit logs.

A deployment signs every audit record with a :class:`SigningKey` (``lfr keys create
--signing PATH``); an auditor verifies the log with the matching :class:`PublicKey`,
obtained independently of the log. Keys are named by :attr:`SigningKey.key_id`, a
public fingerprint (the first 16 hex digits of SHA-256 of the raw public key), never
by their material: reprs, logs and exceptions show only that. The seed lives in secure
memory (:class:`SigningKey`). Limits: ``cryptography``'s key object holds a second
copy, in OpenSSL's memory, which OpenSSL clears when the object is freed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lfr._files import write_file
from lfr._keyfile import (
    SecretText,
    b64decode_into,
    b64decoded_size,
    b64encode_into,
    read_secret,
    strip_span,
)
from lfr.errors import KeyFileError
from lfr.keys import Uncopyable
from lfr.secure import SecureBuffer

__all__ = ["PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "PublicKey", "SigningKey"]

#: Bytes in a raw Ed25519 public key.
PUBLIC_KEY_SIZE = 32
#: Bytes in an Ed25519 signature.
SIGNATURE_SIZE = 64
_MAX_PEM = 16 * 1024
_SEED = 32
#: DER of a PKCS #8 Ed25519 private key (RFC 8410), up to the 32-byte seed.
_DER_PREFIX = np.frombuffer(bytes.fromhex("302e020100300506032b657004220420"), np.uint8)
_DER_SIZE = len(_DER_PREFIX) + _SEED
_PEM_HEAD = np.frombuffer(b"-----BEGIN PRIVATE KEY-----\n", np.uint8)
_PEM_TAIL = np.frombuffer(b"\n-----END PRIVATE KEY-----\n", np.uint8)
_BEGIN = _PEM_HEAD[:-1]  # the lines alone, for reading
_END = _PEM_TAIL[1:-1]
#: The whole PEM file: 64 base64 characters (one line) between head and tail.
_PEM_SIZE = len(_PEM_HEAD) + 4 * (_DER_SIZE // 3) + len(_PEM_TAIL)


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class PublicKey:
    """An Ed25519 public key: verifies what a :class:`SigningKey` signed.

    Two public keys are equal when their raw bytes are.

    Examples:
        >>> from lfr.audit import SigningKey
        >>> key = SigningKey.generate()
        >>> key.public_key().verify(key.sign(b"record"), b"record")
        True
    """

    __slots__ = ("_id", "_key", "_raw")

    def __init__(self, _key: Ed25519PublicKey) -> None:
        if not isinstance(_key, Ed25519PublicKey):
            raise TypeError("use PublicKey.load, PublicKey.from_raw or public_key()")
        self._key = _key
        self._raw = _key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._id = _fingerprint(self._raw)

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        """The public key whose raw 32-byte form is ``raw``.

        Raises:
            ValueError: ``raw`` is not 32 bytes.
        """
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} raw bytes")
        return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PublicKey:
        """Reads a PEM public key written by :meth:`save`.

        Raises:
            KeyFileError: The file is missing or unreadable, or does not hold an
                Ed25519 public key.
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_PEM)
        except OSError as exc:
            raise KeyFileError(
                f"cannot read public key file {path}: {exc.strerror}"
            ) from None
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path} holds a public key that is not Ed25519")
        return cls(key)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Writes the key as PEM (SubjectPublicKeyInfo), readable by all (0644).

        The file appears complete or not at all.

        Args:
            path: Where to write.
            overwrite: Replace an existing file.

        Returns:
            The path written.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        pem = self._key.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return write_file(Path(path), pem, 0o644, overwrite=overwrite)

    @property
    def raw(self) -> bytes:
        """The raw 32-byte public key."""
        return self._raw

    @property
    def key_id(self) -> str:
        """Public fingerprint: the first 16 hex digits of SHA-256 of :attr:`raw`."""
        return self._id

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``data``."""
        try:
            self._key.verify(bytes(signature), bytes(data))
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self._id!r})"

    def __reduce__(self) -> Any:
        return (PublicKey.from_raw, (self._raw,))


class SigningKey(Uncopyable):
    """An Ed25519 private key that signs audit records.

    Make one with :meth:`generate` or :meth:`load`. ``repr`` shows only
    :attr:`key_id`; a signing key cannot be pickled or copied; :meth:`destroy`
    wipes it. Its 32-byte seed lives in a :class:`~lfr.secure.SecureBuffer`:
    :meth:`load` parses the PEM file in secure memory and :meth:`save` writes it
    from there, so neither leaves a copy of the key's text or seed in the Python
    heap (``tests/integration/test_key_forensics.py``).
    """

    __slots__ = ("_key", "_public", "_seed")
    _save_hint = "; save it with SigningKey.save"

    def __init__(
        self, _key: Ed25519PrivateKey, _seed: SecureBuffer | None = None
    ) -> None:
        if not isinstance(_key, Ed25519PrivateKey):
            raise TypeError("use SigningKey.generate or SigningKey.load")
        self._key: Ed25519PrivateKey | None = _key
        self._seed = _seed
        self._public = PublicKey(_key.public_key())

    @classmethod
    def _from_seed(cls, fill: Any) -> SigningKey:
        seed = SecureBuffer(_SEED, allow_unlocked=True)
        try:
            fill(seed.array(np.uint8, (_SEED,)))
            view = seed.memoryview()
            try:
                key = Ed25519PrivateKey.from_private_bytes(view)
            finally:
                view.release()
        except BaseException:
            seed.discard()
            raise
        return cls(key, seed)

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key (from the operating system's CSPRNG)."""

        def fill(view: np.ndarray) -> None:
            with open("/dev/urandom", "rb", buffering=0) as rng:
                if rng.readinto(view.data) != _SEED:
                    raise OSError("short read from /dev/urandom")

        return cls._from_seed(fill)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Reads a key written by :meth:`save` (``lfr keys create --signing``).

        The file is the unencrypted PKCS #8 PEM that :meth:`save` and
        ``openssl genpkey -algorithm ed25519`` write.

        Raises:
            KeyFileError: The file is missing or unreadable, is not an unencrypted
                PEM Ed25519 private key in that form, or can be read by its group
                or others (fix: ``chmod 600 PATH``).
        """
        path = Path(path)
        secret = read_secret(path, _MAX_PEM)
        try:
            if secret.mode & 0o077:
                raise KeyFileError(
                    f"key file {path} is readable by other users (mode "
                    f"{secret.mode:04o}); run `chmod 600 {path}`"
                )
            return cls._from_seed(lambda seed: _parse_pem(path, secret, seed))
        finally:
            secret.discard()

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Writes the key to a new file readable only by its owner (mode 0600).

        The format is unencrypted PEM (PKCS #8). The file appears complete or not
        at all (written beside it, fsynced, then linked or renamed into place).

        Args:
            path: Where to write.
            overwrite: Replace an existing file.

        Returns:
            The path written.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            ValueError: The key has been destroyed, or was made from a
                ``cryptography`` key object (not by :meth:`generate` or
                :meth:`load`), whose seed lfr does not hold.
        """
        seed = self._seed_view()
        size = _PEM_SIZE + _DER_SIZE
        with SecureBuffer(size, allow_unlocked=True) as buf:
            whole = buf.array(np.uint8, (size,))
            pem, der = whole[:_PEM_SIZE], whole[_PEM_SIZE:]
            der[: len(_DER_PREFIX)] = _DER_PREFIX
            der[len(_DER_PREFIX) :] = seed
            pem[: len(_PEM_HEAD)] = _PEM_HEAD
            b64encode_into(der, pem[len(_PEM_HEAD) : _PEM_SIZE - len(_PEM_TAIL)])
            pem[_PEM_SIZE - len(_PEM_TAIL) :] = _PEM_TAIL
            del seed, whole, pem, der
            data = buf.memoryview()[:_PEM_SIZE]
            try:
                return write_file(Path(path), data, 0o600, overwrite=overwrite)
            finally:
                data.release()

    def public_key(self) -> PublicKey:
        """The matching public key (give it to auditors)."""
        return self._public

    @property
    def key_id(self) -> str:
        """Public fingerprint, the same as ``public_key().key_id``."""
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``.

        Raises:
            ValueError: The key has been destroyed.
        """
        if self._key is None:
            raise ValueError("the signing key has been destroyed")
        return self._key.sign(bytes(data))

    def destroy(self) -> None:
        """Wipes the seed and drops the key; any later use raises ``ValueError``.

        OpenSSL clears its own copy of the private key when the ``cryptography``
        key object is freed, which happens here unless other references to it
        remain.
        """
        self._key = None
        if self._seed is not None:
            self._seed.discard()

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` has run."""
        return self._key is None

    def _seed_view(self) -> np.ndarray:
        if self._key is None:
            raise ValueError("the signing key has been destroyed")
        if self._seed is None:
            raise ValueError(
                "this SigningKey was made from a cryptography key object; lfr "
                "holds no seed to save (make it with SigningKey.generate or load)"
            )
        return self._seed.array(np.uint8, (_SEED,))

    def __repr__(self) -> str:
        state = ", destroyed" if self.destroyed else ""
        return f"SigningKey(key_id={self.key_id!r}{state})"


def _find(text: np.ndarray, needle: np.ndarray, start: int = 0) -> int:
    """The first index of ``needle`` in ``text[start:]`` (compared in place), or -1."""
    n = needle.size
    for i in np.flatnonzero(text[start : text.size - n + 1] == needle[0]):
        at = start + int(i)
        if np.array_equal(text[at : at + n], needle):
            return at
    return -1


def _parse_pem(path: Path, secret: SecretText, seed: np.ndarray) -> None:
    """Decodes a PKCS #8 PEM Ed25519 key into ``seed``, in place, with no copy.

    As OpenSSL does, text before the ``BEGIN`` line and after the ``END`` line is
    ignored, and lines may end in CRLF.
    """
    text = secret.text()
    try:
        head = _find(text, _BEGIN)
        tail = -1 if head < 0 else _find(text, _END, head + _BEGIN.size)
        if tail < 0:
            raise KeyFileError(_not_lfr_pem(path, secret))
        body_start, body_end = strip_span(text, head + _BEGIN.size, tail)
        body = text[body_start:body_end]
        with SecureBuffer(_DER_SIZE, allow_unlocked=True) as buf:
            der = buf.array(np.uint8, (_DER_SIZE,))
            try:
                if b64decoded_size(body) != _DER_SIZE:
                    raise ValueError("wrong length")
                b64decode_into(body, der)
                if not np.array_equal(der[: len(_DER_PREFIX)], _DER_PREFIX):
                    raise ValueError("not an Ed25519 key")
                seed[:] = der[len(_DER_PREFIX) :]
            except ValueError:
                raise KeyFileError(_not_lfr_pem(path, secret)) from None
            finally:
                del der, body
    finally:
        del text


def _not_lfr_pem(path: Path, secret: SecretText) -> str:
    """Why ``secret`` is not a key lfr reads (cryptography's parser tells which).

    Only on failure: the key in it, if any, is not used.
    """
    view = secret.buf.memoryview()[: secret.size]
    try:
        key = serialization.load_pem_private_key(view, password=None)
    except TypeError:
        return f"key file {path} is encrypted; lfr reads unencrypted PEM keys"
    except (ValueError, UnsupportedAlgorithm):
        return f"{path} is not a PEM private key"
    finally:
        view.release()
    if not isinstance(key, Ed25519PrivateKey):
        return f"{path} holds a private key that is not Ed25519"
    return (
        f"{path} holds an Ed25519 key in a PEM form lfr does not read; lfr reads "
        "unencrypted PKCS #8 (`lfr keys create --signing`, `openssl genpkey "
        "-algorithm ed25519`)"
    )
