"""``lfr alerts``: list, show, review and purge the alerts of an alert store.

Alert stores are opened with a key file only: a store records its key's id but no
scrypt parameters, so a passphrase cannot be turned back into its key. Opening a
store purges what has expired; with ``--audit LOG --signing-key SK`` every alert
so destroyed is recorded (``alert_purged``), as is a review (``alert_reviewed``).
The audit log is opened (and verified) before the store is touched. Crops are
written only to the file ``show --out`` names (mode 0600), never to the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lfr.cli._common import fail
from lfr.errors import LfrError

if TYPE_CHECKING:
    from lfr.alerts import Alert, AlertStore
    from lfr.audit.log import AuditLog

_DECISIONS = ("confirmed", "false_alert", "inconclusive")
#: Extensions whose format is the stored one: the crop is written as stored.
_STORED_AS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg"}
_PNG = b"\x89PNG\r\n\x1a\n"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``alerts``."""
    alerts = sub.add_parser(
        "alerts",
        help="list, show, review and purge stored alerts",
        description="Works on an alert store (made by a deployment or "
        "lfr.AlertStore). Opening a store purges the alerts that have expired.",
    )
    asub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    listing = asub.add_parser("list", help="show live alerts, oldest first")
    _add_store_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = asub.add_parser(
        "show",
        help="write an alert's face crop to a file (mode 0600)",
        description="Decrypts the alert's face crop and writes it to --out, as "
        "stored (PNG or JPEG) or, when --out ends in another image extension, "
        "re-encoded to it. Expired and purged alerts cannot be shown.",
    )
    show.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(show)
    show.add_argument("--out", required=True, metavar="IMG", help="the file to write")
    show.add_argument("--force", action="store_true", help="overwrite IMG")

    review = asub.add_parser(
        "review",
        help="record a human review of an alert",
        description="Records who reviewed the alert and their decision in the "
        "store (encrypted with the alert) and, with --audit, in the audit log "
        "(alert_reviewed: alert id, reviewer, decision; the note stays in the "
        "store).",
    )
    review.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(review)
    review.add_argument(
        "--reviewer", required=True, metavar="R", help="who reviews (an officer's id)"
    )
    review.add_argument("--decision", required=True, choices=_DECISIONS)
    review.add_argument("--note", metavar="N", help="free text, kept in the store")

    purge = asub.add_parser(
        "purge",
        help="destroy expired alerts that no hold keeps",
        description="Destroys every expired alert that no hold keeps "
        "(crypto-shredding) and prints how many were destroyed; with --audit, "
        "records each one (alert_purged).",
    )
    _add_store_options(purge)

    for parser in (listing, show, review, purge):
        _add_audit_options(parser)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="S", help="the alert store")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--key-file", metavar="K", help="the store's key file (`lfr keys create`)"
    )
    group.add_argument(
        "--passphrase",
        action="store_true",
        help="not supported: an alert store keeps no scrypt parameters, so it is "
        "opened with its key file only",
    )


