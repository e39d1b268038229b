"""Hypothesis: an audit log verifies as written, and no single changed byte passes.

The exact property for a change: let ``k`` be the line holding the changed byte (a
line's newline belongs to it). Then :func:`lfr.audit.read_log` returns exactly one
problem, on line ``k``, and exactly the ``k - 1`` records before it, unchanged. The
problem is ``"truncated"`` if and only if the changed byte is the file's final
newline (the last line then has no newline: a torn tail), never otherwise.

Why it holds: lines before ``k`` are untouched and verify. Line ``k`` changed: a
newline written into it leaves an incomplete JSON object on line ``k``; its own
newline replaced joins two JSON objects (not valid JSON) or, for the final one,
leaves a torn tail; any other change either breaks the JSON, changes a signed
value (the signature fails), changes the signature (it fails, or decodes to the
same bytes from non-canonical base64), or keeps every value while changing the
bytes (the canonical-form check fails).
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import lfr
from lfr.audit import AuditLog, SigningKey, read_log
from lfr.audit.events import ANOMALY_KINDS, check_event

KEY = SigningKey.generate()
PUBLIC = KEY.public_key()

# Printable and non-ASCII text, no surrogates (not valid UTF-8) and not blank.
text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(
    lambda s: s.strip() != ""
)
ids = text
counts = st.integers(0, 2**53)
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(
    -(2**53), 2**53
)
zones = st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))
times = st.datetimes(datetime(1970, 1, 1), datetime(2200, 1, 1), timezones=zones)
sha256 = st.text("0123456789abcdef", min_size=64, max_size=64)
policies = st.builds(
    lfr.RetentionPolicy,
    alert_ttl=st.timedeltas(timedelta(seconds=1), timedelta(days=30)),
    two_person_review=st.booleans(),
)


def event(
    name: str, required: dict[str, Any], optional: dict[str, Any] | None = None
) -> Any:
    """(name, fields) with every required field and any of the optional ones."""
    optional = optional or {}
    return st.tuples(
        st.just(name),
        st.fixed_dictionaries(required, optional=optional),
    )


EVENTS = st.one_of(
    event(
        "deployment_started",
        {
            "deployment_id": ids,
            "camera_ids": st.lists(ids, min_size=1, max_size=4),
            "location": text,
            "purpose": text,
            "authorised_by": ids,
            "watchlist_sha256": sha256,
            "watchlist_size": counts,
            "model_id": ids,
            "threshold": numbers,
            "policy": policies,
            "lfr_version": ids,
        },
    ),
    event(
        "deployment_stopped",
        {"deployment_id": ids},
        {"reason": text, "last_record": counts},
    ),
    event(
        "counters",
        {
            "deployment_id": ids,
            "camera_id": ids,
            "frames_processed": counts,
            "frames_dropped": counts,
            "faces_detected": counts,
            "faces_skipped": counts,
            "faces_wiped": counts,
            "alerts": counts,
        },
    ),
    event(
        "alert_raised",
        {
            "alert_id": ids,
            "deployment_id": ids,
            "camera_id": ids,
            "subject_id": ids,
            "score": numbers,
            "time": times,
            "expires": times,
        },
    ),
    event(
        "alert_reviewed",
        {
            "alert_id": ids,
            "reviewer": ids,
            "decision": st.sampled_from(["confirmed", "false_alert", "inconclusive"]),
        },
    ),
    event(
        "alert_actioned",
        {
            "alert_id": ids,
            "action": st.sampled_from(["engaged", "no_action"]),
            "by": ids,
        },
    ),
    event("alert_held", {"alert_id": ids, "reason": text, "until": times, "by": ids}),
    event("alert_released", {"alert_id": ids}, {"by": ids}),
    event("alert_purged", {"alert_id": ids}),
    event("alert_exported", {"alert_id": ids, "by": ids}),
    event(
        "watchlist_loaded",
        {
            "deployment_id": ids,
            "watchlist_sha256": sha256,
            "watchlist_size": counts,
            "model_id": ids,
        },
    ),
    event(
        "watchlist_destroyed",
        {"watchlist_sha256": sha256},
        {
            "deployment_id": ids,
            "cause": st.sampled_from(["destroyed", "process_ended"]),
        },
    ),
    event(
        "anomaly",
        {"kind": st.sampled_from(ANOMALY_KINDS)},
        {"detail": st.text(max_size=50), "camera_id": ids, "deployment_id": ids},
    ),
)
SEQUENCES = st.lists(EVENTS, min_size=0, max_size=6)


def write(directory: str, sequence: list[tuple[str, dict[str, Any]]]) -> Path:
    path = Path(directory) / "audit.jsonl"
    with AuditLog.create(path, KEY) as log:
        for name, fields in sequence:
            log.append(name, **fields)
    return path


@settings(max_examples=100)
@given(SEQUENCES)
def test_a_written_log_verifies(sequence: list[tuple[str, dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = write(directory, sequence)
        records, problems = read_log(path, PUBLIC)
    assert problems == []
    assert [r.seq for r in records] == list(range(len(sequence) + 1))
    assert [(r.event, dict(r.fields)) for r in records[1:]] == [
        (name, check_event(name, fields)) for name, fields in sequence
    ]


@settings(max_examples=300)
@given(SEQUENCES, st.data())
def test_no_single_changed_byte_passes(
    sequence: list[tuple[str, dict[str, Any]]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = write(directory, sequence)
        original = path.read_bytes()
        records, _ = read_log(path, PUBLIC)
        newlines = [i for i, byte in enumerate(original) if byte == ord("\n")]
        position = data.draw(
            st.integers(0, len(original) - 1) | st.sampled_from(newlines),
            label="position",
        )
        value = data.draw(
            (st.just(ord("\n")) | st.integers(0, 255)).filter(
                lambda b: b != original[position]
            ),
            label="new byte",
        )
        changed = bytearray(original)
        changed[position] = value
        path.write_bytes(bytes(changed))
        after, problems = read_log(path, PUBLIC)
    line = original[:position].count(b"\n") + 1
    assert [p.line for p in problems] == [line]
    assert after == records[: line - 1]
    final_newline = position == len(original) - 1
    assert (problems[0].kind == "truncated") == final_newline
