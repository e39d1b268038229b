"""``lfr alerts``: list, show, review, hold, release, action and purge stored alerts.

Alert stores are opened with their own key file (``--key-file K``, also named
``--store-key K`` as in ``lfr run``), not the watchlist's: those who enrol people
cannot read alerts. A store records its key's id but no scrypt parameters, so a
passphrase cannot be turned back into its key.

Every command that changes an alert or exports its crop (``show``, ``review``,
``hold``, ``release``, ``action``, ``purge``) needs the deployment's audit log and
its signing key (``--audit LOG --signing-key SK``) and goes through
:class:`lfr.alerts.Records`, which writes the change and its audit record together
and first records anything the store did that the log lacks. ``list`` without
``--audit`` only reads: it destroys nothing, even expired alerts (with ``--audit``
it purges them, audited). These commands work while ``lfr run`` writes the same
log. Crops are written only to the file ``show --out`` names (mode 0600), never to
the terminal.

Every action reads the store's key, so it first hardens the process (no core
dumps, not dumpable) and exits 1 when it cannot, unless ``--allow-core-dumps``:
warned on stderr, and with ``--audit`` recorded in the log (an ``anomaly``
``core_dumps_allowed``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lfr.cli._common import (
    add_hardening_option,
    fail,
    harden,
    parse_time,
    signer_from,
)
from lfr.errors import LfrError

if TYPE_CHECKING:
    from lfr.alerts import Alert, AlertStore, Records

_DECISIONS = ("confirmed", "false_alert", "inconclusive")
_ACTIONS = ("engaged", "no_action")
#: Extensions whose format is the stored one: the crop is written as stored.
_STORED_AS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg"}
_PNG = b"\x89PNG\r\n\x1a\n"
#: The actions that change or export an alert: they need the log and its key.
_AUDITED = ("show", "review", "hold", "release", "action", "purge", "preview-export")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``alerts``."""
    alerts = sub.add_parser(
        "alerts",
        help="list, show, review, hold, release, action and purge stored alerts",
        description="Works on an alert store (made by a deployment or "
        "lfr.alerts.Records). Every action but list needs the audit log and its "
        "signing key (--audit LOG --signing-key SK): each change or export is "
        "recorded there. list without --audit only reads and destroys nothing.",
    )
    asub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    listing = asub.add_parser(
        "list",
        help="show live alerts, oldest first",
        description="Lists live alerts. Without --audit the store is only read: "
        "expired alerts are hidden but not destroyed. With --audit, expired alerts "
        "are purged first, each purge recorded (alert_purged).",
    )
    _add_store_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = asub.add_parser(
        "show",
        help="write an alert's face crop to a file (mode 0600), audited",
        description="Decrypts the alert's face crop and writes it to --out, as "
        "stored (PNG or JPEG) or, when --out ends in another image extension, "
        "re-encoded to it. The export is recorded (alert_exported: alert id, "
        "--by) before the file is written. Expired and purged alerts cannot be "
        "shown.",
    )
    show.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(show)
    show.add_argument("--out", required=True, metavar="IMG", help="the file to write")
    show.add_argument("--force", action="store_true", help="overwrite IMG")
    _add_by(show, "who exports the crop (an officer's id)")

    review = asub.add_parser(
        "review",
        help="record a human review of an alert",
        description="Records who reviewed the alert and their decision in the "
        "store (encrypted with the alert) and in the audit log (alert_reviewed: "
        "alert id, reviewer, decision; the note stays in the store).",
    )
    review.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(review)
    review.add_argument(
        "--reviewer", required=True, metavar="R", help="who reviews (an officer's id)"
    )
    review.add_argument("--decision", required=True, choices=_DECISIONS)
    review.add_argument("--note", metavar="N", help="free text, kept in the store")

    hold = asub.add_parser(
        "hold",
        help="keep an alert past its expiry for a case",
        description="Keeps a live alert until --until for the case --reason "
        "names (alert_held). At most the policy's max_hold ahead; renew a hold "
        "with another before it ends.",
    )
    hold.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(hold)
    hold.add_argument(
        "--reason", required=True, metavar="R", help="the case reference (required)"
    )
    hold.add_argument(
        "--until",
        required=True,
        type=parse_time,
        metavar="T",
        help="when the hold ends: an ISO 8601 time (UTC if no zone) or Nd / Nh "
        "from now",
    )
    _add_by(hold, "who places the hold (an officer's id)")

    release = asub.add_parser(
        "release",
        help="end the hold on an alert",
        description="Ends the hold on an alert (alert_released); it then follows "
        "its own expiry and, if that has passed, is purged by the next purge.",
    )
    release.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(release)
    _add_by(release, "who releases it (an officer's id)")

    action = asub.add_parser(
        "action",
        help="record what an officer did about an alert",
        description="Records the outcome of an alert (alert_actioned): engaged "
        "(the person was approached) or no_action.",
    )
    action.add_argument("alert_id", metavar="ID", help="the alert's id")
    _add_store_options(action)
    action.add_argument("--action", required=True, choices=_ACTIONS)
    _add_by(action, "the engagement officer (an id)")

    purge = asub.add_parser(
        "purge",
        help="destroy expired alerts that no hold keeps",
        description="Destroys every expired alert that no hold keeps "
        "(crypto-shredding), records each one (alert_purged) and prints how many "
        "were destroyed.",
    )
    _add_store_options(purge)

    previews = asub.add_parser(
        "previews",
        help="list the store's encrypted preview recordings",
        description="Lists the preview recordings made with `lfr run "
        "--record-preview` (id, start, expiry, fps). Without --audit nothing is "
        "destroyed; with --audit, expired alerts and recordings are purged first "
        "(alert_purged, preview_purged).",
    )
    _add_store_options(previews)

    export = asub.add_parser(
        "preview-export",
        help="decrypt a preview recording into a video file (mode 0600), audited",
        description="Decrypts a live preview recording (every passer-by blurred, "
        "matched faces visible) and writes it to --out as a video (.avi: MJPG, "
        ".mp4: mp4v). The export is recorded (preview_exported: recording id, "
        "--by) before any frame is decrypted. The file is not encrypted and is "
        "outside lfr's retention: delete it as alerts are deleted. Expired "
        "recordings cannot be exported.",
    )
    export.add_argument("recording_id", metavar="ID", help="the recording's id")
    _add_store_options(export)
    export.add_argument(
        "--out", required=True, metavar="VIDEO", help="the file to write (.avi, .mp4)"
    )
    export.add_argument("--force", action="store_true", help="overwrite VIDEO")
    _add_by(export, "who exports the recording (an officer's id)")

    for parser in (listing, show, review, hold, release, action, purge, previews):
        _add_audit_options(parser)
        add_hardening_option(parser)
    _add_audit_options(export)
    add_hardening_option(export)


