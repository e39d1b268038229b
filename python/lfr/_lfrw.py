r"""The ``.lfrw`` watchlist file format: reading, checking and atomic writing.

Layout (all integers little-endian)::

    magic       8 bytes   b"LFRW\\r\\n\\x1a\\n"
    version     uint16    1
    header_len  uint32    length of the header
    header      JSON      UTF-8, sorted keys (see :class:`Header`)
    payload     bytes     nonce (12) || AES-256-GCM ciphertext || tag (16)

The payload is encrypted with a random data key that is stored in the header wrapped
by the caller's key (:class:`~lfr.keys.KeyProvider`), and authenticated together with
every byte before it (magic, version, length and header are its associated data): any
change to any byte of the file fails the tag check. The header also names the
wrapping key's public fingerprint, so a wrong key is reported as such.

Plaintext payload: ``uint32 n`` (bytes of the JSON list of subjects), that JSON, then
the templates as ``float32[rows, dim]`` (little-endian), in subject order. The
plaintext only ever exists in a secure buffer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag

from lfr._files import write_file
from lfr.ciphers import DataCipher
from lfr.errors import WatchlistError, WrongKeyError, WrongWatchlistKeyError
from lfr.keys import KeyProvider, Passphrase, ScryptParams
from lfr.secure import SecureBuffer

__all__ = ["FORMAT_VERSION", "MAGIC", "Header", "WrongWatchlistKeyError"]

MAGIC = b"LFRW\r\n\x1a\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_MAX_HEADER = 1 << 20
_NONCE, _TAG = 12, 16
_CONTEXT = b"lfr watchlist data key v1"


@dataclass(frozen=True)
class Header:
    """What a watchlist file says about itself, readable without its key.

    Attributes:
        created: When the watchlist was created (UTC).
        expires: When it stops being usable (UTC), or None.
        model_id: The embedder its templates come from (``FaceEmbedder.model_id``).
        dim: Template dimension.
        subjects: Number of subjects.
        templates: Number of templates.
        key_id: Public fingerprint of the key that wraps its data key.
        kdf: scrypt parameters when that key comes from a passphrase.
        saved: When this version of the file was written (UTC).
    """

    created: datetime
    expires: datetime | None
    model_id: str
    dim: int
    subjects: int
    templates: int
    key_id: str
    kdf: ScryptParams | None
    saved: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "format": "lfr-watchlist",
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat() if self.expires else None,
            "model_id": self.model_id,
            "dim": self.dim,
            "subjects": self.subjects,
            "templates": self.templates,
            "key_id": self.key_id,
            "kdf": self.kdf.to_json() if self.kdf else None,
            "saved": self.saved.isoformat(),
        }


def _time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a time")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{what} has no time zone")
    return parsed


def _parse_header(raw: bytes, path: Path) -> tuple[Header, str]:
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != "lfr-watchlist":
            raise ValueError("not a watchlist header")
        header = Header(
            created=_time(data["created"], "created"),
            expires=_time(data["expires"], "expires") if data["expires"] else None,
            model_id=str(data["model_id"]),
            dim=int(data["dim"]),
            subjects=int(data["subjects"]),
            templates=int(data["templates"]),
            key_id=str(data["key_id"]),
            kdf=ScryptParams.from_json(data["kdf"]) if data["kdf"] else None,
            saved=_time(data["saved"], "saved"),
        )
        wrapped = str(data["wrapped_key"])
        if not 1 <= header.dim <= 65536 or header.templates < 0 or header.subjects < 0:
            raise ValueError("impossible sizes")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise WatchlistError(
            f"{path}: the watchlist header is damaged or has been altered"
        ) from None
    return header, wrapped


def read_header(path: Path) -> tuple[Header, bytes, str, bytes]:
    """Reads and checks the unencrypted part of a file.

    Returns:
        ``(header, associated data, wrapped key (base64), sealed payload)``.

    Raises:
        WatchlistError: Not a watchlist, unknown version, truncated or damaged.
    """
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise WatchlistError(f"cannot read watchlist {path}: {exc.strerror}") from None
    if len(blob) < _PREFIX.size or blob[:8] != MAGIC:
        raise WatchlistError(f"{path} is not an lfr watchlist (.lfrw) file")
    _, version, length = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise WatchlistError(
            f"{path} has watchlist format version {version}; this lfr reads version "
            f"{FORMAT_VERSION} (upgrade lfr to read newer files)"
        )
    end = _PREFIX.size + length
    if length > _MAX_HEADER or len(blob) < end + _NONCE + _TAG:
        raise WatchlistError(f"{path} is truncated or damaged")
    header, wrapped = _parse_header(blob[_PREFIX.size : end], path)
    return header, blob[:end], wrapped, blob[end:]


@dataclass(frozen=True)
class Opened:
    """A decrypted file.

    Attributes:
        header: Its header.
        key: The key that opened it (derived, for a passphrase).
        subjects: The subject records.
        templates: ``float32[rows, dim]`` in a secure buffer the caller owns.
        sha256: SHA-256 (hex) of the file's bytes.
    """

    header: Header
    key: KeyProvider
    subjects: list[dict[str, Any]]
    templates: SecureBuffer
    sha256: str


def file_sha256(aad: bytes, sealed: bytes) -> str:
    """SHA-256 (hex) of a file made of ``aad`` then ``sealed``, without joining them."""
    digest = hashlib.sha256(aad)
    digest.update(sealed)
    return digest.hexdigest()


def decrypt(path: Path, key: KeyProvider | Passphrase) -> Opened:
    """Opens a file (one read): its header, subject records and templates.

    A :class:`~lfr.keys.Passphrase` is derived with the scrypt parameters in the
    header.

    Raises:
        WrongWatchlistKeyError: ``key`` is not the file's key (or passphrase).
        WatchlistError: The file is damaged or has been altered, or it is
            protected by a key file and a passphrase was given.
    """
    header, aad, wrapped, sealed = read_header(path)
    if isinstance(key, Passphrase):
        if header.kdf is None:
            raise WatchlistError(f"{path} is protected by a key file, not a passphrase")
        key = key.derive(header.kdf)
        if key.key_id != header.key_id:
            raise WrongWatchlistKeyError(f"wrong passphrase for {path}")
    if key.key_id != header.key_id:
        raise WrongWatchlistKeyError(
            f"wrong key for {path}: it was encrypted with key {header.key_id}, "
            f"the key given is {key.key_id}"
        )
    altered = WatchlistError(f"{path} is damaged or has been altered")
    try:
        cipher = DataCipher.unwrap(
            key, base64.b64decode(wrapped, validate=True), _CONTEXT
        )
    except (WrongKeyError, ValueError):
        raise altered from None
    size = len(sealed) - _NONCE - _TAG
    plain = SecureBuffer(max(size, 1))
    try:
        # No exception may leave while a view of `plain` is alive (a traceback would
        # hold it, and the buffer could not be closed and wiped).
        view = plain.array(np.uint8, (size,))
        try:
            cipher.open_into(sealed, aad, view)
            unpacked = _unpack(view, header)
        except InvalidTag:
            unpacked = None
        del view
    finally:
        cipher.close()
        plain.discard()
    if unpacked is None:
        raise altered
    subjects, templates = unpacked
    return Opened(header, key, subjects, templates, file_sha256(aad, sealed))


def _unpack(
    view: np.ndarray, header: Header
) -> tuple[list[dict[str, Any]], SecureBuffer] | None:
    """Subjects and templates from the plaintext, or None if it is inconsistent."""
    size = view.size
    if size < 4:
        return None
    n = int(view[:4].view("<u4")[0])
    rows, dim = header.templates, header.dim
    if 4 + n + rows * dim * 4 != size:
        return None
    try:
        # Decoded from the secure buffer itself: no bytes copy. The str and the
        # records parsed from it are the watchlist's subjects in the Python heap
        # (docs/data-handling.md names them).
        subjects = json.loads(str(view[4 : 4 + n].data, "utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(subjects, list) or len(subjects) != header.subjects:
        return None
    templates = SecureBuffer(max(rows * dim * 4, 1))
    out = templates.array(np.uint8, (rows * dim * 4,))
    out[:] = view[4 + n :]
    del out
    return subjects, templates


def write(
    path: Path,
    header: Header,
    key: KeyProvider,
    subjects: list[dict[str, Any]],
    templates: np.ndarray,
) -> str:
    """Encrypts and writes a watchlist atomically (temp file, fsync, rename).

    ``templates`` is ``float32[rows, dim]`` (normally a secure buffer view); the
    plaintext payload is assembled in a secure buffer that is wiped at once.
    """
    meta = json.dumps(subjects, sort_keys=True, separators=(",", ":")).encode()
    with DataCipher.generate() as cipher:
        wrapped = base64.b64encode(cipher.wrap(key, _CONTEXT)).decode()
        return _write_sealed(path, header, cipher, wrapped, meta, templates)


def _write_sealed(
    path: Path,
    header: Header,
    cipher: DataCipher,
    wrapped: str,
    meta: bytes,
    templates: np.ndarray,
) -> str:
    """:func:`write` with the data key's cipher in hand."""
    fields = header.to_json()
    fields["wrapped_key"] = wrapped
    raw = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    aad = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(raw)) + raw
    body = templates.astype("<f4", copy=False).reshape(-1).view(np.uint8)
    size = 4 + len(meta) + body.size
    with SecureBuffer(size) as plain:
        view = plain.array(np.uint8, (size,))
        view[:4] = np.frombuffer(struct.pack("<I", len(meta)), np.uint8)
        view[4 : 4 + len(meta)] = np.frombuffer(meta, np.uint8)
        view[4 + len(meta) :] = body
        sealed = cipher.seal(view, aad)
        del view, body
    write_file(path, aad + sealed, 0o600, overwrite=True)
    return file_sha256(aad, sealed)