def _add_audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit",
        metavar="LOG",
        help="the deployment's audit log, to record reviews and purges in",
    )
    parser.add_argument(
        "--signing-key",
        metavar="SK",
        help="the audit log's signing key (`lfr keys create --signing`); "
        "needed with --audit",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs one ``alerts`` action."""
    command = f"alerts {args.alerts_command}"
    if args.passphrase:
        return fail(
            command,
            "alert stores are opened with their key file (--key-file): a store "
            "keeps no scrypt parameters, so a passphrase cannot be used",
        )
    if (args.audit is None) != (args.signing_key is None):
        return fail(command, "--audit and --signing-key go together")
    try:
        with _opened(args) as (store, audit):
            return int(_ACTIONS[args.alerts_command](args, store, audit))
    except KeyError as exc:
        return fail(command, f"no alert {exc.args[0] if exc.args else ''} in the store")
    except (LfrError, OSError, ValueError) as exc:
        return fail(command, exc)


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[tuple[AlertStore, AuditLog | None]]:
    """The store and, with ``--audit``, the audit log (opened first)."""
    from lfr.alerts import AlertStore
    from lfr.audit.log import AuditLog
    from lfr.audit.signing import SigningKey
    from lfr.keys import Key

    store_path = Path(args.store)
    if not store_path.is_file():
        raise FileNotFoundError(f"no alert store at {store_path}")
    with contextlib.ExitStack() as stack:
        audit = None
        if args.audit is not None:
            audit = stack.enter_context(
                AuditLog.open(args.audit, SigningKey.load(args.signing_key))
            )
        key = Key.from_file(args.key_file)
        stack.callback(key.destroy)
        store = stack.enter_context(AlertStore(store_path, key))
        _record_purges(audit, store.purged_on_open)
        yield store, audit


def _record_purges(audit: AuditLog | None, alert_ids: tuple[str, ...]) -> None:
    if audit is not None:
        for alert_id in alert_ids:
            audit.append("alert_purged", alert_id=alert_id)


def _line(alert: Alert) -> str:
    reviews = ", ".join(f"{r.reviewer}: {r.decision}" for r in alert.reviews)
    held = (
        f"\theld until {alert.held_until.isoformat()} ({alert.hold_reason})"
        if alert.held_until is not None
        else ""
    )
    return (
        f"{alert.alert_id}\t{alert.time.isoformat()}\tcamera {alert.camera_id}\t"
        f"subject {alert.subject_id}\tscore {alert.score:.3f}\t"
        f"expires {alert.expires.isoformat()}{held}\t"
        f"reviews: {reviews or 'none'}"
    )


def _list(args: argparse.Namespace, store: AlertStore, audit: AuditLog | None) -> int:
    for alert in store.alerts():
        print(json.dumps(alert.to_json()) if args.json else _line(alert))
    return 0


def _show(args: argparse.Namespace, store: AlertStore, audit: AuditLog | None) -> int:
    import cv2
    import numpy as np

    from lfr._files import write_file

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; refusing to overwrite it (--force)")
    suffix = out.suffix.lower()
    wanted = _STORED_AS.get(suffix)
    stored = store.crop(args.alert_id)
    stored_as = "png" if stored.startswith(_PNG) else "jpeg"
    if wanted == stored_as or (wanted is None and not cv2.haveImageWriter(str(out))):
        data = bytearray(stored)
    else:
        image = store.crop_image(args.alert_id)
        try:
            ok, encoded = cv2.imencode(suffix, image)
        except cv2.error:
            ok = False
        finally:
            image.fill(0)
        if not ok:
            raise ValueError(f"cannot encode the crop as {suffix}")
        data = bytearray(np.asarray(encoded, np.uint8).tobytes())
        encoded.fill(0)
    try:
        write_file(out, data, 0o600, overwrite=args.force)
    finally:
        data[:] = bytes(len(data))
    print(f"wrote the crop of alert {args.alert_id} to {out}")
    return 0


def _review(args: argparse.Namespace, store: AlertStore, audit: AuditLog | None) -> int:
    alert = store.review(args.alert_id, args.reviewer, args.decision, args.note)
    if audit is not None:
        audit.append(
            "alert_reviewed",
            alert_id=alert.alert_id,
            reviewer=args.reviewer,
            decision=args.decision,
        )
    print(
        f"recorded {args.decision} by {args.reviewer} for alert {alert.alert_id} "
        f"({len(alert.decisions)} reviewer(s))"
    )
    return 0


def _purge(args: argparse.Namespace, store: AlertStore, audit: AuditLog | None) -> int:
    gone = store.purge()
    _record_purges(audit, tuple(gone))
    count = len(store.purged_on_open) + len(gone)
    print(f"purged {count} expired alert(s); {len(store)} live")
    return 0


_ACTIONS = {"list": _list, "show": _show, "review": _review, "purge": _purge}
