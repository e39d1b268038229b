"""What an alert store holds, read for an auditor without changing it.

:func:`survey_store` opens a store file read-only (SQLite ``mode=ro``) and lists
what an auditor can check against the chain of audit logs without the store's
key: the ids of its live alerts, the ids it purged (tombstones, and rows whose
key a purge destroyed), its id and its chain record
(:attr:`lfr.AlertStore.chain`). Ids and expiries are the store's only plaintext;
nothing sealed is read. With the store's key, it also checks that the key is
this store's and that every live alert's data key belongs to its id and expiry.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from lfr.alerts.schema import _validate, read_only_uri
from lfr.alerts.sealing import AlteredError, Sealer
from lfr.audit.log import LogHead
from lfr.errors import AlertStoreError
from lfr.keys import KeyProvider

__all__ = ["StoreSurvey", "survey_store"]


@dataclass(frozen=True)
class StoreSurvey:
    """The plaintext of an alert store, for checking it against its audit logs.

    Attributes:
        path: The store file.
        store_id: Its random id (``deployment_started`` records name it).
        alerts: The ids of the alerts it holds with their key, oldest first.
        purged: The ids it purged: rows whose key is destroyed, then tombstones.
        chain: The latest log of its chain and the head it saw, or ``None``.
        key_checked: Whether a key was given and is the store's.
        unreadable: Live alerts whose data key does not belong to their id and
            expiry (checked only with the key; empty otherwise).
    """

    path: str
    store_id: str
    alerts: tuple[str, ...]
    purged: tuple[str, ...]
    chain: LogHead | None
    key_checked: bool = False
    unreadable: tuple[str, ...] = ()


def survey_store(
    path: str | os.PathLike[str], key: KeyProvider | None = None
) -> StoreSurvey:
    """Reads what a store holds, without writing to it.

    Args:
        path: The store file (a copy is best: a running deployment may be
            writing the original).
        key: The store's key, to check it and the alerts' data keys; ``None``
            to read only the plaintext.

    Returns:
        The survey.

    Raises:
        AlertStoreError: It is not an lfr alert store, or it is damaged.
        WrongKeyError: ``key`` is not the store's key.
    """
    where = Path(path)
    meta = _validate(where)
    sealer = None if key is None else Sealer(key, meta, f"alert store {where}")
    try:
        conn = sqlite3.connect(read_only_uri(where), uri=True, isolation_level=None)
        try:
            rows = conn.execute(
                "SELECT alert_id, expires, wrapped_key FROM alerts ORDER BY seq"
            ).fetchall()
            buried = [
                row[0]
                for row in conn.execute(
                    "SELECT alert_id FROM tombstones ORDER BY purged, alert_id"
                )
            ]
            names = ("chain_log_id", "chain_records", "chain_head")
            chain_rows = dict(
                conn.execute(
                    "SELECT name, value FROM meta WHERE name IN (?, ?, ?)", names
                ).fetchall()
            )
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise AlertStoreError(f"cannot read alert store {where}: {exc}") from None
    live = [str(r[0]) for r in rows if r[2] is not None]
    unreadable = []
    if sealer is not None:
        for alert_id, expires_us, wrapped in rows:
            if wrapped is None:
                continue
            try:
                sealer.open_key(str(alert_id), int(expires_us), bytes(wrapped)).close()
            except AlteredError:
                unreadable.append(str(alert_id))
    return StoreSurvey(
        path=str(where),
        store_id=str(meta.get("store_id", "")),
        alerts=tuple(live),
        purged=tuple([str(r[0]) for r in rows if r[2] is None] + buried),
        chain=_chain(chain_rows),
        key_checked=sealer is not None,
        unreadable=tuple(unreadable),
    )


def _chain(rows: dict[str, str]) -> LogHead | None:
    log_id, records, head = (
        rows.get(n) for n in ("chain_log_id", "chain_records", "chain_head")
    )
    if log_id is None or records is None or head is None:
        return None
    try:
        return LogHead(str(log_id), int(records), str(head))
    except ValueError:
        return None
