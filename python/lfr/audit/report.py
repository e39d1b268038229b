"""Verifying an audit log, and the deployment record a force publishes.

:func:`verify` checks the log's hash chain and signatures
(:func:`lfr.audit.log.read_log`) and then every promise
(:mod:`lfr.audit.checks`), and returns an :class:`AuditReport`. :func:`summarise`
turns the records into one :class:`DeploymentSummary` per deployment, and
:func:`write_report` writes the publishable deployment record (JSON and Markdown):
counts and times only, never biometric data or the subject ids of alerts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from lfr._numbers import finite
from lfr.alerts.survey import survey_store
from lfr.audit import checks
from lfr.audit._trail import (
    DeploymentTrail,
    build,
    count,
    iso,
    purge_deadline,
    text,
    when,
)
from lfr.audit.chain import (
    LogRead,
    count_violations,
    link_violations,
    read_chain,
    store_violations,
)
from lfr.audit.checkpoint import Checkpoint, check_against
from lfr.audit.checks import Violation
from lfr.audit.log import Record
from lfr.audit.signing import PublicKey
from lfr.governance.policy import Policy
from lfr.keys import KeyProvider
from lfr.retention import RetentionPolicy

__all__ = [
    "AuditReport",
    "DeploymentSummary",
    "Violation",
    "describe_policy",
    "summarise",
    "verify",
    "write_report",
]

#: The file names :func:`write_report` writes.
RECORD_JSON = "deployment-record.json"
RECORD_MARKDOWN = "deployment-record.md"


@dataclass(frozen=True)
class DeploymentSummary:
    """What one deployment did, in counts: a row of the deployment record.

    Times and metadata come from the ``deployment_started`` and
    ``deployment_stopped`` records (``None`` when absent); frame and face counts
    are the sums of the deployment's ``counters`` records; alert counts come from
    its ``alert_raised`` records and their reviews and actions.

    Attributes:
        deployment_id: The deployment's id.
        started: When it started (``None`` if its start is not in the log).
        stopped: When it stopped (``None`` while running).
        duration: ``stopped - started``, or ``None``.
        location: Where the cameras were.
        purpose: Why the deployment took place.
        authorised_by: The authorising officer.
        camera_ids: The cameras used.
        watchlist_size: Entries in the watchlist (the last one loaded).
        frames_processed: Frames analysed.
        faces_detected: Faces seen.
        faces_skipped: Faces too small, blurred or turned away to be compared.
        faces_wiped: Faces compared, not matched, and wiped at once.
        alerts: Alerts raised.
        confirmed: Alerts every reviewer confirmed.
        false_alerts: Alerts every reviewer judged false.
        inconclusive: Alerts reviewed without agreement, or judged inconclusive.
        unreviewed: Alerts no one reviewed.
        engagements: Alerts on which an officer engaged the person.
        crashed: Whether its process was killed: a later start closed it as
            crashed, and ``stopped`` is when that close was written (when it
            really ended is not known; ``duration`` is then ``None``).
        threshold: The match threshold it recorded (``None`` if unreadable).
        policy: The retention policy it recorded
            (:meth:`lfr.RetentionPolicy.to_json`; ``None`` if unreadable).
        watchlist_created: When its watchlist was created, as recorded at the
            start (``None`` if not recorded).
        keys: ``"separate"`` when the watchlist and the alert store had their
            own keys, ``"shared"`` when one key served both by the operator's
            explicit choice (``allow_shared_key``); ``None`` if not recorded.
        hardened: Whether its process ran with core dumps off and not dumpable,
            as recorded at the start (``False``: the operator allowed core dumps;
            ``None`` if not recorded, as in older logs).

    Raises:
        ValueError: A count is negative.
    """

    deployment_id: str
    started: datetime | None
    stopped: datetime | None
    duration: timedelta | None
    location: str | None
    purpose: str | None
    authorised_by: str | None
    camera_ids: tuple[str, ...]
    watchlist_size: int | None
    frames_processed: int
    faces_detected: int
    faces_skipped: int
    faces_wiped: int
    alerts: int
    confirmed: int
    false_alerts: int
    inconclusive: int
    unreviewed: int
    engagements: int
    crashed: bool = False
    threshold: float | None = None
    policy: dict[str, Any] | None = field(default=None, hash=False)
    watchlist_created: datetime | None = None
    keys: str | None = None
    hardened: bool | None = None

    def __post_init__(self) -> None:
        for name in _SUMMARY_COUNTS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times in ISO 8601 UTC, the duration in seconds."""
        return {
            "deployment_id": self.deployment_id,
            "started": _iso_or_none(self.started),
            "stopped": _iso_or_none(self.stopped),
            "duration_seconds": (
                None if self.duration is None else self.duration.total_seconds()
            ),
            "location": self.location,
            "purpose": self.purpose,
            "authorised_by": self.authorised_by,
            "camera_ids": list(self.camera_ids),
            "watchlist_size": self.watchlist_size,
            **{name: getattr(self, name) for name in _SUMMARY_COUNTS},
            "crashed": self.crashed,
            "threshold": self.threshold,
            "policy": None if self.policy is None else dict(self.policy),
            "watchlist_created": _iso_or_none(self.watchlist_created),
            "keys": self.keys,
            "hardened": self.hardened,
        }


