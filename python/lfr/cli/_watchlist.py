"""``lfr watchlist``: create, enrol, list, remove, info.

``list`` and ``info`` show subject ids and the records a force keeps, never
templates. Every command that changes the file writes it atomically. Every action
but ``info`` reads a key (and ``enroll`` faces), so it first hardens the process
(no core dumps, not dumpable) and exits 1 when it cannot, unless
``--allow-core-dumps``: these commands write no audit log, so that is warned on
stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lfr.cli._common import (
    add_hardening_option,
    add_key_options,
    fail,
    harden,
    key_from,
    parse_time,
)
from lfr.errors import EnrolmentError, LfrError

if TYPE_CHECKING:
    from lfr.embed import DlibModel

_MODELS: tuple[DlibModel, ...] = ("dlib-resnet-int8", "dlib-resnet")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``watchlist``."""
    wl = sub.add_parser("watchlist", help="create and manage encrypted watchlists")
    wsub = wl.add_subparsers(dest="watchlist_command", metavar="ACTION", required=True)

    create = wsub.add_parser("create", help="create an empty watchlist file")
    create.add_argument("path", metavar="PATH", help="the .lfrw file to write")
    add_key_options(create)
    create.add_argument(
        "--model",
        choices=_MODELS,
        help="the embedder its templates will come from (default: the CPU's default)",
    )
    create.add_argument(
        "--expires", type=parse_time, help="when the watchlist lapses (ISO time or Nd)"
    )
    create.add_argument("--force", action="store_true", help="overwrite PATH")

    enroll = wsub.add_parser(
        "enroll",
        help="add a subject from photographs (each must show exactly one usable face)",
        description="Adds one subject: one template per image. If any image has no "
        "usable face, or several, nothing is enrolled and every failing image is "
        "listed. The images themselves are never stored.",
    )
    enroll.add_argument("path", metavar="PATH")
    add_key_options(enroll)
    enroll.add_argument("--subject", required=True, metavar="ID")
    enroll.add_argument(
        "--reason", help="why the person is on the list (offence category, warrant)"
    )
    enroll.add_argument("--source", help="where the images come from (default: names)")
    enroll.add_argument("--added-by", help="who adds them (default: your user name)")
    enroll.add_argument(
        "--expires", type=parse_time, help="when this entry lapses (ISO time or Nd)"
    )
    enroll.add_argument("images", nargs="+", metavar="IMG")

    listing = wsub.add_parser("list", help="show subjects and their records")
    listing.add_argument("path", metavar="PATH")
    add_key_options(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    remove = wsub.add_parser("remove", help="remove subjects")
    remove.add_argument("path", metavar="PATH")
    add_key_options(remove)
    remove.add_argument("subjects", nargs="+", metavar="ID")

    info = wsub.add_parser("info", help="show the file's header (no key needed)")
    info.add_argument("path", metavar="PATH")
    info.add_argument("--json", action="store_true", help="print JSON")

    for parser in (create, enroll, listing, remove):  # they read a key
        add_hardening_option(parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs one ``watchlist`` action."""
    action = args.watchlist_command
    try:
        if action != "info":  # every other action reads a key
            harden(f"watchlist {action}", args)
        return int(_ACTIONS[action](args))
    except EnrolmentError as exc:
        print(
            f"lfr watchlist enroll: nothing enrolled for {args.subject}:",
            file=sys.stderr,
        )
        for index, why in exc.failures:
            print(f"  {args.images[index]}: {why}", file=sys.stderr)
        return 1
    except (LfrError, OSError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return fail(f"watchlist {action}", message)


def _future(expires: datetime | None, what: str) -> None:
    """Refuses an ``--expires`` already past: the result would be void at once."""
    if expires is not None and expires <= datetime.now(timezone.utc):
        raise ValueError(
            f"--expires {expires.isoformat()} is in the past: {what} would have "
            "lapsed already (give a future time, or Nd for N days from now)"
        )


def _create(args: argparse.Namespace) -> int:
    from lfr.embed import FaceEmbedder
    from lfr.watchlist import Watchlist

    _future(args.expires, "the watchlist")
    embedder = FaceEmbedder(model=args.model)
    wl = Watchlist.create(
        args.path,
        key_from(args, confirm=True),
        embedder=embedder,
        expires=args.expires,
        overwrite=args.force,
    )
    print(f"created {wl.path} (model {wl.model_id}, key {wl.key_id})")
    wl.destroy()
    return 0


def _embedder_for(model_id: str) -> Any:
    from lfr.embed import FaceEmbedder
    from lfr.errors import WatchlistError

    for name in _MODELS:
        embedder = FaceEmbedder(model=name)
        if embedder.model_id == model_id:
            return embedder
    raise WatchlistError(
        f"the watchlist's templates come from embedder {model_id!r}, which is not "
        "one of lfr's models with default settings: enrol through the Python API "
        "with that embedder (Watchlist.enroll(..., embedder=...))"
    )


def _enroll(args: argparse.Namespace) -> int:
    from lfr.watchlist import Watchlist

    _future(args.expires, "the entry")
    wl = Watchlist.open(args.path, key_from(args))
    try:
        subject = wl.enroll(
            args.subject,
            args.images,
            reason=args.reason,
            source=args.source,
            added_by=args.added_by,
            expires=args.expires,
            embedder=_embedder_for(wl.model_id),
            allow_core_dumps=args.allow_core_dumps,
        )
        wl.save()
    finally:
        wl.destroy()
    print(
        f"enrolled {subject.subject_id}: {subject.templates} template(s) in {args.path}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from lfr.watchlist import Watchlist

    wl = Watchlist.open(args.path, key_from(args))
    try:
        subjects = wl.subjects()
    finally:
        wl.destroy()
    for s in subjects:
        if args.json:
            print(json.dumps(s.to_json()))
        else:
            expires = s.expires.isoformat() if s.expires else "-"
            print(
                f"{s.subject_id}\t{s.templates} template(s)\treason: {s.reason}\t"
                f"source: {s.source}\tadded by {s.added_by} at "
                f"{s.added_at.isoformat()}\texpires: {expires}"
            )
    return 0


def _remove(args: argparse.Namespace) -> int:
    from lfr.watchlist import Watchlist

    wl = Watchlist.open(args.path, key_from(args))
    try:
        missing = [s for s in args.subjects if s not in wl]
        if missing:
            raise KeyError(f"not on the watchlist: {', '.join(missing)}")
        for subject in dict.fromkeys(args.subjects):
            wl.remove(subject)
        wl.save()
    finally:
        wl.destroy()
    print(f"removed {len(set(args.subjects))} subject(s) from {args.path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from lfr.watchlist import Watchlist

    header = Watchlist.info(args.path)
    data = header.to_json()
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            if key != "format":
                shown = "passphrase (scrypt)" if key == "kdf" and value else value
                print(f"{key}: {shown if shown is not None else '-'}")
    return 0


_ACTIONS = {
    "create": _create,
    "enroll": _enroll,
    "list": _list,
    "remove": _remove,
    "info": _info,
}
