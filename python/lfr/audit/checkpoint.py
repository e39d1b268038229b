"""Checkpoints: signed statements of how long a log was, kept away from it.

The hash chain of an audit log shows a record removed, inserted or changed
*before* the last one, but not records cut from the end, nor an older copy of the
whole log put back in place of the current one: both are shorter valid logs. A
:class:`Checkpoint` closes that gap. It says "the log ``log_id`` held ``records``
records, the last of which hashes to ``head``, at ``time``", signed with the
log's key; kept where the log's operator cannot change it, it lets a later
verification (:func:`check_against`, ``lfr.audit.verify(..., checkpoints=)``,
``lfr audit verify --checkpoint``) find the log shorter than it was, or replaced
by another version.

A checkpoint is one canonical JSON object (sorted keys, no spaces, UTF-8)::

    {"format":"lfr-audit-checkpoint/1","head":"<64 hex>","key_id":"...",
     "log_id":"<uuid>","records":42,"signature":"<base64>",
     "time":"2026-12-04T18:39:01.123456Z"}

``signature`` is the Ed25519 signature, with the log's key, of the canonical JSON
of the other fields. A file of checkpoints holds one per line
(:func:`load_checkpoints`).

What it does not prove: a checkpoint kept where the operator of the log can
delete or replace it proves nothing against that operator, and whoever holds the
signing key can sign new checkpoints for a rewritten log (see "Checkpoints" in
``docs/audit.md``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from lfr.audit.chain import head_problem, line_hashes
from lfr.audit.events import format_time, parse_time
from lfr.audit.log import AuditLog, LogHead, canonical, read_log
from lfr.audit.signing import SIGNATURE_SIZE, PublicKey
from lfr.errors import AuditError

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointProblem",
    "CheckpointProblemKind",
    "check_against",
    "load_checkpoints",
    "make_checkpoint",
]

#: The ``format`` field of every checkpoint (also keeps its signature apart from
#: a record's: the two signed objects never have the same fields).
FORMAT = "lfr-audit-checkpoint/1"

#: The kinds of :class:`CheckpointProblem`.
CheckpointProblemKind = Literal["bad_signature", "another_log", "truncated", "diverged"]

_KEYS = frozenset(
    {"format", "log_id", "records", "head", "time", "key_id", "signature"}
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: log ``log_id`` held ``records`` records at ``time``.

    Make one with :func:`make_checkpoint`, read one with :meth:`from_json`.

    Attributes:
        log_id: The ``log_id`` of the log's ``log_created`` record.
        records: How many records the log held (at least 1: ``log_created``).
        head: SHA-256 (hex) of the line of its last record, record
            ``records - 1``, without the newline.
        time: When the checkpoint was made (aware, UTC, microseconds).
        key_id: The signing key's fingerprint (:attr:`PublicKey.key_id`).
        signature: Base64 of the Ed25519 signature of :meth:`signed_bytes`.

    Raises:
        ValueError: A field is out of range or malformed.
        TypeError: A field has the wrong type.
    """

    log_id: str
    records: int
    head: str
    time: datetime
    key_id: str
    signature: str

    def __post_init__(self) -> None:
        for name in ("log_id", "head", "key_id", "signature"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"checkpoint {name} must be a string")
        if not self.log_id or not self.key_id:
            raise ValueError("a checkpoint needs a log_id and a key_id")
        if type(self.records) is not int or self.records < 1:
            raise ValueError(
                f"checkpoint records must be an integer >= 1, got {self.records!r}"
            )
        if not _SHA256.fullmatch(self.head):
            raise ValueError("checkpoint head must be 64 lowercase hex digits")
        if not isinstance(self.time, datetime):
            raise TypeError("checkpoint time must be a datetime")
        # Normalised to what the JSON holds, so a checkpoint made and one read
        # back compare equal and sign the same bytes.
        object.__setattr__(self, "time", parse_time(format_time(self.time)))
        if _signature(self.signature) is None:
            raise ValueError("checkpoint signature is not base64 of 64 bytes")

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical JSON without ``signature``."""
        return canonical(self._body())

    def _body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "log_id": self.log_id,
            "records": self.records,
            "head": self.head,
            "time": format_time(self.time),
            "key_id": self.key_id,
        }

    def to_json(self) -> str:
        """The checkpoint as one line of canonical JSON (no newline)."""
        return canonical({**self._body(), "signature": self.signature}).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Reads a checkpoint written by :meth:`to_json`; checks its form only.

        Its signature is checked by :meth:`verify_signature` (or
        :func:`check_against`), which needs the log's public key.

        Raises:
            AuditError: ``text`` is not a well-formed checkpoint (not JSON,
                missing or extra fields, wrong types, not canonical).
        """
        try:
            raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            obj = json.loads(raw.decode("utf-8"), parse_constant=_reject)
            if not isinstance(obj, dict) or obj.keys() != _KEYS:
                raise ValueError("not a checkpoint object (fields differ)")
            if obj["format"] != FORMAT:
                raise ValueError(f"unknown format {obj['format']!r}")
            checkpoint = cls(
                log_id=obj["log_id"],
                records=obj["records"],
                head=obj["head"],
                time=parse_time(obj["time"]),
                key_id=obj["key_id"],
                signature=obj["signature"],
            )
            if canonical(obj) != raw.strip():
                raise ValueError("not in canonical form: it was modified")
        except (ValueError, TypeError) as exc:
            raise AuditError(f"malformed audit checkpoint: {exc}") from None
        return checkpoint

    def verify_signature(self, public_key: PublicKey) -> None:
        """Checks that the log's key signed this checkpoint as it stands.

        Raises:
            AuditError: It was signed by another key, or changed (or forged)
                after signing.
            TypeError: ``public_key`` is not a :class:`PublicKey`.
        """
        if not isinstance(public_key, PublicKey):
            raise TypeError(
                f"public_key must be a PublicKey, got {type(public_key).__name__}"
            )
        if self.key_id != public_key.key_id:
            raise AuditError(
                f"the checkpoint of {format_time(self.time)} names key "
                f"{self.key_id}, not the log's key {public_key.key_id}"
            )
        signature = _signature(self.signature)
        if signature is None or not public_key.verify(signature, self.signed_bytes()):
            raise AuditError(
                f"the checkpoint of {format_time(self.time)} ({self.records} "
                "records) does not verify with the log's key: it was changed "
                "after signing, or forged"
            )


