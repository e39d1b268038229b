"""The audit log: signed, hash-chained JSON Lines, and how to read it back.

Each line is the canonical JSON (sorted keys, no spaces, UTF-8) of one record::

    {"event":..., "fields":{...}, "prev":"<64 hex>", "seq":7, "sig":"<base64>",
     "time":"2026-11-26T22:50:48.123456Z"}

``seq`` counts from 0; ``prev`` is the SHA-256 of the previous line (64 zeros for
record 0); ``sig`` is the Ed25519 signature of the record's canonical JSON without
``sig``. Record 0 is ``log_created``, naming the log's public key. Each append is
written and fsynced before :meth:`AuditLog.append` returns, so a crash loses at most
the line being written, which :func:`read_log` reports as a torn last line
(``"truncated"``) and :meth:`AuditLog.open` discards, recording that it did.

Removing, inserting, reordering or changing records breaks a signature, the
sequence or the chain; the chain cannot show records cut from the end of the file
at a line boundary, nor an older copy put back (keep signed checkpoints,
:mod:`lfr.audit.checkpoint`, away from the log to catch that).

Several writers (processes or :class:`AuditLog` objects) may append to one log,
e.g. ``lfr run`` and a reviewer's ``lfr alerts review --audit LOG``. Each append
takes ``flock(LOCK_EX)`` on the file for that append only (polling, for at most
``lock_timeout`` seconds, then :class:`lfr.errors.AuditError`), reads and verifies
with the log's public key whatever was appended since this object's head, and
chains its record after it. A torn last line found there (a writer crashed while
writing it) is cut off and recorded as ``log_recovered``, the same code path
:meth:`AuditLog.open` takes for a whole file. Records that do not verify stop the
append: nothing is written. So every writer must hold the log's signing key; one
with another key cannot append after records it cannot verify, nor can anyone
after such a writer's records. The lock is advisory (a process that ignores it is
caught by verification, not stopped) and not fair (a writer appending without pause
can delay others up to the timeout).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import math
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Literal

from lfr._closing import Closing
from lfr._core import __version__
from lfr._files import fsync_dir, lock_within
from lfr.audit.events import check_event, format_time, parse_time
from lfr.audit.signing import SIGNATURE_SIZE, PublicKey
from lfr.errors import AuditError
from lfr.protocols import Signer

__all__ = [
    "AuditLog",
    "ChainProblem",
    "LogEnd",
    "LogHead",
    "ProblemKind",
    "Record",
    "read_log",
    "read_log_from",
]

#: The kinds of :class:`ChainProblem`.
ProblemKind = Literal[
    "malformed",
    "bad_signature",
    "broken_chain",
    "bad_sequence",
    "truncated",
    "wrong_key",
    "not_a_log",
]

_GENESIS = "0" * 64
_KEYS = frozenset({"seq", "time", "event", "fields", "prev", "sig"})
# How record 0 begins (canonical JSON sorts "event" first): a first line that does
# not parse but begins like this is a damaged log, anything else is not a log.
_HEADER = b'{"event":"log_created","fields":{'


def canonical(obj: Any) -> bytes:
    """The canonical JSON of ``obj``: sorted keys, no spaces, UTF-8.

    Raises:
        ValueError: ``obj`` holds a non-finite float or a string that is not
            valid Unicode.
        TypeError: ``obj`` holds something JSON cannot represent.
    """
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string is not valid Unicode (lone surrogate)") from None


@dataclass(frozen=True)
class Record:
    """One verified record of an audit log.

    Attributes:
        seq: Its position in the log, from 0.
        time: When it was written (aware, UTC, microseconds).
        event: The event name (see :data:`lfr.audit.events.EVENTS`).
        fields: The event's fields as stored (times as ``...Z`` strings).
        line: Its 1-based line number in the file.
        log: The log file's name when records of a chain of logs are read
            together (:func:`lfr.audit.verify` with ``earlier=``; ``seq`` then
            counts through the chain), else ``None``.
    """

    seq: int
    time: datetime
    event: str
    fields: Mapping[str, Any] = field(repr=False)
    line: int
    log: str | None = None


@dataclass(frozen=True)
class ChainProblem:
    """Why an audit log stops verifying, and where.

    Attributes:
        line: The 1-based line of the first bad record.
        kind: ``"malformed"`` (not a well-formed record), ``"bad_signature"``
            (changed after signing, or forged), ``"broken_chain"`` (does not
            follow the record before it), ``"bad_sequence"`` (records removed,
            inserted or reordered), ``"truncated"`` (the last line is
            incomplete: a crash while writing it), ``"wrong_key"`` (signed by
            another key) or ``"not_a_log"``.
        message: What exactly is wrong, for people.
    """

    line: int
    kind: ProblemKind
    message: str


def read_log(
    path: str | os.PathLike[str], public_key: PublicKey
) -> tuple[list[Record], list[ChainProblem]]:
    """Reads an audit log and verifies its chain against ``public_key``.

    Args:
        path: The log file.
        public_key: The key the log must be signed with, obtained independently
            of the log (not from its ``.pub`` file alone).

    Returns:
        ``(records, problems)``: every record before the first bad one, and
        either no problem, the first bad record's problem (verification stops
        there), or a single ``"truncated"`` problem for a torn last line (every
        complete record before it verifies).

    Raises:
        TypeError: ``public_key`` is not a :class:`PublicKey`.
        OSError: The file cannot be read.
    """
    if not isinstance(public_key, PublicKey):
        raise TypeError(
            f"public_key must be a PublicKey, got {type(public_key).__name__}"
        )
    with open(path, "rb") as f:
        scan = _scan(f, public_key)
    return scan.records, scan.problems


@dataclass(frozen=True)
class LogEnd:
    """Where a verified read of a log stopped: after its last complete record.

    Attributes:
        offset: Bytes up to the end of that record's line.
        records: How many records came before (the next record's ``seq``).
        last_hash: The SHA-256 of that record's line (64 zeros for none).
    """

    offset: int = 0
    records: int = 0
    last_hash: str = "0" * 64


def read_log_from(
    path: str | os.PathLike[str], public_key: PublicKey, start: LogEnd | None = None
) -> tuple[list[Record], list[ChainProblem], LogEnd]:
    """Reads and verifies the records of a log from ``start`` on.

    For a reader that keeps up with a growing log without reading it all again:
    pass the :class:`LogEnd` an earlier call returned, and only what was
    appended since is read; it must follow that end (sequence and chain).

    Args:
        path: The log file.
        public_key: The key the log must be signed with.
        start: Where an earlier read ended; the start of the file when None.

    Returns:
        ``(records, problems, end)`` as :func:`read_log`, plus where this read
        ended (after its last complete, verified record).

    Raises:
        TypeError: ``public_key`` is not a :class:`PublicKey`.
        OSError: The file cannot be read.
    """
    if not isinstance(public_key, PublicKey):
        raise TypeError(
            f"public_key must be a PublicKey, got {type(public_key).__name__}"
        )
    start = start or LogEnd()
    with open(path, "rb") as f:
        f.seek(start.offset)
        scan = _scan(
            f,
            public_key,
            after_line=start.records,
            prev=start.last_hash,
            offset=start.offset,
        )
    count = start.records + len(scan.records)
    return scan.records, scan.problems, LogEnd(scan.end, count, scan.last_hash)


@dataclass(frozen=True)
class LogHead:
    """Where a log stands: what a checkpoint (:mod:`lfr.audit.checkpoint`) signs.

    Attributes:
        log_id: The ``log_id`` of its ``log_created`` record.
        records: How many records it holds (the next record's ``seq``).
        last_hash: The SHA-256 (hex) of its last record's line, without the
            newline: what the next record's ``prev`` will be.
    """

    log_id: str
    records: int
    last_hash: str


@dataclass
class _Scan:
    records: list[Record]
    problems: list[ChainProblem]
    end: int  # bytes up to the end of the last verified line
    last_hash: str  # SHA-256 of the last verified line


def _scan(
    lines: Iterable[bytes],
    public_key: PublicKey,
    *,
    after_line: int = 0,
    prev: str = _GENESIS,
    offset: int = 0,
) -> _Scan:
    """Verifies ``lines``: each ends in a newline, except maybe the last.

    Args:
        lines: The lines to verify.
        public_key: The log's key.
        after_line: How many lines (records) come before ``lines`` in the file:
            the first of ``lines`` is line ``after_line + 1``, record
            ``after_line``.
        prev: The SHA-256 of the line before the first of ``lines`` (64 zeros
            at the start of the file).
        offset: The file offset ``lines`` start at; ``end`` counts from 0.
    """
    scan = _Scan([], [], offset, prev)
    number = after_line
    for raw in lines:
        number += 1
        if not raw.endswith(b"\n"):
            scan.problems.append(_torn(raw, number))
            return scan
        line = raw[:-1]
        checked = _check_line(line, number, scan.last_hash, public_key)
        if isinstance(checked, ChainProblem):
            scan.problems.append(checked)
            return scan
        scan.records.append(checked)
        scan.end += len(raw)
        scan.last_hash = hashlib.sha256(line).hexdigest()
    if number == 0:
        scan.problems.append(ChainProblem(1, "not_a_log", "the file is empty"))
    return scan


def _torn(raw: bytes, number: int) -> ChainProblem:
    if number == 1 and raw[: len(_HEADER)] != _HEADER[: len(raw)]:
        return ChainProblem(
            1, "not_a_log", "the file is not an lfr audit log (no log_created record)"
        )
    if number == 1:
        return ChainProblem(
            1,
            "truncated",
            "the first line (line 1) is incomplete: the process stopped while "
            "creating the log; it holds no record",
        )
    return ChainProblem(
        number,
        "truncated",
        f"the last line (line {number}) is incomplete: the process stopped while "
        "writing it; every record before it verifies",
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in an audit record")


def _check_line(
    line: bytes, number: int, prev: str, public_key: PublicKey
) -> Record | ChainProblem:
    """The record on line ``number`` (1-based), or its problem."""
    seq = number - 1
    where = f"record {seq} (line {number})"
    first = seq == 0
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
        body = canonical({k: v for k, v in obj.items() if k != "sig"})
    except (ValueError, TypeError, AttributeError):  # not JSON, not an object
        obj = body = None
    if not isinstance(obj, dict) or body is None or not _well_formed(obj):
        if first and not line.startswith(_HEADER):
            return ChainProblem(
                1,
                "not_a_log",
                "the file is not an lfr audit log (line 1 is not a record)",
            )
        return ChainProblem(
            number, "malformed", f"line {number} is not a well-formed audit record"
        )
    signature = _signature(obj["sig"])
    if signature is None:
        return ChainProblem(
            number, "malformed", f"{where} has a malformed signature: it was modified"
        )
    if not public_key.verify(signature, body):
        if first:
            return _first_signature_problem(obj, signature, body, public_key)
        return ChainProblem(
            number,
            "bad_signature",
            f"{where} was modified or forged: its signature does not verify",
        )
    if obj["seq"] != seq:
        if first:
            message = (
                f"the log does not start with record 0 (line 1 holds record "
                f"{obj['seq']}): records were removed from its start"
            )
        else:
            message = (
                f"line {number} holds record {obj['seq']} where record {seq} should "
                "be: records were removed, inserted or reordered"
            )
        return ChainProblem(number, "bad_sequence", message)
    if obj["prev"] != prev:
        return ChainProblem(
            number,
            "broken_chain",
            f"{where} does not follow the line before it (its hash of the previous "
            "record differs): a record before it was removed, replaced or changed",
        )
    if first and (
        obj["event"] != "log_created"
        or obj["fields"].get("public_key") != base64.b64encode(public_key.raw).decode()
    ):
        return ChainProblem(
            1,
            "not_a_log",
            "record 0 (line 1) is not a log_created record naming the key given",
        )
    if canonical(obj) != line:
        return ChainProblem(
            number,
            "malformed",
            f"{where} is not in canonical form: it was modified after signing",
        )
    try:
        time = parse_time(obj["time"])
    except ValueError:
        return ChainProblem(number, "malformed", f"{where} has an invalid time")
    return Record(seq, time, obj["event"], MappingProxyType(obj["fields"]), number)


def _well_formed(obj: dict[str, Any]) -> bool:
    return (
        obj.keys() == _KEYS
        and type(obj["seq"]) is int
        and isinstance(obj["time"], str)
        and isinstance(obj["event"], str)
        and isinstance(obj["fields"], dict)
        and isinstance(obj["prev"], str)
        and isinstance(obj["sig"], str)
    )


def _signature(text: str) -> bytes | None:
    """The signature ``text`` encodes, if it is canonical base64 of 64 bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
    if len(raw) != SIGNATURE_SIZE or base64.b64encode(raw).decode() != text:
        return None
    return raw


def _first_signature_problem(
    obj: dict[str, Any], signature: bytes, body: bytes, public_key: PublicKey
) -> ChainProblem:
    """Record 0 does not verify: another key's log, or a changed record 0?"""
    named = None
    if obj["event"] == "log_created":
        try:
            raw = base64.b64decode(str(obj["fields"].get("public_key")), validate=True)
            named = PublicKey.from_raw(raw)
        except (ValueError, binascii.Error):
            named = None
    if named is not None and named != public_key and named.verify(signature, body):
        return ChainProblem(
            1,
            "wrong_key",
            f"the log is signed by key {named.key_id}, not by the key given "
            f"({public_key.key_id})",
        )
    return ChainProblem(
        1,
        "bad_signature",
        f"record 0 (line 1) does not verify with the key given ({public_key.key_id}): "
        "it was modified, or the log was signed by another key",
    )


# -- writing -------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where :meth:`AuditLog.create` exports the public key: ``<log>.pub``."""
    return Path(f"{os.fspath(path)}.pub")


#: How long an append (or :meth:`AuditLog.open`) waits for another writer's lock
#: on the log file before giving up, in seconds.
LOCK_TIMEOUT = 10.0

# Private test hook. When set, appends take no lock on the file and call it between
# re-reading the head and writing: the tests use it to show that the lock is what
# keeps several writers' records in one chain. Never set it outside the tests.
_unlocked_append_hook: Callable[[], None] | None = None


class AuditLog(Closing):
    """An append-only, signed, hash-chained audit log (JSON Lines).

    Make one with :meth:`create` or continue one with :meth:`open`. Several
    :class:`AuditLog` objects, in one process or several, may write the same log
    with the same key: each append locks the file for that append only, reads
    (and verifies) what the others appended since, and chains its record after
    theirs (see "Several writers" in ``docs/audit.md``). :meth:`append` is
    thread-safe; every record is on disk (fsynced) when it returns.

    Examples:
        >>> import tempfile, pathlib
        >>> from lfr.audit import AuditLog, SigningKey, read_log
        >>> key = SigningKey.generate()
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
        >>> with AuditLog.create(path, key) as log:
        ...     _ = log.append("alert_purged", alert_id="a1")
        >>> records, problems = read_log(path, key.public_key())
        >>> [r.event for r in records], problems
        (['log_created', 'alert_purged'], [])
    """

    __slots__ = (
        "_broken",
        "_clock",
        "_fd",
        "_key",
        "_lock",
        "_lock_timeout",
        "_log_id",
        "_path",
        "_prev",
        "_seq",
        "_size",
    )

    def __init__(
        self,
        *,
        _fd: int,
        _path: Path,
        _key: Signer,
        _clock: Callable[[], datetime],
        _lock_timeout: float,
    ) -> None:
        self._fd = _fd
        self._path = _path
        self._key = _key
        self._clock = _clock
        self._lock_timeout = _lock_timeout
        # The head: the last record this object knows of (written or read).
        self._seq = -1
        self._prev = _GENESIS
        self._size = 0
        self._broken = False
        self._lock = threading.Lock()
        self._log_id: str | None = None

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        key: Signer,
        *,
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
        previous: LogHead | None = None,
    ) -> AuditLog:
        """Starts a new log (mode 0640) and exports its public key to ``<log>.pub``.

        Record 0, ``log_created``, names a random ``log_id``, the public key and
        the lfr version, and, for a log that continues a chain of logs (an alert
        store outlives one log: see :class:`lfr.alerts.Records`), the previous
        log's id, record count and head hash (``previous_log_id``,
        ``previous_records``, ``previous_head``). An existing ``<log>.pub`` is
        replaced.

        Args:
            path: The new log file.
            key: The key that signs every record.
            clock: Returns the current time (aware); ``datetime.now(UTC)`` when
                None.
            lock_timeout: How long each append waits for another writer's lock
                on the file, in seconds, before raising :class:`AuditError`.
            previous: Where the previous log of the chain ended (its
                :meth:`head`, or :attr:`lfr.AlertStore.chain`), or None for the
                first log of a chain.

        Returns:
            The open log.

        Raises:
            FileExistsError: ``path`` exists (continue it with :meth:`open`).
            TypeError: ``key`` is not a :class:`lfr.protocols.Signer`.
            ValueError: ``lock_timeout`` is negative or not finite.
            OSError: The files cannot be written (nothing is left behind).
        """
        _check_key(key)
        timeout = _check_timeout(lock_timeout)
        if previous is not None and not isinstance(previous, LogHead):
            raise TypeError(
                f"previous must be a LogHead, got {type(previous).__name__}"
            )
        path = Path(path)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o640)
        except FileExistsError:
            raise FileExistsError(
                f"{path} exists; continue it with AuditLog.open"
            ) from None
        log = None
        try:
            os.fchmod(fd, 0o640)
            log = cls(
                _fd=fd,
                _path=path,
                _key=key,
                _clock=clock or _utc_now,
                _lock_timeout=timeout,
            )
            header: dict[str, Any] = {
                "log_id": str(uuid.uuid4()),
                "public_key": base64.b64encode(key.public_key().raw).decode(),
                "lfr_version": __version__,
            }
            if previous is not None:
                header.update(
                    previous_log_id=previous.log_id,
                    previous_records=previous.records,
                    previous_head=previous.last_hash,
                )
            with log._lock, log._file_lock():  # no one else can have written
                log._append("log_created", check_event("log_created", header))
            fsync_dir(path.parent)
            key.public_key().save(public_key_path(path), overwrite=True)
        except BaseException:
            if log is not None:
                log.close()
            else:
                os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return log

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        key: Signer,
        *,
        clock: Callable[[], datetime] | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> AuditLog:
        """Continues an existing log after verifying it with ``key``'s public key.

        The whole file is verified: first without the log's lock (so other
        writers are not held up), then what they appended meanwhile under it.
        A torn last line (a writer stopped while writing it; it was never a
        complete record) is cut off, and an ``anomaly`` record with kind
        ``log_recovered`` says how many bytes were discarded. Other writers may
        keep appending to the log.

        Args:
            path: The log file.
            key: The key that signed it, which signs what follows.
            clock: As for :meth:`create`.
            lock_timeout: As for :meth:`create`; also bounds the wait here.

        Returns:
            The open log, positioned after its last record.

        Raises:
            AuditError: The log does not verify (changed, another key's, not a
                log, no complete first record), or another writer held its lock
                for longer than ``lock_timeout``; the file is left as it was.
            TypeError: ``key`` is not a :class:`lfr.protocols.Signer`.
            ValueError: ``lock_timeout`` is negative or not finite.
            OSError: The file cannot be opened.
        """
        _check_key(key)
        timeout = _check_timeout(lock_timeout)
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            log = cls(
                _fd=fd,
                _path=path,
                _key=key,
                _clock=clock or _utc_now,
                _lock_timeout=timeout,
            )
        except BaseException:
            os.close(fd)
            raise
        try:
            with log._lock:
                # Verified first without the lock (other writers go on meanwhile:
                # a long log takes seconds), then only the rest under it.
                log._read_ahead()
                with log._file_lock():
                    log._catch_up()
        except BaseException:
            log.close()
            raise
        return log

    def append(self, event: str, **fields: Any) -> Record:
        """Signs and writes one event; it is on disk when this returns.

        The record follows the last record of the file, whoever wrote it: what
        other writers appended since this object's last append is read and
        verified first (under the file's lock).

        Args:
            event: An event name of :data:`lfr.audit.events.EVENTS` (not
                ``log_created``, which only :meth:`create` writes).
            **fields: Its fields; times may be aware ``datetime`` objects.

        Returns:
            The record written (its ``seq`` and ``line`` are its place in the
            file).

        Raises:
            ValueError: The event is unknown, a field is missing, unknown, of the
                wrong kind or biometric-looking, the clock gave a naive time, or
                the log is closed. Nothing is written.
            TypeError: The clock returned something other than a ``datetime``.
            AuditError: The write failed (nothing was kept); an earlier write
                failed in a way that leaves the log unusable (open it again);
                what other writers appended does not verify, or the file lost
                records (nothing is written); or another writer held the lock
                for longer than the lock timeout.
        """
        if event == "log_created":
            raise ValueError("log_created is written only by AuditLog.create")
        return self._write(event, check_event(event, fields))

    @property
    def lock_timeout(self) -> float:
        """How long an append waits for another writer's lock, in seconds."""
        return self._lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self._lock_timeout = _check_timeout(seconds)

    def records(self) -> list[Record]:
        """Every verified record of the log as it stands now, in log order.

        The whole file is read and verified under its lock, so the list ends
        with the last record any writer has appended. A torn last line left by
        a writer that crashed is recovered first, as :meth:`open` does.

        Returns:
            The records, from ``log_created`` on.

        Raises:
            ValueError: The log is closed.
            AuditError: The log no longer verifies, an earlier write failed, or
                another writer held the lock for longer than the lock timeout.
        """
        with self._lock:
            self._check_usable()
            # The whole file, read without the lock, then checked against the
            # head caught up under it (other writers are held up only briefly).
            with open(self._fd, "rb", closefd=False) as f:
                f.seek(0)
                scan = _scan(f, self._key.public_key())
            if all(p.kind == "truncated" for p in scan.problems):
                scan.problems = []  # a line still being written: read below
            with self._file_lock():
                self._catch_up()
                if not scan.problems and scan.end < self._size:
                    with open(self._fd, "rb", closefd=False) as f:
                        f.seek(scan.end)
                        more = _scan(
                            f,
                            self._key.public_key(),
                            after_line=len(scan.records),
                            prev=scan.last_hash,
                            offset=scan.end,
                        )
                    scan.records += more.records
                    scan.problems += more.problems
                    scan.end = more.end
        if scan.problems or scan.end != self._size:
            message = (
                scan.problems[0].message
                if scan.problems
                else "it changed while it was read"
            )
            raise AuditError(f"audit log {self._path} no longer verifies: {message}")
        return scan.records

    def head(self) -> LogHead:
        """The log's id, record count and last record's hash, as they stand now.

        Caught up under the file's lock with what other writers appended (a
        torn last line is recovered first, as by :meth:`append`), so the three
        belong together: the count and hash of one moment of the file.

        Raises:
            ValueError: The log is closed.
            AuditError: What other writers appended does not verify, an earlier
                write failed, or another writer held the lock for longer than
                the lock timeout.
        """
        with self._lock:
            self._check_usable()
            with self._file_lock():
                self._catch_up()
                return LogHead(self._read_log_id(), self._seq + 1, self._prev)

    def _sign(self, data: bytes) -> bytes:
        """Signs ``data`` with the log's key (for :mod:`lfr.audit.checkpoint`)."""
        return self._key.sign(data)

    @property
    def previous(self) -> LogHead | None:
        """Where the previous log of this log's chain ended, or None (a first log).

        From record 0 (``previous_log_id``, ``previous_records``,
        ``previous_head``), verified when this object read or wrote it.

        Raises:
            AuditError: Record 0 cannot be read back.
        """
        fields = self._header()
        log_id = fields.get("previous_log_id")
        if log_id is None:
            return None
        records = fields.get("previous_records")
        head = fields.get("previous_head")
        if (
            not isinstance(log_id, str)
            or not isinstance(records, int)
            or not isinstance(head, str)
        ):
            raise AuditError(f"audit log {self._path} names its previous log badly")
        return LogHead(log_id, records, head)

    def _read_log_id(self) -> str:
        """The ``log_id`` of record 0 (verified when this object read or wrote it)."""
        if self._log_id is None:
            log_id = self._header().get("log_id")
            if not isinstance(log_id, str):
                raise AuditError(f"audit log {self._path} has no readable log_id")
            self._log_id = log_id
        return self._log_id

    def _header(self) -> dict[str, Any]:
        """The fields of record 0, ``log_created``."""
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(0)
            first = f.readline()
        try:
            fields = json.loads(first)["fields"]
        except (ValueError, TypeError, KeyError) as exc:
            raise AuditError(
                f"audit log {self._path} has no readable record 0"
            ) from exc
        if not isinstance(fields, dict):
            raise AuditError(f"audit log {self._path} has no readable record 0")
        return fields

    def _write(self, event: str, fields: dict[str, Any]) -> Record:
        """Catches up with other writers, then signs, writes and fsyncs a record."""
        with self._lock:
            self._check_usable()
            hook = _unlocked_append_hook
            if hook is not None:
                self._catch_up()
                hook()
                return self._append(event, fields)
            with self._file_lock():
                self._catch_up()
                return self._append(event, fields)

    def _check_usable(self) -> None:
        if self._fd < 0:
            raise ValueError(f"the audit log {self._path} is closed")
        if self._broken:
            raise AuditError(
                f"an earlier write to {self._path} failed; open the log again"
            )

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Holds flock(LOCK_EX) on the file, waiting at most the lock timeout."""
        if not lock_within(self._fd, self._lock_timeout):
            raise AuditError(
                f"audit log {self._path} stayed locked by another writer "
                f"for {self._lock_timeout:g} s; nothing was written"
            )
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read_ahead(self) -> None:
        """Verifies the complete records from the head on, without the file lock.

        Moves the head past them; writes nothing. A torn or still-growing last
        line is left for :meth:`_catch_up` (under the lock) to judge.
        """
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(self._size)
            scan = _scan(
                f,
                self._key.public_key(),
                after_line=self._seq + 1,
                prev=self._prev,
                offset=self._size,
            )
        bad = [p for p in scan.problems if p.kind != "truncated"]
        if bad:
            raise AuditError(
                f"cannot continue audit log {self._path}: {bad[0].message}"
            )
        if scan.records:
            self._seq = scan.records[-1].seq
            self._prev = scan.last_hash
            self._size = scan.end

    def _catch_up(self) -> None:
        """Reads and verifies what was appended after the head; moves the head.

        Called under the file's lock. A torn last line (a writer crashed while
        writing it) is cut off and recorded as an ``anomaly`` of kind
        ``log_recovered``. From an empty head (:meth:`open`) this verifies the
        whole file.

        Raises:
            AuditError: What follows the head does not verify, or the file is
                shorter than the head (records were cut from its end). Nothing
                is written.
        """
        size = os.fstat(self._fd).st_size
        opening = self._seq < 0
        if size == self._size and not opening:
            return
        if size < self._size:
            raise AuditError(
                f"cannot append to audit log {self._path}: it is shorter than when "
                f"this writer last read it ({size} < {self._size} bytes): records "
                "were cut from its end; nothing was written"
            )
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(self._size)
            scan = _scan(
                f,
                self._key.public_key(),
                after_line=self._seq + 1,
                prev=self._prev,
                offset=self._size,
            )
        problem = scan.problems[0] if scan.problems else None
        if problem is not None and (
            problem.kind != "truncated" or (opening and not scan.records)
        ):
            if opening:
                raise AuditError(
                    f"cannot continue audit log {self._path}: {problem.message}"
                )
            raise AuditError(
                f"cannot append to audit log {self._path}: what was appended after "
                f"record {self._seq} (by another writer) does not verify: "
                f"{problem.message}; nothing was written"
            )
        if scan.records:
            self._seq = scan.records[-1].seq
            self._prev = scan.last_hash
            self._size = scan.end
        if problem is None:
            return
        try:
            os.ftruncate(self._fd, scan.end)
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditError(
                f"cannot cut the incomplete last line off audit log {self._path}: "
                f"{exc.strerror}"
            ) from exc
        recovered = {
            "kind": "log_recovered",
            "detail": f"discarded {size - scan.end} bytes: the incomplete last line "
            f"(line {problem.line}), left when a writer stopped while writing it",
        }
        self._append("anomaly", check_event("anomaly", recovered))

    def _append(self, event: str, fields: dict[str, Any]) -> Record:
        """Signs, writes and fsyncs one record after the head (locks held)."""
        now = self._clock()
        if not isinstance(now, datetime):
            raise TypeError(f"the clock returned {type(now).__name__}, not datetime")
        stamp = format_time(now)
        seq = self._seq + 1
        body = {
            "seq": seq,
            "time": stamp,
            "event": event,
            "fields": fields,
            "prev": self._prev,
        }
        sig = base64.b64encode(self._key.sign(canonical(body))).decode()
        line = canonical({**body, "sig": sig})
        try:
            _write_all(self._fd, line + b"\n")
        except OSError as exc:
            self._undo()
            raise AuditError(
                f"cannot write to audit log {self._path}: {exc.strerror}"
            ) from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = True  # what reached the disk is unknown
            raise AuditError(
                f"cannot sync audit log {self._path}: {exc.strerror}"
            ) from exc
        self._seq = seq
        self._prev = hashlib.sha256(line).hexdigest()
        self._size += len(line) + 1
        return Record(seq, parse_time(stamp), event, MappingProxyType(fields), seq + 1)

    def _undo(self) -> None:
        """Cuts off a partly written line, or marks the log unusable."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._broken = True

    def close(self) -> None:
        """Closes the file (idempotent). No lock is held between appends."""
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._fd < 0

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def public_key(self) -> PublicKey:
        """The public key that verifies this log."""
        return self._key.public_key()

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last record this object wrote or read.

        Other writers may have appended since; :meth:`records` reads them.
        """
        return self._seq

    def __repr__(self) -> str:
        state = ", closed" if self.closed else ""
        return (
            f"AuditLog({str(self._path)!r}, key_id={self._key.key_id!r}, "
            f"last_seq={self._seq}{state})"
        )

    def __reduce__(self) -> Any:
        raise TypeError("an AuditLog cannot be pickled")


def _check_key(key: Any) -> None:
    if not isinstance(key, Signer):
        raise TypeError(
            "key must be a SigningKey or another lfr.protocols.Signer (a token "
            f"key), got {type(key).__name__}"
        )


def _check_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"lock_timeout must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"lock_timeout must be a finite number >= 0, got {value}")
    return float(value)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