_SUMMARY_COUNTS = (
    "frames_processed",
    "faces_detected",
    "faces_skipped",
    "faces_wiped",
    "alerts",
    "confirmed",
    "false_alerts",
    "inconclusive",
    "unreviewed",
    "engagements",
)


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`verify`.

    Attributes:
        ok: Whether there are no violations.
        path: The log that was verified.
        records: How many records verified (up to the first bad one).
        violations: Every violation, integrity first, then in log order.
        notices: What an auditor should know that is not a violation: a torn
            last line, a deployment still running when the log ends, records
            that refer to an unknown alert.
        deployments: One summary per deployment, in the order they appear.
        verified_at: The time the promises were judged at (``now``).
        last_record_sha256: SHA-256 (hex) of the last verified record's line, as
            the next record's ``prev`` would hold it; publish it to make a later
            truncation of the log detectable. ``None`` for an empty log.
        logs: Every log verified, oldest first (the chain; ``path`` is last).
        store: The alert store checked against the logs, or ``None``.
        policy: The auditor's policy the log was judged against
            (:meth:`lfr.Policy.to_json`), or ``None``.

    Raises:
        ValueError: ``ok`` disagrees with ``violations``, or ``verified_at`` is
            naive.
    """

    ok: bool
    path: str
    records: int
    violations: tuple[Violation, ...]
    notices: tuple[str, ...]
    deployments: tuple[DeploymentSummary, ...]
    verified_at: datetime
    last_record_sha256: str | None = None
    logs: tuple[str, ...] = ()
    store: str | None = None
    policy: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.ok != (not self.violations):
            raise ValueError("ok must be True exactly when there are no violations")
        if self.verified_at.tzinfo is None:
            raise ValueError("verified_at must be timezone-aware")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with every attribute (nested objects as dicts)."""
        return {
            "ok": self.ok,
            "path": self.path,
            "records": self.records,
            "violations": [v.to_json() for v in self.violations],
            "notices": list(self.notices),
            "deployments": [d.to_json() for d in self.deployments],
            "verified_at": iso(self.verified_at),
            "last_record_sha256": self.last_record_sha256,
            "logs": list(self.logs),
            "store": self.store,
            "policy": None if self.policy is None else dict(self.policy),
        }


