"""The alert store's SQLite layout: schema, creation and the read-only check on open.

Used by :class:`lfr.alerts.repository.SqliteRepository`. It handles no key: the
key fields of the metadata record (``key_id``, ``store_id``, ``created``,
``key_check``) are made and checked by :class:`lfr.alerts.sealing.Sealer`. See
:mod:`lfr.alerts` for what is stored and docs/retention.md for why.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Mapping
from pathlib import Path

from lfr.alerts.rows import FORMAT as _FORMAT
from lfr.alerts.rows import FORMAT_VERSION
from lfr.errors import AlertStoreError

__all__ = ["FORMAT_VERSION"]

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


def _create(path: Path, key_meta: Mapping[str, str]) -> None:
    """Writes an empty store beside ``path``, then links it into place.

    ``key_meta`` is the key part of the metadata record
    (:meth:`lfr.alerts.sealing.Sealer.new_meta`), stored after the format.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    meta = {"format": _FORMAT, "version": str(FORMAT_VERSION), **key_meta}
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


def read_only_uri(path: Path) -> str:
    """An SQLite URI that opens the store file without writing to it.

    Read-only; "immutable" also keeps SQLite from creating -wal/-shm files when
    there is no WAL to read (a store closed cleanly).
    """
    uri = path.absolute().as_uri() + "?mode=ro"
    if not os.path.exists(f"{path}-wal"):
        uri += "&immutable=1"
    return uri


def _validate(path: Path) -> dict[str, str]:
    """Checks an existing store without writing to it; returns its metadata."""
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
    uri = read_only_uri(path)
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
    return {str(name): str(value) for name, value in meta.items()}
