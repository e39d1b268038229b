"""The alert store's envelope encryption (no SQL, no retention rules).

Each alert has its own random AES-256-GCM data key, wrapped by the store key (a
:class:`lfr.keys.KeyProvider`); the wrapped key, the sealed record and crop, and
each sealed hold and review entry are what a repository stores. Every ciphertext
is bound, as associated data, to the store, its role and its row
(:meth:`Sealer.context`): a ciphertext moved to another alert, another role or
another store, or an edited expiry, hold end or sequence number, fails to open.

The store's key check (a data key wrapped when the store was made) tells a wrong
key from a damaged store on open.

Data keys exist only inside :class:`~lfr.ciphers.DataCipher` buffers (secure memory):
an :class:`AlertKey` owns its cipher and :meth:`AlertKey.close` (or dropping it)
wipes the key. Records, holds and reviews are decrypted into a secure buffer and
decoded from there, so the only plaintext copies in the Python heap are the decoded
``str`` and the values parsed from it (docs/data-handling.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag

from lfr.alerts.rows import FORMAT, FORMAT_VERSION, HoldAction, HoldRow, ReviewRow
from lfr.ciphers import DataCipher
from lfr.errors import AlertStoreError, WrongKeyError, WrongStoreKeyError
from lfr.keys import KeyProvider
from lfr.secure import SecureBuffer

__all__ = [
    "SEAL_OVERHEAD",
    "AlertKey",
    "AlteredError",
    "Sealer",
    "context",
    "plaintext_size",
]

#: Bytes a sealed value has beyond its plaintext: nonce + GCM tag.
SEAL_OVERHEAD = 12 + 16


class AlteredError(AlertStoreError):
    """A sealed value failed authentication (altered, moved, or another key's).

    Internal to the store, which turns it into an :class:`AlertStoreError` that
    names the alert; an :class:`AlertStoreError` itself should one ever escape.
    """


def context(store_id: str, label: str, *parts: object) -> bytes:
    """Associated data binding a ciphertext to this store, its role and its row."""
    return json.dumps(
        [FORMAT, FORMAT_VERSION, store_id, label, *parts], separators=(",", ":")
    ).encode()


def plaintext_size(sealed: bytes) -> int:
    """The size of what ``sealed`` opens to.

    Raises:
        AlteredError: It is too short to be a sealed value.
    """
    if len(sealed) < SEAL_OVERHEAD:
        raise AlteredError
    return len(sealed) - SEAL_OVERHEAD


class Sealer:
    """Seals and opens one store's alerts with its store key.

    Args:
        key: The store key.
        meta: The store's metadata record (``key_id``, ``store_id``,
            ``created``, ``key_check``), as its repository read it.
        where: Names the store in error messages (``"alert store PATH"``).

    Raises:
        WrongStoreKeyError: The store was made with another key (both ids named).
        AlertStoreError: The key check does not open: the metadata was altered.
    """

    def __init__(self, key: KeyProvider, meta: Mapping[str, str], where: str) -> None:
        stored_id = str(meta.get("key_id"))
        if stored_id != key.key_id:
            raise WrongStoreKeyError(
                f"{where} was created with key {stored_id}, not with the "
                f"key given ({key.key_id}); an alert store has its own key, "
                "separate from the watchlist's (lfr run --store-key)"
            )
        store_id, created = str(meta.get("store_id")), str(meta.get("created"))
        try:
            DataCipher.unwrap(
                key,
                bytes.fromhex(str(meta.get("key_check"))),
                context(store_id, "check", created),
            ).close()
        except (WrongKeyError, ValueError):
            raise AlertStoreError(
                f"{where} is damaged: its metadata was altered"
            ) from None
        self._key = key
        self._store_id = store_id

    @staticmethod
    def new_meta(key: KeyProvider, created: str) -> dict[str, str]:
        """The key part of a new store's metadata: a new store id and key check.

        Args:
            key: The store key.
            created: When the store is made (ISO 8601).

        Returns:
            ``key_id``, ``store_id``, ``created`` and ``key_check`` (hex), in
            that order.
        """
        store_id = str(uuid.uuid4())
        with DataCipher.generate() as check:
            wrapped = check.wrap(key, context(store_id, "check", created))
        return {
            "key_id": key.key_id,
            "store_id": store_id,
            "created": created,
            "key_check": wrapped.hex(),
        }

    @property
    def store_id(self) -> str:
        """The store's random id, bound into every associated data."""
        return self._store_id

    def context(self, label: str, *parts: object) -> bytes:
        """Associated data for a ciphertext of this store (see :func:`context`)."""
        return context(self._store_id, label, *parts)

    def new_key(self, alert_id: str, expires_us: int) -> tuple[bytes, AlertKey]:
        """A fresh data key for a new alert: the wrapped key, and its cipher."""
        cipher = DataCipher.generate()
        try:
            wrapped = cipher.wrap(self._key, self.context("key", alert_id, expires_us))
        except BaseException:
            cipher.close()
            raise
        return wrapped, AlertKey(self, alert_id, expires_us, cipher)

    def open_key(self, alert_id: str, expires_us: int, wrapped: bytes) -> AlertKey:
        """Unwraps an alert's data key.

        Raises:
            AlteredError: The wrapped key does not belong to this alert and expiry.
        """
        try:
            cipher = DataCipher.unwrap(
                self._key, bytes(wrapped), self.context("key", alert_id, expires_us)
            )
        except WrongKeyError:
            raise AlteredError from None
        return AlertKey(self, alert_id, expires_us, cipher)