def verify(
    path: str | os.PathLike[str],
    public_key: PublicKey | str | os.PathLike[str],
    *,
    now: datetime | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    earlier: Sequence[str | os.PathLike[str]] = (),
    store: str | os.PathLike[str] | None = None,
    store_key: KeyProvider | None = None,
    policy: Policy | None = None,
) -> AuditReport:
    """Verifies an audit log: its chain and signatures, then every promise.

    A torn last line (the process stopped while writing it) is a notice. Any
    other problem with the chain (a record modified, removed, inserted or
    reordered, or the wrong key) is one ``integrity`` violation naming the first
    bad line; the promises are then still checked over the records before it.

    With ``checkpoints`` (:mod:`lfr.audit.checkpoint`), every checkpoint the log
    does not match (records cut from its end, an older copy put back, another
    log's checkpoint, a changed or forged checkpoint) is a
    ``checkpoint_mismatch`` violation; a notice says how many matched.

    An alert store outlives one log: its logs form a chain, each naming the
    one before (:mod:`lfr.audit.chain`). With ``earlier`` (the chain's earlier
    logs, oldest first) the logs are verified together, as one history: a log
    that does not continue the one before it is ``chain_broken``, a missing
    log (the first log given continues one not given, or one is skipped) is a
    ``chain_gap``, and record numbers count through the chain (violations name
    the log file). Each ``deployment_started`` records what the store held;
    logs that account for less are ``store_unaccounted``. With ``store`` (read
    only, never written; ``store_key`` optional), every alert it holds or
    purged must be accounted for by the logs and vice versa, and its chain
    record must name the last log at a head that log holds.
    With the auditor's ``policy`` (:class:`lfr.Policy`), every deployment that
    recorded a looser retention policy, a lower threshold or an older watchlist
    than it allows is a ``looser_policy`` violation, and every deadline is
    judged with, field by field, the stricter of the recorded policy and this
    one: an operator cannot buy time by recording a long retention.

    Args:
        path: The log file.
        public_key: The key the log must be signed with (or the path of its PEM
            file), obtained independently of the log (not from the ``.pub`` file
            beside it).
        now: The time to judge deadlines at (aware; default: the current time).
        checkpoints: Checkpoints of the log, kept away from it
            (:func:`lfr.audit.checkpoint.load_checkpoints`); in a chain, each
            is compared with the log it names (with ``path`` if none).
        earlier: The chain's earlier logs, oldest first, signed with the same
            key.
        store: The alert store file, to check against the logs.
        store_key: The store's key, to check it is the store's and that its
            alerts' data keys are theirs; the plaintext is checked without it.
        policy: The auditor's policy (:meth:`lfr.Policy.load`), or ``None`` to
            judge each deployment by the policy it recorded only.

    Returns:
        The report; ``report.ok`` is whether there are no violations.

    Raises:
        ValueError: ``now`` is naive.
        OSError: A log cannot be read.
        AlertStoreError: ``store`` is not an lfr alert store, or is damaged.
        WrongKeyError: ``store_key`` is not the store's key.

    Examples:
        >>> import pathlib, tempfile
        >>> from lfr.audit import AuditLog, SigningKey, verify
        >>> key = SigningKey.generate()
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
        >>> with AuditLog.create(path, key) as log:
        ...     _ = log.append(
        ...         "counters", deployment_id="d1", camera_id="cam-1",
        ...         frames_processed=50, frames_dropped=0, faces_detected=3,
        ...         faces_skipped=1, faces_wiped=1, alerts=0,
        ...     )
        >>> report = verify(path, key.public_key())
        >>> report.ok, [(v.kind, v.record, v.line) for v in report.violations]
        (False, [('counters_inconsistent', 1, 2)])
    """
    if not isinstance(public_key, PublicKey):
        public_key = PublicKey.load(public_key)
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (use datetime.now(timezone.utc))")
    chain = read_chain([*earlier, path], public_key)
    records = [record for log in chain for record in log.records]
    violations: list[Violation] = []
    notices: list[str] = []
    for log in chain:
        for problem in log.problems:
            where = "" if log.name is None else f"{log.name}: "
            if problem.kind == "truncated":
                notices.append(f"{where}{problem.message}")
            else:
                violations.append(
                    Violation(
                        "integrity",
                        log.offset + len(log.records),
                        problem.line,
                        f"{where}{problem.message}",
                        log.name,
                    )
                )
    violations.extend(checks.run_checks(records, now, policy=policy))
    notices.extend(checks.notices(records, now, policy=policy))
    linked, link_notices = link_violations(chain)
    violations.extend(linked)
    notices.extend(link_notices)
    violations.extend(count_violations(records))
    if store is not None:
        held, store_notices = store_violations(chain, survey_store(store, store_key))
        violations.extend(held)
        notices.extend(store_notices)
    checkpoints = list(checkpoints)
    if checkpoints:
        mismatched, matched = _checkpoint_violations(chain, public_key, checkpoints)
        violations.extend(mismatched)
        if matched:
            latest = max(matched, key=lambda c: c.records)
            notices.append(
                f"the log matches {len(matched)} of {len(checkpoints)} "
                f"checkpoint(s); the latest matching one saw {latest.records} "
                f"records at {iso(latest.time)}"
            )
    last = chain[-1]
    return AuditReport(
        ok=not violations,
        path=str(path),
        records=len(records),
        violations=tuple(violations),
        notices=tuple(notices),
        deployments=tuple(summarise(records, policy=policy)),
        verified_at=now,
        last_record_sha256=(
            last.hashes[last.records[-1].line - 1] if last.records else None
        ),
        logs=tuple(str(log.path) for log in chain),
        store=None if store is None else str(store),
        policy=None if policy is None else policy.to_json(),
    )


