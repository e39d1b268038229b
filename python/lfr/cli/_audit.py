"""``lfr audit``: verify a signed audit log and write the deployment record.

``verify`` exits 1 when the log shows any violation (or cannot be read), 0 when
it verifies and every promise was kept; with ``--checkpoint FILE`` (repeatable)
a checkpoint the log does not match is a violation. ``report`` writes the
publishable deployment record even when there are violations (they are listed
in it), and then exits 1. With ``--policy FILE`` both judge the log against the
auditor's policy (:class:`lfr.Policy`); a policy file that cannot be used exits 2
before the log is read. ``checkpoint`` prints (or writes) a signed checkpoint
of a log as it stands.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from lfr._files import write_file
from lfr.audit.checkpoint import Checkpoint, load_checkpoints, make_checkpoint
from lfr.audit.log import AuditLog
from lfr.audit.report import AuditReport, describe_policy, verify, write_report
from lfr.audit.signing import PublicKey
from lfr.cli._common import (
    add_hardening_option,
    fail,
    harden,
    parse_time,
    signer_from,
)
from lfr.errors import LfrError, PolicyError
from lfr.governance.policy import Policy, read_policy_file
from lfr.keys import Key

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
        "checks the promises: times that never go back, alert times that agree "
        "with their records, alerts purged by their deadline, holds with a "
        "reason, nothing done to an expired alert, alerts reviewed (by two people "
        "where the policy says so), watchlists destroyed in time, counters "
        "consistent, no biometric content. Several LOGs are a store's chain "
        "(oldest first); --store checks the alert store against them, "
        "--checkpoint the checkpoints sent off the site, --policy your own rules "
        "(docs/audit.md). Exits 1 on any violation.",
    )
    _add_logs(check)
    check.add_argument("--public-key", required=True, metavar="PUB", help=_KEY_HELP)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of checkpoints of the log (one JSON object a line), kept away "
        "from it; the log must match each (repeatable)",
    )
    _add_store(check)
    _add_policy(check)
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
    _add_logs(report)
    report.add_argument("--public-key", required=True, metavar="PUB", help=_KEY_HELP)
    report.add_argument("--out", required=True, metavar="DIR", help="where to write")
    _add_store(report)
    _add_policy(report)
    _add_now(report)

    point = asub.add_parser(
        "checkpoint",
        help="sign a checkpoint of a log: its id, record count and last hash",
        description="Signs, with the log's key, a checkpoint of LOG as it stands "
        "(its log_id, how many records it holds and the hash of the last one) and "
        "prints it as one JSON line, or writes it to FILE (mode 0644, replaced "
        "atomically). Keep checkpoints where the log's operator cannot change "
        "them; `lfr audit verify --checkpoint` then finds records cut from the "
        "end of the log or an older copy put back.",
    )
    point.add_argument("log", metavar="LOG", help="the audit log file")
    point.add_argument(
        "--signing-key",
        required=True,
        metavar="SK",
        help="the log's signing key: a key file, or 'pkcs11:token=T;object=O' "
        "(quoted) for a key in a PKCS#11 token",
    )
    point.add_argument("--out", metavar="FILE", help="write it here, not to stdout")
    add_hardening_option(point)


def _add_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="the audit log; or the logs of a store's chain, oldest first, all "
        "signed with the same key (each log names the one before it)",
    )


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="FILE",
        help="the alert store the logs belong to (read only; a copy is best): "
        "every alert it holds or purged must be accounted for by the logs",
    )
    parser.add_argument(
        "--store-key-file",
        "--store-key",
        dest="store_key_file",
        metavar="K",
        help="the store's key file, to check it is the store's and that its "
        "alerts' data keys are theirs (without it, only the plaintext ids are "
        "checked); the process is hardened (no core dumps) before it is read",
    )
    add_hardening_option(parser)


def _add_policy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="FILE",
        help="the auditor's policy (JSON, see docs/policy.example.json): every "
        "deployment that recorded a looser retention, a lower threshold or an "
        "older watchlist is a looser_policy violation, and deadlines use the "
        "stricter of it and each recorded policy; a bad file exits 2",
    )


def _add_now(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--now",
        type=parse_time,
        metavar="ISO",
        help="judge deadlines at this time (ISO 8601, UTC if no zone; default: now)",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``audit verify``, ``audit report`` or ``audit checkpoint``."""
    command = f"audit {args.audit_command}"
    if args.audit_command == "checkpoint":
        return _checkpoint(args, command)
    now: datetime | None = args.now
    policy: Policy | None = None
    policy_sha256 = ""
    if args.policy is not None:
        try:
            policy, policy_sha256 = read_policy_file(args.policy)
        except PolicyError as exc:
            fail(command, exc)
            return 2
    try:
        public_key = PublicKey.load(args.public_key)
        checkpoints: list[Checkpoint] = []
        for path in getattr(args, "checkpoint", []):
            checkpoints += load_checkpoints(path)
        store_key = None
        if args.store_key_file is not None:
            harden(command, args)  # before the store key is read
            store_key = Key.from_file(args.store_key_file)
        if store_key is not None and args.store is None:
            raise ValueError("--store-key-file needs --store")
        *earlier, log = args.logs
        result = verify(
            log,
            public_key,
            now=now,
            checkpoints=checkpoints,
            earlier=earlier,
            store=args.store,
            store_key=store_key,
            policy=policy,
        )
    except (LfrError, OSError, ValueError) as exc:
        return fail(command, exc)
    if args.audit_command == "report":
        try:
            paths = write_report(result, args.out)
        except OSError as exc:
            return fail(command, exc)
        for path in paths:
            print(f"wrote {path}")
        if policy is not None:
            print(f"judged against policy {args.policy} (sha256 {policy_sha256})")
        if not result.ok:
            print(f"{len(result.violations)} violation(s) found; they are listed")
    elif args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        _print(result, public_key, args.policy, policy_sha256)
    return 0 if result.ok else 1