class AlertKey:
    """One alert's unwrapped data key: seals and opens its record, crop and entries.

    It owns the alert's :class:`~lfr.ciphers.DataCipher`: :meth:`close` (or the
    end of its ``with`` block, or dropping the last reference) wipes the data key,
    and a closed key refuses every use (``ValueError``). Every ``open_*`` raises
    :class:`AlteredError` when the value does not authenticate.
    """

    __slots__ = ("_cipher", "_sealer", "alert_id", "expires_us")

    def __init__(
        self, sealer: Sealer, alert_id: str, expires_us: int, cipher: DataCipher
    ) -> None:
        self._sealer = sealer
        self._cipher = cipher
        self.alert_id = alert_id
        self.expires_us = expires_us

    def close(self) -> None:
        """Wipes the data key (idempotent)."""
        self._cipher.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._cipher.closed

    def __enter__(self) -> AlertKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _aad(self, label: str) -> bytes:
        return self._sealer.context(label, self.alert_id, self.expires_us)

    def _open(self, sealed: bytes, aad: bytes) -> bytes:
        try:
            return self._cipher.open(sealed, aad)
        except InvalidTag:
            raise AlteredError from None

    def _open_text(self, sealed: bytes, aad: bytes) -> str:
        """Opens a UTF-8 value in a secure buffer and decodes it from there.

        No ``bytes`` copy of the plaintext is made; the returned ``str`` is the
        one copy in the Python heap (it cannot be wiped).
        """
        size = plaintext_size(sealed)
        with SecureBuffer(max(size, 1), allow_unlocked=True) as plain:
            view = plain.array(np.uint8, (size,))
            try:
                self._cipher.open_into(sealed, aad, view)
                return str(view.data, "utf-8")
            except InvalidTag:
                raised = True
            except UnicodeDecodeError:
                raised = False
            finally:
                del view
        if raised:
            raise AlteredError
        raise ValueError("the value is not UTF-8 text")

    def seal_record(self, plaintext: Any) -> bytes:
        """Seals the record (any bytes-like plaintext, which the caller wipes)."""
        return self._cipher.seal(plaintext, self._aad("record"))

    def open_record(self, sealed: bytes) -> str:
        """Opens the record (JSON text, decoded from secure memory)."""
        return self._open_text(sealed, self._aad("record"))

    def seal_crop(self, encoded: Any) -> bytes:
        """Seals the encoded crop (any bytes-like, a numpy array included)."""
        return self._cipher.seal(encoded, self._aad("crop"))

    def open_crop(self, sealed: bytes) -> bytes:
        """Opens the crop."""
        return self._open(sealed, self._aad("crop"))

    def open_crop_into(self, sealed: bytes, out: Any) -> None:
        """Opens the crop straight into ``out`` (of :func:`plaintext_size` bytes)."""
        try:
            self._cipher.open_into(sealed, self._aad("crop"), out)
        except InvalidTag:
            raise AlteredError from None

    def seal_hold(
        self, seq: int, action: HoldAction, until_us: int | None, plaintext: bytes
    ) -> bytes:
        """Seals a hold-history entry, bound to its seq, action and end."""
        aad = self._sealer.context("hold", self.alert_id, seq, action, until_us)
        return self._cipher.seal(plaintext, aad)

    def open_hold(self, row: HoldRow) -> str:
        """Opens a hold-history entry (also checking its seq, action and end)."""
        aad = self._sealer.context(
            "hold", self.alert_id, row.seq, row.action, row.until_us
        )
        return self._open_text(row.sealed, aad)

    def seal_review(self, seq: int, plaintext: bytes) -> bytes:
        """Seals a review, bound to its seq."""
        return self._cipher.seal(
            plaintext, self._sealer.context("review", self.alert_id, seq)
        )

    def open_review(self, row: ReviewRow) -> str:
        """Opens a review (also checking its seq)."""
        return self._open_text(
            row.sealed, self._sealer.context("review", self.alert_id, row.seq)
        )

    def seal_entry(self, label: str, seq: int, plaintext: Any) -> bytes:
        """Seals one numbered entry of a role (a preview recording's frames)."""
        aad = self._sealer.context(label, self.alert_id, self.expires_us, seq)
        return self._cipher.seal(plaintext, aad)

    def open_entry(self, label: str, seq: int, sealed: bytes) -> bytes:
        """Opens an entry sealed by :meth:`seal_entry` with this label and seq."""
        aad = self._sealer.context(label, self.alert_id, self.expires_us, seq)
        return self._open(sealed, aad)
