"""Ed25519 keys that sign and verify audit logs.

A deployment signs every audit record with a :class:`SigningKey` (``lfr keys create
--signing PATH``); an auditor verifies the log with the matching :class:`PublicKey`,
obtained independently of the log. Keys are named by :attr:`SigningKey.key_id`, a
public fingerprint (the first 16 hex digits of SHA-256 of the raw public key), never
by their material: reprs, logs and exceptions show only that. Limits: the private key
lives inside ``cryptography``'s key object and is not wiped by lfr.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lfr._files import write_file
from lfr.errors import KeyFileError
from lfr.keys import Uncopyable

__all__ = ["PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "PublicKey", "SigningKey"]

#: Bytes in a raw Ed25519 public key.
PUBLIC_KEY_SIZE = 32
#: Bytes in an Ed25519 signature.
SIGNATURE_SIZE = 64
_MAX_PEM = 16 * 1024


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
    :attr:`key_id`; a signing key cannot be pickled or copied.
    """

    __slots__ = ("_key", "_public")
    _save_hint = "; save it with SigningKey.save"

    def __init__(self, _key: Ed25519PrivateKey) -> None:
        if not isinstance(_key, Ed25519PrivateKey):
            raise TypeError("use SigningKey.generate or SigningKey.load")
        self._key = _key
        self._public = PublicKey(_key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key (from the operating system's CSPRNG)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Reads a key written by :meth:`save` (``lfr keys create --signing``).

        Raises:
            KeyFileError: The file is missing or unreadable, is not an unencrypted
                PEM Ed25519 private key, or can be read by its group or others
                (fix: ``chmod 600 PATH``).
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                data = bytearray(f.read(_MAX_PEM))
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            if mode & 0o077:
                raise KeyFileError(
                    f"key file {path} is readable by other users (mode {mode:04o}); "
                    f"run `chmod 600 {path}`"
                )
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except TypeError:
                raise KeyFileError(
                    f"key file {path} is encrypted; lfr reads unencrypted PEM keys"
                ) from None
            except (ValueError, UnsupportedAlgorithm):
                raise KeyFileError(f"{path} is not a PEM private key") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise KeyFileError(f"{path} holds a private key that is not Ed25519")
            return cls(key)
        finally:
            data[:] = bytes(len(data))

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
        """
        pem = bytearray(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        try:
            return write_file(Path(path), pem, 0o600, overwrite=overwrite)
        finally:
            pem[:] = bytes(len(pem))

    def public_key(self) -> PublicKey:
        """The matching public key (give it to auditors)."""
        return self._public

    @property
    def key_id(self) -> str:
        """Public fingerprint, the same as ``public_key().key_id``."""
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._key.sign(bytes(data))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"
