"""Chains of audit logs: whether a log matches a head that was seen of it.

An alert store outlives one deployment's log, so its logs form a chain: each new
log's first record names the previous log's id, record count and head hash
(:meth:`lfr.AuditLog.create` with ``previous=``), and the store records the
chain's latest log and head (:attr:`lfr.AlertStore.chain`). A checkpoint
(:mod:`lfr.audit.checkpoint`), a store's chain record and a next log's
``previous`` all say the same thing: *this log once held this many records, the
last of which hashed to this*. :func:`head_problem` is the one test of that,
shared by the three.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lfr.audit._trail import at
from lfr.audit.checks import Violation
from lfr.audit.log import ChainProblem, LogHead, Record, read_log
from lfr.audit.signing import PublicKey

if TYPE_CHECKING:
    from lfr.alerts.survey import StoreSurvey

__all__ = [
    "HeadProblem",
    "LogRead",
    "count_violations",
    "head_problem",
    "line_hashes",
    "link_violations",
    "read_chain",
    "store_violations",
]


@dataclass(frozen=True)
class HeadProblem:
    """Why a log does not match a head seen of it.

    Attributes:
        kind: ``"another_log"`` (its ``log_id`` differs), ``"truncated"`` (it
            holds fewer records: cut from its end, or an older copy put back)
            or ``"diverged"`` (the record at the head is another record).
        message: What is wrong, for people.
        record: The ``seq`` of the record that differs (``"diverged"`` only).
    """

    kind: Literal["another_log", "truncated", "diverged"]
    message: str
    record: int | None = None


def line_hashes(path: str | os.PathLike[str]) -> list[str]:
    """SHA-256 (hex) of each complete line of a log (without its newline), in order.

    Raises:
        OSError: The file cannot be read.
    """
    hashes = []
    with open(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                hashes.append(hashlib.sha256(line[:-1]).hexdigest())
    return hashes


def head_problem(
    log_id: str | None, hashes: Sequence[str], head: LogHead, name: str
) -> HeadProblem | None:
    """Whether a log (its ``log_id`` and :func:`line_hashes`) matches ``head``.

    The log must be ``head.log_id``, hold at least ``head.records`` lines, and
    the line of record ``head.records - 1`` must hash to ``head.last_hash``.
    Since each record holds the hash of the one before, a matching head vouches
    for every record before it, as long as the log's chain verifies (checked
    separately).

    Args:
        log_id: The log's id (``None`` if it has none that verifies).
        hashes: The hashes of its lines.
        head: What was seen of it.
        name: What saw it, for the message (``"checkpoint of ..."``).

    Returns:
        The problem, or ``None`` when the log matches.
    """
    if head.log_id != log_id:
        which = "no verifiable log_id" if log_id is None else f"log_id {log_id}"
        return HeadProblem(
            "another_log",
            f"the {name} is of log {head.log_id}, but this log has {which}: it is "
            "another log",
        )
    if len(hashes) < head.records:
        cut = head.records - len(hashes)
        return HeadProblem(
            "truncated",
            f"the log holds {len(hashes)} records, but the {name} saw "
            f"{head.records}: {cut} record(s) were cut from its end, or an older "
            "copy of the log was put back",
        )
    if head.records == 0:
        return None
    seq = head.records - 1
    if hashes[seq] != head.last_hash:
        return HeadProblem(
            "diverged",
            f"record {seq} (line {seq + 1}) is not the record the {name} saw "
            "there: the log was replaced by another version (an older copy put "
            "back and continued, or records rewritten)",
            record=seq,
        )
    return None


# -- verifying a chain of logs, and a store against it --------------------------------


@dataclass(frozen=True)
class LogRead:
    """One log of a chain, read and verified for :func:`lfr.audit.verify`.

    Attributes:
        path: The file.
        name: How messages name it (its file name; ``None`` for a lone log).
        records: Its verified records (``seq`` counting through the chain).
        offset: The chain-wide ``seq`` of its record 0.
        problems: Why its chain stops verifying (see :func:`read_log`).
        hashes: The hashes of its complete lines.
        log_id: Its ``log_id`` (``None`` if record 0 does not verify).
        previous: The previous log its record 0 names, or ``None``.
    """

    path: Path
    name: str | None
    records: list[Record]
    offset: int
    problems: list[ChainProblem]
    hashes: list[str]
    log_id: str | None
    previous: LogHead | None

    def label(self) -> str:
        """Its name, or ``"the log"``."""
        return self.name or "the log"


def read_chain(
    paths: Sequence[str | os.PathLike[str]], public_key: PublicKey
) -> list[LogRead]:
    """Reads and verifies each log of a chain (oldest first) with ``public_key``.

    With more than one log, records are renumbered to count through the chain
    and carry their log's file name (:attr:`Record.log`).

    Raises:
        OSError: A log cannot be read.
    """
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):  # file names only: no site paths in reports
        names = [f"log {i + 1} ({name})" for i, name in enumerate(names)]
    chained = len(paths) > 1
    out: list[LogRead] = []
    offset = 0
    for path, name in zip(paths, names):
        records, problems = read_log(path, public_key)
        if chained:
            records = [replace(r, seq=offset + r.seq, log=name) for r in records]
        first = records[0].fields if records else {}
        log_id = first.get("log_id") if isinstance(first.get("log_id"), str) else None
        out.append(
            LogRead(
                path=Path(path),
                name=name if chained else None,
                records=records,
                offset=offset,
                problems=problems,
                hashes=line_hashes(path),
                log_id=log_id,
                previous=_previous(first),
            )
        )
        offset += len(records)
    return out


def _previous(fields: Mapping[str, Any]) -> LogHead | None:
    log_id = fields.get("previous_log_id")
    records = fields.get("previous_records")
    head = fields.get("previous_head")
    if not (
        isinstance(log_id, str) and isinstance(records, int) and isinstance(head, str)
    ):
        return None
    return LogHead(log_id, records, head)


def link_violations(chain: Sequence[LogRead]) -> tuple[list[Violation], list[str]]:
    """Whether each log continues the one before it, and the first starts a chain.

    Returns:
        ``(violations, notices)``: a first log that continues a log not given
        is a ``chain_gap``; a later log that names another log than the one
        before it, or a head that log never held (cut short), is a
        ``chain_gap``; one that starts a new chain, or names a record that is
        not the one there, is ``chain_broken``. Records a log holds after the
        point the next log continues from are a notice.
    """
    violations: list[Violation] = []
    notices: list[str] = []
    for index, log in enumerate(chain):
        if index == 0:
            if log.previous is not None:
                violations.append(
                    _at_first(
                        log,
                        "chain_gap",
                        f"{log.label()} continues log {log.previous.log_id} (after "
                        f"its {log.previous.records} records), which was not "
                        "given: what the earlier logs recorded (alerts raised, "
                        "purges) cannot be checked. Give the chain's logs, oldest "
                        "first",
                    )
                )
            continue
        before = chain[index - 1]
        if log.previous is None:
            violations.append(
                _at_first(
                    log,
                    "chain_broken",
                    f"{log.label()} starts a new chain: it does not continue "
                    f"{before.label()}",
                )
            )
            continue
        problem = head_problem(
            before.log_id,
            before.hashes,
            log.previous,
            f"head of its previous log that {log.label()} names",
        )
        if problem is None:
            after = len(before.hashes) - log.previous.records
            if after > 0:
                notices.append(
                    f"{before.label()} holds {after} record(s) after the point "
                    f"{log.label()} continues from: they were written after the "
                    "next log began"
                )
            continue
        kind = "chain_broken" if problem.kind == "diverged" else "chain_gap"
        text = (
            f"{log.label()} continues log {log.previous.log_id}, not "
            f"{before.label()} (log {before.log_id}): a log of the chain is "
            "missing between them, or they are out of order"
            if problem.kind == "another_log"
            else f"{before.label()}: {problem.message}"
        )
        violations.append(_at_first(log, kind, text))
    return violations, notices


def count_violations(records: Sequence[Record]) -> list[Violation]:
    """Whether the logs account for what the store held at each deployment's start.

    A ``deployment_started`` written through :class:`lfr.alerts.Records`
    records the store's live alerts and purged ids (``store_alerts``,
    ``store_purged``); the alerts the records before it raised and did not
    purge, and those they purged, must number the same. More in the store means
    alerts or purges no log given records (a log deleted and a new one started);
    fewer means alerts removed from the store without an audited purge.

    Returns:
        One ``store_unaccounted`` violation per start that disagrees.
    """
    raised: set[str] = set()
    purged: set[str] = set()
    out: list[Violation] = []
    for record in records:
        alert_id = record.fields.get("alert_id")
        if record.event == "alert_raised" and isinstance(alert_id, str):
            raised.add(alert_id)
        elif record.event == "alert_purged" and isinstance(alert_id, str):
            purged.add(alert_id)
        elif record.event == "deployment_started":
            live, gone = (
                record.fields.get("store_alerts"),
                record.fields.get("store_purged"),
            )
            if not isinstance(live, int) or not isinstance(gone, int):
                continue
            expected = len(raised - purged), len(purged)
            if (live, gone) != expected:
                name = record.fields.get("deployment_id")
                out.append(
                    Violation.at(
                        "store_unaccounted",
                        record,
                        f"when deployment {name} started ({at(record)}) its alert "
                        f"store held {live} alert(s) and {gone} purged id(s), but "
                        f"the logs given account for {expected[0]} and "
                        f"{expected[1]}: "
                        + (
                            "alerts or purges no log given records (an earlier "
                            "log deleted or withheld?)"
                            if live > expected[0] or gone > expected[1]
                            else "alerts left the store without an audited purge"
                        ),
                    )
                )
    return out


def store_violations(
    chain: Sequence[LogRead], survey: StoreSurvey
) -> tuple[list[Violation], list[str]]:
    """Checks a store (surveyed read-only) against the chain of its logs.

    The store's chain record must name the last log given, at a head that log
    holds; every alert it holds must be raised and not purged by the logs,
    every id it purged purged by them, and every alert they raised and did not
    purge must be in it; deployments must name this store.

    Returns:
        ``(violations, notices)``.
    """
    out: list[Violation] = []
    last = chain[-1]
    link = survey.chain
    store = Path(survey.path).name
    if link is None:
        out.append(
            Violation(
                "store_unaccounted",
                None,
                None,
                f"the alert store {store} names no audit log: no lfr.alerts.Records "
                "ever bound it to a log, or its chain record was removed",
            )
        )
    elif link.log_id == last.log_id:
        problem = head_problem(
            last.log_id, last.hashes, link, f"store's record of {last.label()}"
        )
        if problem is not None:
            kind = "chain_broken" if problem.kind == "diverged" else "chain_gap"
            out.append(Violation(kind, None, None, problem.message, last.name))
    elif any(log.log_id == link.log_id for log in chain):
        out.append(
            Violation(
                "chain_broken",
                None,
                None,
                f"the alert store {store}'s chain ends in log {link.log_id}, before "
                f"{last.label()}: the later log(s) were never bound to this store",
            )
        )
    else:
        out.append(
            Violation(
                "chain_gap",
                None,
                None,
                f"the alert store {store}'s chain continues in log {link.log_id} "
                f"({link.records} records), which was not given: a later log, or "
                "the logs given are not this store's",
            )
        )
    raised: dict[str, Record] = {}
    purged: dict[str, Record] = {}
    for log in chain:
        for record in log.records:
            alert_id = record.fields.get("alert_id")
            if not isinstance(alert_id, str):
                continue
            if record.event == "alert_raised":
                raised.setdefault(alert_id, record)
            elif record.event == "alert_purged":
                purged.setdefault(alert_id, record)
        for record in log.records:
            named = record.fields.get("store_id")
            if (
                record.event == "deployment_started"
                and isinstance(named, str)
                and named != survey.store_id
            ):
                out.append(
                    Violation.at(
                        "store_unaccounted",
                        record,
                        f"deployment {record.fields.get('deployment_id')} "
                        f"used alert store {named}, not {store} (store "
                        f"{survey.store_id})",
                    )
                )
    held = set(survey.alerts)
    gone = set(survey.purged)
    for alert_id in survey.alerts:
        if alert_id not in raised:
            out.append(
                _store(f"alert {alert_id} is in the store, but no log given raised it")
            )
        elif alert_id in purged:
            out.append(
                _store(
                    f"alert {alert_id} is in the store with its key, but "
                    f"{at(purged[alert_id])} records it purged"
                )
            )
    whole = bool(chain) and chain[0].previous is None  # from the first log on
    for alert_id in survey.purged:
        if alert_id not in purged:
            out.append(
                _store(
                    f"alert {alert_id} was purged from the store, but no log given "
                    "records its purge"
                )
            )
        elif whole and alert_id not in raised:
            out.append(
                _store(
                    f"alert {alert_id} was purged, but no log of the chain raised it"
                )
            )
    for alert_id, record in raised.items():
        if alert_id not in purged and alert_id not in held and alert_id not in gone:
            out.append(
                Violation.at(
                    "store_unaccounted",
                    record,
                    f"alert {alert_id} ({at(record)}) is neither in the store nor "
                    "among its purged ids: removed without an audited purge, or "
                    "this is not the deployment's store",
                )
            )
    for alert_id in survey.unreadable:
        out.append(
            _store(
                f"alert {alert_id}'s data key does not belong to its id and expiry: "
                "the store was altered"
            )
        )
    checked = "with its key" if survey.key_checked else "without its key"
    notices = [
        f"alert store {store} (store {survey.store_id}, read {checked}): "
        f"{len(survey.alerts)} alert(s), {len(survey.purged)} purged id(s); its "
        + (
            "chain names no log"
            if link is None
            else f"chain ends in log {link.log_id} at record {link.records}"
        )
    ]
    return out, notices


def _at_first(log: LogRead, kind: str, message: str) -> Violation:
    """A violation about a log as a whole, placed at its record 0."""
    first = log.records[0] if log.records else None
    seq = None if first is None else first.seq
    return Violation(kind, seq, None if first is None else 1, message, log.name)


def _store(message: str) -> Violation:
    return Violation("store_unaccounted", None, None, message)