def _add_by(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--by", required=True, metavar="OFFICER", help=text)


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="S", help="the alert store")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--key-file",
        "--store-key",
        dest="key_file",
        metavar="K",
        help="the alert store's own key file (`lfr keys create`), not the watchlist's",
    )
    group.add_argument(
        "--passphrase",
        action="store_true",
        help=argparse.SUPPRESS,  # not offered: refused with the reason (no scrypt)
    )


def _add_audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit",
        metavar="LOG",
        help="the deployment's audit log, where every change is recorded",
    )
    parser.add_argument(
        "--signing-key",
        metavar="SK",
        help="the audit log's signing key (`lfr keys create --signing`), or "
        "'pkcs11:token=T;object=O' (quoted) for a key in a PKCS#11 token; "
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
    if args.audit is None and args.alerts_command in _AUDITED:
        return fail(
            command,
            "this changes or exports an alert, so it is recorded in the audit log: "
            "give the deployment's log and its signing key (--audit LOG "
            "--signing-key SK)",
        )
    try:
        hardened = harden(command, args).hardened  # before the key is read
        if args.audit is None:
            with _read_only(args) as store:
                if args.alerts_command == "previews":
                    return _previews(args, store)
                return _list(args, store)
        with _records(args) as records:
            if not hardened:
                records.log.append(
                    "anomaly",
                    kind="core_dumps_allowed",
                    detail=f"lfr {command} ran with core dumps allowed "
                    "(--allow-core-dumps)",
                )
            return int(_ACTIONS_RUN[args.alerts_command](args, records))
    except KeyError as exc:
        return fail(command, f"no alert {exc.args[0] if exc.args else ''} in the store")
    except (LfrError, OSError, ValueError) as exc:
        return fail(command, exc)


def _store_path(args: argparse.Namespace) -> Path:
    store_path = Path(args.store)
    if not store_path.is_file():
        raise FileNotFoundError(f"no alert store at {store_path}")
    return store_path


@contextlib.contextmanager
def _read_only(args: argparse.Namespace) -> Iterator[AlertStore]:
    """The store alone: it reads and never purges."""
    from lfr.alerts import AlertStore
    from lfr.keys import Key

    store_path = _store_path(args)
    key = Key.from_file(args.key_file)
    try:
        with AlertStore(store_path, key) as store:
            yield store
    finally:
        key.destroy()


@contextlib.contextmanager
def _records(args: argparse.Namespace) -> Iterator[Records]:
    """The store and its log, through the records layer (the log is opened first)."""
    from lfr.alerts import Records
    from lfr.keys import Key

    store_path = _store_path(args)
    audit = Path(args.audit)
    if not audit.is_file():
        raise FileNotFoundError(f"no audit log at {audit}")
    signing = signer_from(args.signing_key)
    key = Key.from_file(args.key_file)
    try:
        with Records.open(store_path, key, audit, signing) as records:
            if records.reconciled.total or records.reconciled.unreadable:
                print(f"note: {records.reconciled.describe()}", file=sys.stderr)
            yield records
    finally:
        key.destroy()


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


def _list(args: argparse.Namespace, store: AlertStore) -> int:
    damaged: list[str] = []
    listed = 0
    for alert in store.alerts(damaged=damaged):
        print(json.dumps(alert.to_json()) if args.json else _line(alert))
        listed += 1
    if not listed and not damaged:  # said on stderr: stdout stays one line per alert
        print(f"lfr alerts list: no live alerts in {args.store}", file=sys.stderr)
    for alert_id in damaged:  # reported, and not allowed to hide the others
        print(
            f"lfr alerts list: alert {alert_id} does not authenticate (altered); "
            "skipped",
            file=sys.stderr,
        )
    return 1 if damaged else 0


def _list_audited(args: argparse.Namespace, records: Records) -> int:
    gone = records.purge()
    if gone:
        print(f"purged {len(gone)} expired alert(s) (audited)", file=sys.stderr)
    return _list(args, records.store)


def _show(args: argparse.Namespace, records: Records) -> int:
    import os

    import cv2
    import numpy as np

    from lfr._files import write_file

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; refusing to overwrite it (--force)")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise FileNotFoundError(f"cannot write into {folder}: no such writable folder")
    suffix = out.suffix.lower()
    wanted = _STORED_AS.get(suffix)
    writable = cv2.haveImageWriter(str(out))
    # The one decryption of the crop, audited (alert_exported) before it returns.
    data = bytearray(records.export_crop(args.alert_id, by=args.by))
    try:
        stored_as = "png" if data.startswith(_PNG) else "jpeg"
        if wanted != stored_as and writable:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError("the stored crop cannot be decoded")
            try:
                ok, encoded = cv2.imencode(suffix, image)
            except cv2.error:
                ok, encoded = False, None
            finally:
                image.fill(0)
            if not ok or encoded is None:
                raise ValueError(f"cannot encode the crop as {suffix}")
            data[:] = bytes(len(data))
            data = bytearray(np.asarray(encoded, np.uint8).tobytes())
            encoded.fill(0)
        write_file(out, data, 0o600, overwrite=args.force)
    except BaseException as exc:
        records.log.append(
            "anomaly",
            kind="other",
            detail=f"the export of alert {args.alert_id} by {args.by} was not "
            f"written to a file: {type(exc).__name__}",
        )
        raise
    finally:
        data[:] = bytes(len(data))
    print(f"wrote the crop of alert {args.alert_id} to {out} (export audited)")
    return 0


def _review(args: argparse.Namespace, records: Records) -> int:
    alert = records.review(args.alert_id, args.reviewer, args.decision, args.note)
    print(
        f"recorded {args.decision} by {args.reviewer} for alert {alert.alert_id} "
        f"({len(alert.decisions)} reviewer(s))"
    )
    return 0


def _hold(args: argparse.Namespace, records: Records) -> int:
    alert = records.hold(args.alert_id, args.reason, args.until, by=args.by)
    until = alert.held_until.isoformat() if alert.held_until else "?"
    print(f"alert {alert.alert_id} held until {until} by {args.by}")
    return 0


def _release(args: argparse.Namespace, records: Records) -> int:
    records.release(args.alert_id, by=args.by)
    print(f"hold on alert {args.alert_id} released by {args.by}")
    return 0


def _action(args: argparse.Namespace, records: Records) -> int:
    records.action(args.alert_id, args.action, by=args.by)
    print(f"recorded {args.action} by {args.by} for alert {args.alert_id}")
    return 0


def _purge(args: argparse.Namespace, records: Records) -> int:
    gone = records.purge()
    print(f"purged {len(gone)} expired alert(s); {len(records.store)} live")
    return 0


_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


def _previews(args: argparse.Namespace, store: AlertStore) -> int:
    from lfr.preview import recordings

    for recording in recordings(store):
        print(
            f"{recording.recording_id}  started {recording.created.isoformat()}  "
            f"expires {recording.expires.isoformat()}  {recording.fps:g} fps"
        )
    return 0


def _previews_audited(args: argparse.Namespace, records: Records) -> int:
    records.purge()
    return _previews(args, records.store)


def _preview_export(args: argparse.Namespace, records: Records) -> int:
    import os

    import cv2

    out = Path(args.out)
    codec = _CODECS.get(out.suffix.lower())
    if codec is None:
        raise ValueError(f"--out must end in {' or '.join(_CODECS)}, not {out.name}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; refusing to overwrite it (--force)")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise FileNotFoundError(f"cannot write into {folder}: no such writable folder")
    from lfr.preview import recordings

    fps = next(
        (
            r.fps
            for r in recordings(records.store)
            if r.recording_id == args.recording_id
        ),
        10.0,
    )
    # Checked and audited (preview_exported) before any frame is decrypted.
    frames = records.export_preview(args.recording_id, by=args.by)
    writer = None
    count = 0
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        for image in frames:
            if writer is None:
                height, width = image.shape[:2]
                writer = cv2.VideoWriter(
                    str(out), cv2.VideoWriter.fourcc(*codec), fps, (width, height)
                )
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {out} with codec {codec}")
            writer.write(image)
            image.fill(0)
            count += 1
    except BaseException:
        if writer is not None:
            writer.release()
        out.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.release()
    os.chmod(out, 0o600)
    print(f"wrote {count} frame(s) to {out} (mode 0600; audited as preview_exported)")
    return 0


_ACTIONS_RUN = {
    "previews": _previews_audited,
    "preview-export": _preview_export,
    "list": _list_audited,
    "show": _show,
    "review": _review,
    "hold": _hold,
    "release": _release,
    "action": _action,
    "purge": _purge,
}