def _checkpoint_violations(
    chain: Sequence[LogRead], public_key: PublicKey, checkpoints: list[Checkpoint]
) -> tuple[list[Violation], list[Checkpoint]]:
    """Compares each checkpoint with the log of the chain it names (else the last).

    Returns:
        The mismatches as violations, and the checkpoints that matched.
    """
    by_log: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        index = next(
            (i for i, log in enumerate(chain) if log.log_id == checkpoint.log_id),
            len(chain) - 1,
        )
        by_log.setdefault(index, []).append(checkpoint)
    out = []
    matched = []
    for index, group in sorted(by_log.items()):
        log = chain[index]
        problems = check_against(log.path, public_key, group)
        matched += [c for c in group if all(p.checkpoint is not c for p in problems)]
        for p in problems:
            out.append(
                Violation(
                    "checkpoint_mismatch",
                    None if p.record is None else log.offset + p.record,
                    p.line,
                    p.message,
                    log.name,
                )
            )
    return out, matched


def summarise(
    records: Sequence[Record], *, policy: Policy | None = None
) -> list[DeploymentSummary]:
    """One summary per deployment, in the order the deployments appear.

    An alert counts as confirmed when every reviewer's latest decision is
    "confirmed", as a false alert when every one is "false_alert", as
    inconclusive otherwise, and as unreviewed without a review (only reviews
    logged before the alert's purge count). An engagement is an alert with at
    least one ``alert_actioned`` record whose action is "engaged".

    Args:
        records: Verified records, in log order.
        policy: The auditor's policy, if any: reviews then count up to the
            retention end under the stricter of it and the recorded policy, as
            :func:`lfr.audit.checks.alerts_reviewed` counts them.

    Returns:
        The summaries.
    """
    return [_summary(d) for d in build(records, policy).deployments.values()]