def make_checkpoint(log: AuditLog, *, now: datetime | None = None) -> Checkpoint:
    """Signs a checkpoint of ``log`` as it stands, with the log's key.

    The head is read under the log's lock, caught up with every other writer
    (:meth:`AuditLog.head`).

    Args:
        log: The open log.
        now: The checkpoint's time (aware); the current time when None.

    Returns:
        The checkpoint.

    Raises:
        ValueError: The log is closed, or ``now`` is naive.
        AuditError: The log no longer verifies or stayed locked (see
            :meth:`AuditLog.head`).
    """
    head = log.head()
    when = datetime.now(timezone.utc) if now is None else now
    unsigned: dict[str, Any] = {
        "format": FORMAT,
        "log_id": head.log_id,
        "records": head.records,
        "head": head.last_hash,
        "time": format_time(when),
        "key_id": log.public_key.key_id,
    }
    signature = base64.b64encode(log._sign(canonical(unsigned))).decode()
    return Checkpoint(
        log_id=head.log_id,
        records=head.records,
        head=head.last_hash,
        time=parse_time(unsigned["time"]),
        key_id=log.public_key.key_id,
        signature=signature,
    )


def load_checkpoints(path: str | os.PathLike[str]) -> list[Checkpoint]:
    """Reads a file of checkpoints, one JSON object a line (blank lines skipped).

    An incomplete last line (no newline, not a checkpoint: its writer stopped
    while writing it) is skipped; any other malformed line is an error.

    Raises:
        AuditError: A line is not a well-formed checkpoint (naming the line).
        OSError: The file cannot be read.
    """
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    checkpoints = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            checkpoints.append(Checkpoint.from_json(line))
        except AuditError as exc:
            if number == len(lines):  # no newline after it: torn
                continue
            raise AuditError(f"{path}, line {number}: {exc}") from None
    return checkpoints


@dataclass(frozen=True)
class CheckpointProblem:
    """A checkpoint the log does not match.

    Attributes:
        checkpoint: The checkpoint.
        kind: ``"bad_signature"`` (the checkpoint was changed or forged, or
            another key signed it), ``"another_log"`` (it is of another log),
            ``"truncated"`` (the log holds fewer records than the checkpoint
            saw: records were cut from its end, or an older copy put back) or
            ``"diverged"`` (the record at the checkpoint's position is another
            one: the log was replaced by another version).
        message: What is wrong, for people.
        record: The ``seq`` concerned (``"diverged"`` only), or ``None``.
        line: That record's 1-based line, or ``None``.
    """

    checkpoint: Checkpoint
    kind: CheckpointProblemKind
    message: str
    record: int | None = None
    line: int | None = None


def check_against(
    path: str | os.PathLike[str],
    public_key: PublicKey,
    checkpoints: Iterable[Checkpoint],
) -> list[CheckpointProblem]:
    """Compares a log with checkpoints of it: one problem per mismatch.

    For each checkpoint, in order: its signature must verify with
    ``public_key``; its ``log_id`` must be the log's; the log must hold at least
    its ``records`` complete lines; and the line of record ``records - 1`` must
    hash to its ``head``. Since each record holds the hash of the one before,
    a matching head vouches for every record before it as long as the chain
    verifies (which :func:`lfr.audit.verify` reports on separately). The first
    failing test is the checkpoint's problem.

    Args:
        path: The log file.
        public_key: The log's key, obtained independently of the log.
        checkpoints: The checkpoints (from :func:`load_checkpoints`).

    Returns:
        The problems; empty when the log matches every checkpoint.

    Raises:
        TypeError: ``public_key`` is not a :class:`PublicKey`.
        OSError: The log cannot be read.
    """
    records, _ = read_log(path, public_key)
    log_id = records[0].fields.get("log_id") if records else None
    hashes = line_hashes(path)
    problems = []
    for checkpoint in checkpoints:
        when = format_time(checkpoint.time)
        name = f"checkpoint of {when} ({checkpoint.records} records)"
        try:
            checkpoint.verify_signature(public_key)
        except AuditError as exc:
            problems.append(CheckpointProblem(checkpoint, "bad_signature", str(exc)))
            continue
        problem = head_problem(
            log_id,
            hashes,
            LogHead(checkpoint.log_id, checkpoint.records, checkpoint.head),
            name,
        )
        if problem is not None:
            line = None if problem.record is None else problem.record + 1
            problems.append(
                CheckpointProblem(
                    checkpoint,
                    problem.kind,
                    problem.message,
                    record=problem.record,
                    line=line,
                )
            )
    return problems


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a checkpoint")


def _signature(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None
    if len(raw) != SIGNATURE_SIZE or base64.b64encode(raw).decode() != text:
        return None
    return raw
