"""``lfr audit``: verify a signed audit log and write the deployment record.

``verify`` exits 1 when the log shows any violation (or cannot be read), 0 when
it verifies and every promise was kept. ``report`` writes the publishable
deployment record even when there are violations (they are listed in it), and
then exits 1.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from lfr.audit.report import AuditReport, verify, write_report
from lfr.audit.signing import PublicKey
from lfr.cli._common import fail, parse_time
from lfr.errors import LfrError

_KEY_HELP = (
    "the log's public key (PEM), obtained independently of the log: not the "
    ".pub file lying next to it"
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``audit``."""
    audit = sub.add_parser("audit", help="verify audit logs and publish their record")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    check = asub.add_parser(
        "verify",
        help="check a log's signatures, hash chain and retention promises",
        description="Verifies every record's signature and the hash chain, then "
        "checks the promises: alerts purged by their deadline, holds with a "
        "reason, alerts reviewed (by two people where the policy says so), "
        "watchlists destroyed in time, counters consistent, no biometric "
        "content. Exits 1 on any violation.",
    )
    check.add_argument("log", metavar="LOG", help="the audit log file")
    check.add_argument("--public-key", required=True, metavar="PUB", help=_KEY_HELP)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_now(check)

    report = asub.add_parser(
        "report",
        help="verify a log and write its publishable deployment record",
        description="Verifies LOG as `lfr audit verify` does and writes "
        "deployment-record.json and deployment-record.md into DIR: per deployment "
        "its date, place, purpose, authorising officer, times, cameras, watchlist "
        "size and counts, and the verification result. No biometric data and no "
        "subject ids. Exits 1 if violations were found (they are listed).",
    )
    report.add_argument("log", metavar="LOG", help="the audit log file")
    report.add_argument("--public-key", required=True, metavar="PUB", help=_KEY_HELP)
    report.add_argument("--out", required=True, metavar="DIR", help="where to write")
    _add_now(report)


def _add_now(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--now",
        type=parse_time,
        metavar="ISO",
        help="judge deadlines at this time (ISO 8601, UTC if no zone; default: now)",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``audit verify`` or ``audit report``."""
    command = f"audit {args.audit_command}"
    now: datetime | None = args.now
    try:
        public_key = PublicKey.load(args.public_key)
        result = verify(args.log, public_key, now=now)
    except (LfrError, OSError, ValueError) as exc:
        return fail(command, exc)
    if args.audit_command == "report":
        try:
            paths = write_report(result, args.out)
        except OSError as exc:
            return fail(command, exc)
        for path in paths:
            print(f"wrote {path}")
        if not result.ok:
            print(f"{len(result.violations)} violation(s) found; they are listed")
    elif args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        _print(result, public_key)
    return 0 if result.ok else 1


def _print(report: AuditReport, public_key: PublicKey) -> None:
    data: dict[str, Any] = report.to_json()
    print(f"log: {report.path}")
    print(f"public key: {public_key.key_id}")
    print(f"records verified: {report.records}")
    if report.last_record_sha256 is not None:
        print(f"last record sha256: {report.last_record_sha256}")
    print(f"judged at: {data['verified_at']}")
    print(f"deployments: {len(report.deployments)}")
    for summary in report.deployments:
        state = "stopped" if summary.stopped is not None else "still running"
        print(
            f"  {summary.deployment_id}: {state}, {summary.faces_detected} faces "
            f"seen, {summary.alerts} alerts ({summary.confirmed} confirmed, "
            f"{summary.false_alerts} false, {summary.unreviewed} unreviewed)"
        )
    for notice in report.notices:
        print(f"notice: {notice}")
    if report.ok:
        print("result: OK (no violations)")
        return
    print(f"result: {len(report.violations)} violation(s)")
    for violation in report.violations:
        where = (
            ""
            if violation.line is None
            else f"record {violation.record}, line {violation.line}: "
        )
        print(f"  {where}{violation.kind}: {violation.message}")