def write_report(report: AuditReport, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Writes the publishable deployment record into ``out_dir``.

    ``deployment-record.json`` holds :meth:`AuditReport.to_json` without the
    log's path; ``deployment-record.md`` is a page to publish: per deployment its
    date, place, purpose, authorising officer, times, cameras, watchlist size and
    counts, then the result of the verification. Neither holds biometric data or
    the subject ids of alerts. Existing files are replaced (each atomically).

    Args:
        report: The result of :func:`verify`.
        out_dir: The directory (created if missing).

    Returns:
        The paths written: the JSON file, then the Markdown file.

    Raises:
        OSError: The files cannot be written.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    data["log"] = Path(report.path).name
    del data["path"]
    # File names only: the record is published, the site's paths are not.
    data["logs"] = [Path(p).name for p in report.logs]
    data["store"] = None if report.store is None else Path(report.store).name
    json_path = directory / RECORD_JSON
    md_path = directory / RECORD_MARKDOWN
    _write(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _write(md_path, render_markdown(report))
    return [json_path, md_path]


def render_markdown(report: AuditReport) -> str:
    """The deployment record as a Markdown page (see :func:`write_report`).

    Args:
        report: The result of :func:`verify`.

    Returns:
        The page.
    """
    lines = [
        "# Live facial recognition: deployment record",
        "",
        f"Audit log `{_md(Path(report.path).name)}`, verified on "
        f"{_when(report.verified_at)}: {report.records} signed records.",
        "",
        "This record holds counts only: no images, no biometric data and no "
        "identities of the people on the watchlist or of anyone else.",
        "",
    ]
    if not report.deployments:
        lines += ["No deployment is recorded in this log.", ""]
    for summary in report.deployments:
        lines += _deployment_table(summary)
    lines += ["## Verification", ""]
    if len(report.logs) > 1:
        names = ", ".join(f"`{_md(Path(p).name)}`" for p in report.logs)
        lines += [f"Logs verified as one chain, oldest first: {names}.", ""]
    if report.store is not None:
        lines += [
            f"Checked against the alert store `{_md(Path(report.store).name)}`: "
            "every alert it holds or purged must be accounted for by the logs.",
            "",
        ]
    if report.policy is not None:
        lines += [
            f"Judged against the auditor's policy: {describe_policy(report.policy)}; "
            f"{_auditor_limits(report.policy)}. Every deadline was judged with the "
            "stricter of this policy and the one each deployment recorded.",
            "",
        ]
    if report.ok:
        lines.append(
            "**OK**: the log's signatures and hash chain verify, and every checked "
            "promise was kept (alerts purged by their deadline, holds with a "
            "reason, alerts reviewed, watchlists destroyed in time, counters "
            "consistent, no biometric content)."
        )
    else:
        lines.append(f"**{len(report.violations)} violation(s) found:**")
        lines.append("")
        for violation in report.violations:
            where = (
                ""
                if violation.line is None
                else f" (record {violation.record}, line {violation.line}"
                + ("" if violation.log is None else f" of {_md(violation.log)}")
                + ")"
            )
            lines.append(f"- `{violation.kind}`{where}: {_md(violation.message)}")
    lines.append("")
    crashed = sum(summary.crashed for summary in report.deployments)
    if crashed:
        lines += [
            f"{crashed} deployment(s) ended with their process killed; the next "
            "start closed them as crashed (see the notices).",
            "",
        ]
    if report.notices:
        lines += ["### Notices", ""]
        lines += [f"- {_md(notice)}" for notice in report.notices]
        lines.append("")
    if report.last_record_sha256 is not None:
        lines += [
            f"SHA-256 of the last verified record: `{report.last_record_sha256}`.",
            "",
        ]
    return "\n".join(lines)


def _deployment_table(summary: DeploymentSummary) -> list[str]:
    started, stopped = summary.started, summary.stopped
    if stopped is None:
        end = "still running when the log ends"
    elif summary.crashed:
        end = (
            f"the process was killed; closed as crashed at {_when(stopped)} "
            "by the next start"
        )
    else:
        end = _when(stopped)
    rows = [
        ("Date", started.strftime("%Y-%m-%d") if started else "not recorded"),
        ("Location", summary.location or "not recorded"),
        ("Purpose", summary.purpose or "not recorded"),
        ("Authorising officer", summary.authorised_by or "not recorded"),
        ("Start", _when(started) if started else "not recorded"),
        ("End", end),
        ("Duration", _duration(summary.duration)),
        (
            "Cameras",
            f"{len(summary.camera_ids)} ({', '.join(summary.camera_ids)})"
            if summary.camera_ids
            else "not recorded",
        ),
        (
            "Watchlist size",
            "not recorded"
            if summary.watchlist_size is None
            else str(summary.watchlist_size),
        ),
        (
            "Watchlist created",
            "not recorded"
            if summary.watchlist_created is None
            else _when(summary.watchlist_created),
        ),
        ("Watchlist and alert store keys", _keys(summary.keys)),
        (
            "Match threshold",
            "not recorded" if summary.threshold is None else f"{summary.threshold:g}",
        ),
        (
            "Core dumps",
            "not recorded"
            if summary.hardened is None
            else "off (process hardened)"
            if summary.hardened
            else "ALLOWED by the operator (--allow-core-dumps)",
        ),
        (
            "Retention policy recorded",
            "not recorded"
            if summary.policy is None
            else describe_policy(summary.policy),
        ),
        ("Frames processed", str(summary.frames_processed)),
        ("Faces seen", str(summary.faces_detected)),
        ("Faces wiped without a match", str(summary.faces_wiped)),
        ("Faces too poor to compare (wiped)", str(summary.faces_skipped)),
        ("Alerts", str(summary.alerts)),
        ("Confirmed alerts", str(summary.confirmed)),
        ("False alerts", str(summary.false_alerts)),
        ("Inconclusive", str(summary.inconclusive)),
        ("Unreviewed", str(summary.unreviewed)),
        ("Engagements", str(summary.engagements)),
    ]
    lines = [f"## Deployment {_md(summary.deployment_id)}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_md(value)} |" for name, value in rows]
    lines.append("")
    return lines


def describe_policy(policy: Mapping[str, Any]) -> str:
    """A retention policy's JSON (recorded or the auditor's) in words.

    Args:
        policy: :meth:`lfr.RetentionPolicy.to_json` or :meth:`lfr.Policy.to_json`.

    Returns:
        For example "alerts kept 24 h, holds up to 31 days, purged every 5 min,
        watchlist destroyed within 24 h of the stop, two-person review".
    """
    parts = [
        f"alerts kept {_span(policy.get('alert_ttl_seconds'))}",
        f"holds up to {_span(policy.get('max_hold_seconds'))}",
        f"purged every {_span(policy.get('purge_interval_seconds'))}",
        "watchlist destroyed within "
        f"{_span(policy.get('watchlist_ttl_after_stop_seconds'))} of the stop",
        "two-person review"
        if policy.get("two_person_review") is True
        else "single-person review",
    ]
    return ", ".join(parts)


def _auditor_limits(policy: Mapping[str, Any]) -> str:
    age = policy.get("max_watchlist_age_seconds")
    oldest = (
        "a watchlist of any age"
        if age is None
        else f"a watchlist at most {_span(age)} old at the start"
    )
    return f"match threshold at least {policy.get('min_threshold')}, {oldest}"


def _span(seconds: object) -> str:
    """Seconds in the largest whole unit: ``24 h``, ``31 days``, ``90 s``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "unknown"
    if finite(seconds) is None:
        return "unknown"
    if seconds > 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)} days"
    for size, unit in ((3600, " h"), (60, " min")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g} s"


def _summary(trail: DeploymentTrail) -> DeploymentSummary:
    started = trail.started
    fields = started.fields if started is not None else {}
    start_time = started.time if started is not None else None
    stop_time = trail.stopped.time if trail.stopped is not None else None
    cameras = fields.get("camera_ids")
    camera_ids = (
        tuple(c for c in cameras if isinstance(c, str))
        if isinstance(cameras, list)
        else ()
    )
    watchlist_size = count(fields, "watchlist_size")
    for load in trail.loads[1:] if started is not None else trail.loads:
        watchlist_size = count(load.fields, "watchlist_size")
    totals = dict.fromkeys(
        ("frames_processed", "faces_detected", "faces_skipped", "faces_wiped"), 0
    )
    for record in trail.counters:
        for name in totals:
            totals[name] += count(record.fields, name) or 0
    outcomes = dict.fromkeys(
        ("confirmed", "false_alerts", "inconclusive", "unreviewed"), 0
    )
    engagements = 0
    for alert in trail.alerts:
        end = purge_deadline(alert, trail.policy).end
        decisions = set(alert.reviewers(end).values())
        if not decisions:
            outcomes["unreviewed"] += 1
        elif decisions == {"confirmed"}:
            outcomes["confirmed"] += 1
        elif decisions == {"false_alert"}:
            outcomes["false_alerts"] += 1
        else:
            outcomes["inconclusive"] += 1
        if any(
            r.event == "alert_actioned" and text(r.fields, "action") == "engaged"
            for r in alert.events
        ):
            engagements += 1
    return DeploymentSummary(
        deployment_id=trail.deployment_id,
        started=start_time,
        stopped=stop_time,
        duration=(
            stop_time - start_time
            if start_time is not None and stop_time is not None and not trail.crashed
            else None
        ),
        location=text(fields, "location"),
        purpose=text(fields, "purpose"),
        authorised_by=text(fields, "authorised_by"),
        camera_ids=camera_ids,
        watchlist_size=watchlist_size,
        alerts=len(trail.alerts),
        engagements=engagements,
        crashed=trail.crashed,
        threshold=_threshold(fields),
        policy=_recorded_policy(fields),
        watchlist_created=when(fields, "watchlist_created"),
        keys=_recorded_keys(fields),
        hardened=_hardened(fields),
        **totals,
        **outcomes,
    )


def _recorded_keys(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("keys")
    return value if value in ("separate", "shared") else None


def _keys(keys: str | None) -> str:
    if keys == "separate":
        return "separate (enrolment staff cannot read alerts)"
    if keys == "shared":
        return (
            "ONE KEY FOR BOTH, by the operator's explicit choice: whoever can "
            "open the watchlist can read the alerts"
        )
    return "not recorded"


def _threshold(fields: Mapping[str, Any]) -> float | None:
    value = fields.get("threshold")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return finite(value)


def _hardened(fields: Mapping[str, Any]) -> bool | None:
    value = fields.get("hardened")
    return value if isinstance(value, bool) else None


def _recorded_policy(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return RetentionPolicy.from_json(fields.get("policy")).to_json()
    except ValueError:
        return None


def _write(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(duration: timedelta | None) -> str:
    if duration is None:
        return "not known"
    minutes = int(duration.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_MD_SPECIAL = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]<>|"} | {"\n": " ", "\r": " "}
)


def _md(value: str) -> str:
    """Escapes text for a Markdown table cell or list item."""
    return value.translate(_MD_SPECIAL)
