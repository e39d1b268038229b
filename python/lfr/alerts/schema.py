"""The alert store's SQLite layout: schema, creation and the read-only check on open.

See :mod:`lfr.alerts` for what is stored and docs/retention.md for why.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from lfr.alerts.values import _wipe
from lfr.errors import AlertStoreError, WrongKeyError
from lfr.keys import KeyProvider, new_data_key

#: The alert store format this lfr reads and writes (SQLite ``user_version``).
FORMAT_VERSION = 1
_FORMAT = "lfr-alert-store"
_APPLICATION_ID = 0x4C465241  # "LFRA", SQLite header offset 68
_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = ("meta", "alerts", "holds", "reviews", "tombstones")
_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # seq keeps insertion order through VACUUM (an implicit rowid may change).
    "CREATE TABLE alerts (seq INTEGER PRIMARY KEY, alert_id TEXT NOT NULL UNIQUE,"
    " expires INTEGER NOT NULL, wrapped_key BLOB, record BLOB NOT NULL,"
    " crop BLOB NOT NULL)",
    "CREATE INDEX alerts_expires ON alerts (expires)",
    "CREATE TABLE holds (seq INTEGER PRIMARY KEY, alert_id TEXT NOT NULL,"
    " action TEXT NOT NULL CHECK (action IN ('hold', 'release')), until INTEGER,"
    " sealed BLOB NOT NULL)",
    "CREATE INDEX holds_alert ON holds (alert_id, seq)",
    "CREATE TABLE reviews (seq INTEGER PRIMARY KEY, alert_id TEXT NOT NULL,"
    " sealed BLOB NOT NULL)",
    "CREATE INDEX reviews_alert ON reviews (alert_id, seq)",
    "CREATE TABLE tombstones (alert_id TEXT PRIMARY KEY, expires INTEGER NOT NULL,"
    " purged INTEGER NOT NULL)",
)
# Live: key not destroyed, and not expired or on a hold that has not ended (by the
# plaintext columns; reads then authenticate the hold).
_LIVE = (
    " FROM alerts AS a WHERE a.wrapped_key IS NOT NULL AND (a.expires > :now OR"
    " EXISTS (SELECT 1 FROM holds AS h WHERE h.seq = (SELECT max(seq) FROM holds"
    " WHERE alert_id = a.alert_id) AND h.action = 'hold' AND h.until > :now))"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_SEAL_OVERHEAD = 12 + 16  # nonce + GCM tag
#: How far an alert's time may be ahead of the store's clock (camera clock skew).
_SKEW = timedelta(minutes=1)


def _create(path: Path, key: KeyProvider, now: datetime) -> None:
    """Writes an empty store beside ``path``, then links it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    store_id = str(uuid.uuid4())
    created = now.isoformat()
    check = new_data_key()
    try:
        wrapped = key.wrap(check, _context(store_id, "check", created))
    finally:
        _wipe(check)
    meta = {
        "format": _FORMAT,
        "version": str(FORMAT_VERSION),
        "key_id": key.key_id,
        "store_id": store_id,
        "created": created,
        "key_check": wrapped.hex(),
    }
    try:
        # Owner-only from the start; SQLite gives -wal and -shm the same mode.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)", meta.items()
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # Made by someone else meanwhile: it is then checked like any other.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except sqlite3.Error as exc:
        raise AlertStoreError(f"cannot create alert store {path}: {exc}") from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)


def _validate(path: Path, key: KeyProvider) -> str:
    """Checks an existing store without writing to it; returns its store id."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise AlertStoreError(
            f"cannot read alert store {path}: {exc.strerror}"
        ) from None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise AlertStoreError(f"{path} is not an lfr alert store")
    if int.from_bytes(header[68:72], "big") != _APPLICATION_ID:
        raise AlertStoreError(
            f"{path} is an SQLite database but not an lfr alert store"
        )
    version = int.from_bytes(header[60:64], "big")
    if version != FORMAT_VERSION:
        raise AlertStoreError(
            f"{path} is an alert store of format version {version}; this lfr reads "
            f"version {FORMAT_VERSION}"
        )
    # Read-only; "immutable" also keeps SQLite from creating -wal/-shm files when
    # there is no WAL to read (a store closed cleanly).
    uri = path.absolute().as_uri() + "?mode=ro"
    if not os.path.exists(f"{path}-wal"):
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            if conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise AlertStoreError(f"alert store {path} is damaged")
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'"
                )
            }
            if not set(_TABLES) <= tables:
                raise AlertStoreError(f"alert store {path} is damaged (tables missing)")
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AlertStoreError(f"alert store {path} is damaged: {exc}") from None
    if meta.get("format") != _FORMAT or meta.get("version") != str(FORMAT_VERSION):
        raise AlertStoreError(f"alert store {path} is damaged (format record)")
    stored_id = str(meta.get("key_id"))
    if stored_id != key.key_id:
        raise WrongKeyError(
            f"alert store {path} was created with key {stored_id}, not with the "
            f"key given ({key.key_id})"
        )
    store_id, created = str(meta.get("store_id")), str(meta.get("created"))
    try:
        check = key.unwrap(
            bytes.fromhex(str(meta.get("key_check"))),
            _context(store_id, "check", created),
        )
    except (WrongKeyError, ValueError):
        raise AlertStoreError(
            f"alert store {path} is damaged: its metadata was altered"
        ) from None
    _wipe(check)
    return store_id


def _context(store_id: str, label: str, *parts: object) -> bytes:
    """Associated data binding a ciphertext to this store, its role and its row."""
    return json.dumps(
        [_FORMAT, FORMAT_VERSION, store_id, label, *parts], separators=(",", ":")
    ).encode()


def _hold_rows(conn: sqlite3.Connection, alert_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT seq, action, until, sealed FROM holds WHERE alert_id = ? ORDER BY seq",
        (alert_id,),
    ).fetchall()


def _next_seq(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {table}").fetchone()
    return int(row[0])
