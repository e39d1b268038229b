"""The alert store's SQLite repository: every SQL statement, and nothing else.

:class:`SqliteRepository` keeps the rows of :mod:`lfr.alerts.rows` in one SQLite
file (WAL journal, ``synchronous=FULL``, ``secure_delete=ON``); the layout,
creation and the read-only check on open are in :mod:`lfr.alerts.schema`. It
never sees a key or a plaintext, and applies no retention rule: it stores,
reads, shreds and buries what :class:`lfr.alerts.AlertStore` tells it to.

It satisfies :class:`lfr.protocols.AlertRepository`, the seam where another
database (PostgreSQL, say) would plug in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from lfr.alerts.rows import AlertRow, HoldRow, RetentionRow, ReviewRow
from lfr.alerts.schema import _create, _validate
from lfr.errors import AlertStoreError

__all__ = ["SqliteRepository"]

#: The meta entry that holds the clock's high-water mark (µs since the epoch).
_HIGH_WATER = "clock_high_water"
#: The meta entries that name the chain's latest audit log and its head.
_CHAIN = ("chain_log_id", "chain_records", "chain_head")
#: How long a statement waits for another connection's lock (ms).
_BUSY_MS = 30_000
#: How long a purge's checkpoint waits for readers, per try (ms).
_COMPACT_BUSY_MS = 100
_log = logging.getLogger(__name__)

_PRAGMAS = (
    "synchronous=FULL",
    "secure_delete=ON",
    "temp_store=MEMORY",
    "cell_size_check=ON",
    "journal_size_limit=0",
)
_ALERT = "SELECT alert_id, expires, wrapped_key, record, crop FROM alerts"
_HOLD = "SELECT seq, alert_id, action, until, sealed FROM holds"
# Each alert's plaintext and the latest entry of its hold history.
_RETENTION = (
    "SELECT a.alert_id, a.expires, a.wrapped_key IS NULL, h.action, h.until"
    " FROM alerts AS a LEFT JOIN holds AS h ON h.seq ="
    " (SELECT max(seq) FROM holds WHERE alert_id = a.alert_id) ORDER BY a.seq"
)


class SqliteRepository:
    """Alert rows in one SQLite file; one connection shared by threads, behind a lock.

    Making one creates the file if it does not exist (with the metadata record
    ``new_meta()`` returns) and checks an existing one (format, version, damage)
    without writing to it; :meth:`connect` then opens it for reading and
    writing. Between the two, the caller checks the key against :attr:`meta`,
    so that a wrong key leaves the file as it was.

    Args:
        path: The store file. Its directory must exist.
        new_meta: Makes the key part of a new store's metadata record; called
            only when the file does not exist.

    Raises:
        AlertStoreError: The file is not an lfr alert store, is damaged, or has
            an unknown format version (the file is left as it was).
    """

    def __init__(self, path: Path, new_meta: Callable[[], Mapping[str, str]]) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._compact_pending = False
        if not os.path.lexists(path):
            _create(path, new_meta())
        self._meta = _validate(path)

    def connect(self) -> None:
        """Opens the file for reading and writing (WAL journal and pragmas).

        Raises:
            AlertStoreError: SQLite cannot open it, or refuses the WAL journal
                (the repository is then closed).
        """
        try:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=_BUSY_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise AlertStoreError(
                f"cannot open alert store {self._path}: {exc}"
            ) from exc
        self._conn = conn
        try:
            with self.session():
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise AlertStoreError(
                        f"alert store {self._path}: SQLite refused the WAL journal"
                    )
                for pragma in _PRAGMAS:
                    conn.execute(f"PRAGMA {pragma}")
        except BaseException:
            self.close()
            raise

    # -- state -------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    @property
    def meta(self) -> Mapping[str, str]:
        """The store's metadata record, as checked on open."""
        return dict(self._meta)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (or :meth:`connect` has not)."""
        return self._conn is None

    @property
    def compact_pending(self) -> bool:
        """Whether deleted rows may still be in the ``-wal`` file."""
        return self._compact_pending

    def close(self) -> None:
        """Closes the connection (SQLite checkpoints and removes the WAL)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # -- sessions and transactions --------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Holds the connection for this thread; SQLite errors become AlertStoreError.

        Raises:
            ValueError: The repository is closed.
        """
        with self._lock:
            if self._conn is None:
                raise ValueError("the alert store is closed")
            try:
                yield
            except sqlite3.Error as exc:
                raise AlertStoreError(f"alert store {self._path}: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), in a session."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("the alert store is closed")
        return self._conn

    # -- the clock's high-water mark ------------------------------------------------

    def high_water(self) -> int | None:
        """The latest time (µs since the epoch) any write to the store was made at."""
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT value FROM meta WHERE name = ?", (_HIGH_WATER,))
                .fetchone()
            )
        try:
            return None if row is None else int(row[0])
        except ValueError:
            return None

    def raise_high_water(self, now_us: int) -> None:
        """Moves the mark up to ``now_us`` (never down); in a write transaction."""
        conn = self._connection()
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
            " SET value = excluded.value"
            " WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
            (_HIGH_WATER, str(int(now_us))),
        )

    # -- the chain of audit logs ----------------------------------------------

    def chain(self) -> tuple[str, int, str] | None:
        """``(log_id, records, head)`` of the chain's latest log, as last recorded."""
        with self._lock:
            rows = dict(
                self._connection()
                .execute("SELECT name, value FROM meta WHERE name IN (?, ?, ?)", _CHAIN)
                .fetchall()
            )
        log_id, records, head = (rows.get(name) for name in _CHAIN)
        if log_id is None or records is None or head is None:
            return None
        try:
            return str(log_id), int(records), str(head)
        except ValueError:
            return None

    def set_chain(self, log_id: str, records: int, head: str) -> None:
        """Records the chain's latest log and head (in a write transaction)."""
        self._connection().executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
            " SET value = excluded.value",
            zip(_CHAIN, (log_id, str(int(records)), head)),
        )

    def counts(self) -> tuple[int, int, int]:
        """``(live, shredded, tombstones)``: alerts with their key, without, buried."""
        conn = self._connection()
        live, shredded = conn.execute(
            "SELECT count(wrapped_key), count(*) - count(wrapped_key) FROM alerts"
        ).fetchone()
        (buried,) = conn.execute("SELECT count(*) FROM tombstones").fetchone()
        return int(live), int(shredded), int(buried)

    # -- alerts ------------------------------------------------------------------

    def alert(self, alert_id: str) -> AlertRow | None:
        """The alert's row, or ``None`` if there is none (see :meth:`purged_at`)."""
        row = (
            self._connection()
            .execute(f"{_ALERT} WHERE alert_id = ?", (alert_id,))
            .fetchone()
        )
        return None if row is None else AlertRow(*row)

    def alerts(self) -> list[AlertRow]:
        """Every alert row, shredded ones included, in insertion order."""
        return [
            AlertRow(*row)
            for row in self._connection().execute(f"{_ALERT} ORDER BY seq")
        ]

    def retention(self) -> list[RetentionRow]:
        """Every alert's plaintext and latest hold entry, in insertion order."""
        rows = self._connection().execute(_RETENTION)
        return [
            RetentionRow(alert_id, expires, bool(shredded), action, until)
            for alert_id, expires, shredded, action, until in rows
        ]

    def insert(self, row: AlertRow) -> None:
        """Stores a new alert."""
        self._connection().execute(
            "INSERT INTO alerts (alert_id, expires, wrapped_key, record, crop)"
            " VALUES (?, ?, ?, ?, ?)",
            (row.alert_id, row.expires_us, row.wrapped_key, row.record, row.crop),
        )

    def replace_sealed(self, alert_id: str, record: bytes, crop: bytes) -> None:
        """Replaces an alert's sealed record and crop."""
        self._connection().execute(
            "UPDATE alerts SET record = ?, crop = ? WHERE alert_id = ?",
            (record, crop, alert_id),
        )

    # -- holds and reviews -------------------------------------------------------

    def holds(self, alert_id: str) -> list[HoldRow]:
        """The alert's hold history, oldest first."""
        return [
            HoldRow(*row)
            for row in self._connection().execute(
                f"{_HOLD} WHERE alert_id = ? ORDER BY seq", (alert_id,)
            )
        ]

    def add_hold(self, row: HoldRow) -> None:
        """Appends an entry to a hold history."""
        self._connection().execute(
            "INSERT INTO holds (seq, alert_id, action, until, sealed)"
            " VALUES (?, ?, ?, ?, ?)",
            (row.seq, row.alert_id, row.action, row.until_us, row.sealed),
        )

    def reviews(self, alert_id: str) -> list[ReviewRow]:
        """The alert's reviews, oldest first."""
        return [
            ReviewRow(*row)
            for row in self._connection().execute(
                "SELECT seq, alert_id, sealed FROM reviews WHERE alert_id = ?"
                " ORDER BY seq",
                (alert_id,),
            )
        ]

    def add_review(self, row: ReviewRow) -> None:
        """Appends a review."""
        self._connection().execute(
            "INSERT INTO reviews (seq, alert_id, sealed) VALUES (?, ?, ?)",
            (row.seq, row.alert_id, row.sealed),
        )

    def next_seq(self, kind: Literal["holds", "reviews"]) -> int:
        """The seq the next hold entry or review gets (inside the transaction)."""
        if kind not in ("holds", "reviews"):
            raise ValueError(f"no sequence {kind!r}")
        row = (
            self._connection()
            .execute(f"SELECT coalesce(max(seq), 0) + 1 FROM {kind}")
            .fetchone()
        )
        return int(row[0])

    # -- purging -----------------------------------------------------------------

    def shred(self, alert_ids: Sequence[str]) -> None:
        """Overwrites the alerts' wrapped keys with zeros, then sets them NULL."""
        conn = self._connection()
        ids = [(alert_id,) for alert_id in alert_ids]
        conn.executemany(
            "UPDATE alerts SET wrapped_key = zeroblob(length(wrapped_key))"
            " WHERE alert_id = ?",
            ids,
        )
        conn.executemany("UPDATE alerts SET wrapped_key = NULL WHERE alert_id = ?", ids)

    def bury(self, purged_us: int) -> list[str]:
        """Replaces every shredded alert by a tombstone; returns their ids.

        Its holds and reviews go with it (and any left by an alert already gone).
        The ids are in insertion order; rows shredded by an earlier call to
        :meth:`shred` that was not buried are buried too.
        """
        conn = self._connection()
        gone = [
            row[0]
            for row in conn.execute(
                "SELECT alert_id FROM alerts WHERE wrapped_key IS NULL ORDER BY seq"
            )
        ]
        conn.execute(
            "INSERT OR IGNORE INTO tombstones (alert_id, expires, purged)"
            " SELECT alert_id, expires, ? FROM alerts WHERE wrapped_key IS NULL",
            (purged_us,),
        )
        conn.execute("DELETE FROM alerts WHERE wrapped_key IS NULL")
        for table in ("holds", "reviews"):
            conn.execute(
                f"DELETE FROM {table} WHERE alert_id NOT IN"
                " (SELECT alert_id FROM alerts)"
            )
        return gone

    def purged_at(self, alert_id: str) -> int | None:
        """When the alert was buried (its tombstone), or ``None``."""
        row = (
            self._connection()
            .execute("SELECT purged FROM tombstones WHERE alert_id = ?", (alert_id,))
            .fetchone()
        )
        if row is None:
            return None
        purged: int = row[0]  # as stored; AlertStore checks it is an integer
        return purged

    def tombstones(self) -> list[str]:
        """The ids of every buried alert, oldest burial first."""
        return [
            row[0]
            for row in self._connection().execute(
                "SELECT alert_id FROM tombstones ORDER BY purged, alert_id"
            )
        ]

    def compact(self) -> bool:
        """Moves the WAL into the file, truncates it and vacuums; whether it is clean.

        Outside any transaction. When a reader blocks the checkpoint,
        :attr:`compact_pending` stays ``True`` (logged) and a later call tries
        again.
        """
        conn = self._connection()
        # A reader that holds the WAL makes a checkpoint wait on SQLite's busy
        # handler: not for the 30 s writes may wait, but briefly; the caller
        # (lfr.alerts.Records) retries within its own bound.
        conn.execute(f"PRAGMA busy_timeout={_COMPACT_BUSY_MS}")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            conn.execute("VACUUM")
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as exc:
            self._compact_pending = True
            _log.info("purge could not compact the alert store yet: %s", exc)
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        self._compact_pending = bool(busy)
        if busy:
            _log.info("purge could not truncate the WAL yet: a reader holds it")
        return not self._compact_pending