def _checkpoint(args: argparse.Namespace, command: str) -> int:
    try:
        harden(command, args)  # before the signing key (or a token's PIN) is read
        key = signer_from(args.signing_key)
        with AuditLog.open(args.log, key) as log:
            checkpoint = make_checkpoint(log)
        text = checkpoint.to_json() + "\n"
        if args.out:
            write_file(Path(args.out), text.encode(), 0o644, overwrite=True)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
    except (LfrError, OSError, ValueError) as exc:
        return fail(command, exc)
    return 0


def _print(
    report: AuditReport, public_key: PublicKey, policy_path: str | None, sha256: str
) -> None:
    data: dict[str, Any] = report.to_json()
    if len(report.logs) > 1:
        print(f"logs (oldest first): {', '.join(report.logs)}")
    else:
        print(f"log: {report.path}")
    if report.store is not None:
        print(f"alert store: {report.store}")
    print(f"public key: {public_key.key_id}")
    print(f"records verified: {report.records}")
    if report.last_record_sha256 is not None:
        print(f"last record sha256: {report.last_record_sha256}")
    print(f"judged at: {data['verified_at']}")
    if policy_path is None:
        print("judged against: the policy each deployment recorded (no --policy)")
    else:
        print(f"judged against policy: {policy_path} (sha256 {sha256})")
    print(f"deployments: {len(report.deployments)}")
    for summary in report.deployments:
        state = "stopped" if summary.stopped is not None else "still running"
        print(
            f"  {summary.deployment_id}: {state}, {summary.faces_detected} faces "
            f"seen, {summary.alerts} alerts ({summary.confirmed} confirmed, "
            f"{summary.false_alerts} false, {summary.inconclusive} inconclusive, "
            f"{summary.unreviewed} unreviewed)"
        )
        threshold = "not recorded" if summary.threshold is None else summary.threshold
        print(f"    threshold in force: {threshold}")
        policy = (
            "not recorded or unreadable"
            if summary.policy is None
            else describe_policy(summary.policy)
        )
        print(f"    policy in force: {policy}")
    for notice in report.notices:
        print(f"notice: {notice}")
    if report.ok:
        print("result: OK (no violations)")
        return
    print(f"result: {len(report.violations)} violation(s)")
    for violation in report.violations:
        of = "" if violation.log is None else f" of {violation.log}"
        where = (
            ""
            if violation.line is None
            else f"record {violation.record}, line {violation.line}{of}: "
        )
        print(f"  {where}{violation.kind}: {violation.message}")
