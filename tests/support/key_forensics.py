"""Child process of tests/integration/test_key_forensics.py.

``python -m tests.support.key_forensics MODE FOLDER``: reads every alert of the store
in FOLDER (made by the test: ``alerts.db``, ``audit.log``, ``store.key``,
``signing.key``) through :class:`lfr.alerts.Records`, closes it, and then waits, so
that the test can scan this process's whole memory from outside for every data key of
the store (the key check and each alert's key) without disturbing its heap.

Protocol on stdout, one JSON line each: ``{"mask": ..., "keys": [...]}`` (the masked
keys, hex), then ``{"read": ..., ...}`` once the store is closed; the child then exits
when a line arrives on stdin.

The data keys are learnt first, independently of the code under test: each wrapped
key is unwrapped with :meth:`lfr.Key.unwrap_into` into a secure buffer, XOR-masked
with a random mask (:mod:`tests.support.keyscan`), and the buffer closed (wiped and
unmapped) before the store is opened. The store key is destroyed before the scan.

MODE ``lfr`` reads with lfr's own code. Two negative controls break the discipline:
``bytes`` puts back the unwrap path lfr had before (``Key.unwrap``: a ``bytearray`` made
from the ``bytes`` that ``AESGCM.decrypt`` returns) and keeps those ``bytearray``s
unwiped (as a leak or a cache would); ``kept`` keeps every alert's key (its
:class:`~lfr.ciphers.DataCipher`) past the store's close.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import sys
from pathlib import Path

import lfr
from lfr.alerts import Records
from lfr.alerts.sealing import AlertKey, AlteredError, Sealer, context
from lfr.audit import SigningKey
from lfr.ciphers import DataCipher
from lfr.errors import WrongKeyError
from tests.support.keyscan import U64, mask_key, new_mask


def reference_keys(store: Path, key: lfr.Key, mask: U64) -> list[U64]:
    """Every data key of ``store``, masked; the key check first."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        rows = conn.execute(
            "SELECT alert_id, expires, wrapped_key FROM alerts ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    store_id = str(meta["store_id"])
    wrapped = [
        (
            bytes.fromhex(str(meta["key_check"])),
            context(store_id, "check", str(meta["created"])),
        )
    ]
    wrapped += [
        (bytes(w), context(store_id, "key", str(a), int(e))) for a, e, w in rows
    ]
    out = []
    for blob, aad in wrapped:
        with lfr.SecureBuffer(32, allow_unlocked=True) as buf:
            view = buf.memoryview()
            key.unwrap_into(blob, aad, view)
            out.append(mask_key(view, mask))
            view.release()
    return out


def bytes_open_key(
    self: Sealer, alert_id: str, expires_us: int, wrapped: bytes
) -> AlertKey:
    """The unwrap path before issue 15, through ``bytes``; the copy is kept."""
    try:
        data_key = self._key.unwrap(
            bytes(wrapped), self.context("key", alert_id, expires_us)
        )
    except WrongKeyError:
        raise AlteredError from None
    _KEPT_BYTES.append(data_key)
    return AlertKey(self, alert_id, expires_us, DataCipher.from_key(data_key))


_KEPT: list[AlertKey] = []
_KEPT_BYTES: list[bytearray] = []
_OPEN_KEY = Sealer.open_key


def kept_open_key(
    self: Sealer, alert_id: str, expires_us: int, wrapped: bytes
) -> AlertKey:
    """lfr's unwrap, but every key is kept (never closed, never dropped)."""
    key = _OPEN_KEY(self, alert_id, expires_us, wrapped)
    _KEPT.append(key)
    return key


_MODES = {"lfr": _OPEN_KEY, "bytes": bytes_open_key, "kept": kept_open_key}


def main(mode: str, folder: Path) -> int:
    key = lfr.Key.from_file(folder / "store.key")
    signing = SigningKey.load(folder / "signing.key")
    mask = new_mask()
    masked = reference_keys(folder / "alerts.db", key, mask)
    print(
        json.dumps(
            {"mask": mask.tobytes().hex(), "keys": [m.tobytes().hex() for m in masked]}
        ),
        flush=True,
    )
    del masked
    Sealer.open_key = _MODES[mode]  # type: ignore[method-assign]
    read = holds = reviews = 0
    with Records.open(
        folder / "alerts.db", key, folder / "audit.log", signing
    ) as records:
        for alert in records.store.alerts():
            again = records.store.get(alert.alert_id)
            holds += len(records.store.holds(alert.alert_id))
            reviews += len(again.reviews)
            read += 1
        del alert, again
    key.destroy()
    gc.collect()
    print(json.dumps({"read": read, "holds": holds, "reviews": reviews}), flush=True)
    sys.stdin.readline()  # the test scans this process now
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
