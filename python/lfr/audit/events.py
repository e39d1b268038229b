"""The audit events: their names, their fields, and what may never be logged.

:data:`EVENTS` maps each event name to the fields it requires and those it may
carry. :func:`check_event` validates an event before it is written and returns its
JSON-ready fields (times become ISO 8601 UTC strings ending in ``Z``).
:func:`biometric_fields` is the rule that keeps biometric content out of the log;
:meth:`lfr.AuditLog.append` applies it before writing and :func:`lfr.audit.verify`
applies it again to what it reads.

Kinds of field (:class:`FieldKind`): ``id`` a non-empty string; ``text`` a
non-empty string of at most 1000 characters; ``count`` an int >= 0; ``number`` a
finite float (ints accepted); ``time`` an aware ``datetime`` or an ISO 8601 string
with a zone; ``sha256`` 64 lowercase hex digits; ``flag`` true or false; ``ids`` a
non-empty list of ids;
``policy`` a :class:`lfr.RetentionPolicy` or its ``to_json()``; and enumerations
(``decision``, ``action``, ``anomaly kind``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from lfr.retention import RetentionPolicy

__all__ = [
    "ANOMALY_KINDS",
    "BIOMETRIC_NAME_PARTS",
    "EVENTS",
    "MAX_NUMBERS",
    "MAX_TEXT",
    "EventSpec",
    "biometric_fields",
    "check_event",
    "format_time",
    "parse_time",
]

#: Substrings that mark a field name as biometric (compared case-insensitively).
BIOMETRIC_NAME_PARTS = (
    "embedding",
    "template",
    "vector",
    "pixel",
    "image",
    "crop",
    "face_data",
    "landmark",
)
#: The most numbers one list may hold (a 128-D embedding has far more).
MAX_NUMBERS = 8
#: The longest string any field may hold.
MAX_TEXT = 1000
_MAX_DETAIL = 500
#: The kinds an ``anomaly`` event may have.
ANOMALY_KINDS = (
    "memory_not_lockable",
    "stream_lost",
    "stream_recovered",
    "model_changed",
    "log_recovered",
    "purge_incomplete",
    "alert_lost",
    "trail_reconciled",
    "clock_went_back",
    "key_beside_log",
    "core_dumps_allowed",
    "other",
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

Checker = Callable[[str, Any], Any]


def format_time(value: datetime) -> str:
    """``value`` as UTC with microseconds and a ``Z``: ``2026-11-26T22:50:48.123456Z``.

    Raises:
        ValueError: ``value`` is naive (its zone is unknown).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "a time must be timezone-aware (use datetime.now(timezone.utc))"
        )
    utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Reverses :func:`format_time` (only that exact form is accepted).

    Raises:
        ValueError: ``text`` is not in that form or is not a valid time.
    """
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a UTC time like 2026-11-26T22:50:48.123456Z")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


# -- field kinds ---------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__


def _string(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {_type_name(value)}")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid Unicode") from None
    return value


def _id(name: str, value: Any) -> str:
    if not _string(name, value, MAX_TEXT).strip():
        raise ValueError(f"{name} must not be empty")
    return str(value)


def _text(name: str, value: Any) -> str:
    return _id(name, value)


def _detail(name: str, value: Any) -> str:
    return _string(name, value, _MAX_DETAIL)


def _count(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {_type_name(value)}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {int(value)}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"{name} must be a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large for a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _time(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(
                value[:-1] + "+00:00" if value.endswith("Z") else value
            )
        except ValueError:
            raise ValueError(f"{name} is not an ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime, got {_type_name(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got a naive time")
    return format_time(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {_type_name(value)}")
    return value


def _sha256(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{name} must be 64 lowercase hex digits (a SHA-256)")
    return value


def _ids(name: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of ids")
    return [_id(f"{name}[{i}]", item) for i, item in enumerate(value)]


def _policy(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, RetentionPolicy):
        return value.to_json()
    try:
        return RetentionPolicy.from_json(value).to_json()
    except ValueError as exc:
        raise ValueError(f"{name} is not a retention policy: {exc}") from None


def _uuid(name: str, value: Any) -> str:
    try:
        return str(uuid.UUID(_id(name, value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID") from None


def _public_key(name: str, value: Any) -> str:
    try:
        raw = base64.b64decode(_id(name, value), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"{name} must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"{name} must be a raw 32-byte Ed25519 key in base64")
    return str(value)


def _choice(*allowed: str) -> Checker:
    def check(name: str, value: Any) -> str:
        if value not in allowed or not isinstance(value, str):
            raise ValueError(
                f"{name} must be one of {', '.join(allowed)}; got {value!r}"
            )
        return value

    return check


# -- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class EventSpec:
    """The fields of one event.

    Attributes:
        required: Field name -> checker, for fields every such event has.
        optional: Field name -> checker, for fields it may have.
    """

    required: Mapping[str, Checker]
    optional: Mapping[str, Checker]


def _spec(
    required: dict[str, Checker], optional: dict[str, Checker] | None = None
) -> EventSpec:
    return EventSpec(required, optional or {})


_COUNTS = (
    "frames_processed",
    "frames_dropped",
    "faces_detected",
    "faces_skipped",
    "faces_wiped",
    "alerts",
)

#: Every event an audit log may hold, by name.
EVENTS: Mapping[str, EventSpec] = {
    # A log that continues a store's chain of logs (lfr.alerts.Records) names the
    # previous log of that chain, and the record count and head hash it ended at.
    "log_created": _spec(
        {"log_id": _uuid, "public_key": _public_key, "lfr_version": _id},
        {
            "previous_log_id": _uuid,
            "previous_records": _count,
            "previous_head": _sha256,
        },
    ),
    "deployment_started": _spec(
        {
            "deployment_id": _id,
            "camera_ids": _ids,
            "location": _text,
            "purpose": _text,
            "authorised_by": _id,
            "watchlist_sha256": _sha256,
            "watchlist_size": _count,
            "model_id": _id,
            "threshold": _number,
            "policy": _policy,
            "lfr_version": _id,
        },
        # What the alert store held when the deployment started (written under
        # the store's lock): its live alerts and its purged ones (tombstones and
        # rows whose key a purge destroyed); the chain of logs must account for
        # both. And when the watchlist was created (Watchlist.created): an
        # auditor's policy may bound its age at the start (Policy.max_watchlist_age).
        # And whether the watchlist and the store were under separate keys, or one
        # key by the operator's explicit choice (Deployment(allow_shared_key=True),
        # lfr run --allow-shared-key): "separate" or "shared".
        # And whether the process was hardened (no core dumps, not dumpable;
        # false only under the operator's allow_core_dumps override).
        {
            "store_id": _id,
            "store_alerts": _count,
            "store_purged": _count,
            "watchlist_created": _time,
            "keys": _choice("separate", "shared"),
            "hardened": _flag,
        },
    ),
    # A deployment killed before it could log its stop is closed by the next start
    # (lfr.audit.liveness.close_crashed): reason "crashed", and last_record, the
    # seq of its last record in the log. The record's own time is the close.
    "deployment_stopped": _spec(
        {"deployment_id": _id}, {"reason": _text, "last_record": _count}
    ),
    "counters": _spec(
        {"deployment_id": _id, "camera_id": _id, **dict.fromkeys(_COUNTS, _count)}
    ),
    # The pipeline always writes every field; the minimum (the example) is
    # id, subject and score: verification then takes the record's own time and the
    # default policy's alert_ttl for the deadline, and notes the missing deployment.
    "alert_raised": _spec(
        {"alert_id": _id, "subject_id": _id, "score": _number},
        {"deployment_id": _id, "camera_id": _id, "time": _time, "expires": _time},
    ),
    "alert_reviewed": _spec(
        {
            "alert_id": _id,
            "reviewer": _id,
            "decision": _choice("confirmed", "false_alert", "inconclusive"),
        }
    ),
    "alert_actioned": _spec(
        {"alert_id": _id, "action": _choice("engaged", "no_action"), "by": _id}
    ),
    "alert_held": _spec({"alert_id": _id, "reason": _text, "until": _time, "by": _id}),
    "alert_released": _spec({"alert_id": _id}, {"by": _id}),
    "alert_purged": _spec({"alert_id": _id}),
    # A better view of the face replaced the stored crop, score and box.
    "alert_improved": _spec({"alert_id": _id, "score": _number}),
    # A person exported the alert's crop (lfr alerts show, for a case file).
    "alert_exported": _spec({"alert_id": _id, "by": _id}),
    # A person exported a preview recording (lfr alerts preview-export); an
    # expired recording was destroyed by a purge.
    "preview_exported": _spec({"recording_id": _id, "by": _id}),
    "preview_purged": _spec({"recording_id": _id}),
    "watchlist_loaded": _spec(
        {
            "deployment_id": _id,
            "watchlist_sha256": _sha256,
            "watchlist_size": _count,
            "model_id": _id,
        }
    ),
    # cause "process_ended": the deployment's process died (closed as crashed);
    # its in-memory copy ended with it, not wiped by lfr.
    "watchlist_destroyed": _spec(
        {"watchlist_sha256": _sha256},
        {"deployment_id": _id, "cause": _choice("destroyed", "process_ended")},
    ),
    "anomaly": _spec(
        {"kind": _choice(*ANOMALY_KINDS)},
        {"detail": _detail, "camera_id": _id, "deployment_id": _id},
    ),
}


def check_event(event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validates an event and returns its JSON-ready fields.

    Args:
        event: The event name, a key of :data:`EVENTS`.
        fields: Its fields.

    Returns:
        A new dict with the same names: times as ``...Z`` strings, numbers as
        ``int``/``float``, lists as lists, the policy as its ``to_json()``.

    Raises:
        ValueError: The event is unknown; a field is biometric-looking (see
            :func:`biometric_fields`), unknown, missing, or of the wrong kind.
            The message names the fields, never their values.
    """
    spec = EVENTS.get(event) if isinstance(event, str) else None
    if spec is None:
        raise ValueError(
            f"unknown audit event {event!r}; known: {', '.join(sorted(EVENTS))}"
        )
    bad = biometric_fields(fields)
    if bad:
        raise ValueError(
            f"{event}: refusing biometric-looking content in {', '.join(bad)}; "
            "the audit log holds no biometric data"
        )
    unknown = sorted(
        str(name)
        for name in fields
        if name not in spec.required and name not in spec.optional
    )
    if unknown:
        raise ValueError(f"{event}: unknown fields {', '.join(unknown)}")
    missing = [name for name in spec.required if name not in fields]
    if missing:
        raise ValueError(f"{event}: missing fields {', '.join(missing)}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        check = spec.required.get(name) or spec.optional[name]
        out[name] = check(f"{event}.{name}", value)
    return out


def biometric_fields(fields: Mapping[str, Any]) -> list[str]:
    """The fields that hold, or may hold, biometric content.

    A field is refused when its name contains one of
    :data:`BIOMETRIC_NAME_PARTS` (case-insensitive), or its value is (or holds,
    at any depth) a numpy array, ``bytes``/``bytearray``/``memoryview``, a
    list or tuple with more than :data:`MAX_NUMBERS` numbers in all, or a string
    longer than :data:`MAX_TEXT` characters. Nested dicts are searched the same
    way, their keys included.

    Args:
        fields: An event's fields (as given to ``append``, or as read back).

    Returns:
        The offending field names, in order; a nested one as a path
        (``policy.embedding``, ``notes[2]``). Empty when the fields are clean.
    """
    found: list[str] = []
    for name, value in fields.items():
        _scan(str(name), str(name), value, found)
    return found


def _scan(path: str, name: str, value: Any, found: list[str]) -> None:
    lowered = name.lower()
    if any(part in lowered for part in BIOMETRIC_NAME_PARTS):
        found.append(path)
        return
    if isinstance(value, (np.ndarray, bytes, bytearray, memoryview)):
        found.append(path)
    elif isinstance(value, str):
        if len(value) > MAX_TEXT:
            found.append(path)
    elif isinstance(value, (list, tuple)):
        if _numbers_in(value) > MAX_NUMBERS:
            found.append(path)
            return
        for i, item in enumerate(value):
            _scan(f"{path}[{i}]", "", item, found)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _scan(f"{path}.{key}", str(key), item, found)


def _numbers_in(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return 0
    if isinstance(value, (int, float, np.number)):
        return 1
    if isinstance(value, (list, tuple)):
        return sum(_numbers_in(item) for item in value)
    return 0
