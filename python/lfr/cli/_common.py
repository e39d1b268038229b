"""What several commands share: key options, hardening, error output, dates."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime, timedelta, timezone

from lfr.keys import Key, Passphrase
from lfr.protocols import Signer
from lfr.secure import MemoryReport, require_hardening

#: Environment variable a script can set instead of typing a passphrase.
PASSPHRASE_ENV = "LFR_PASSPHRASE"


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """The watchlist's key: ``--key-file K`` or ``--passphrase``.

    For ``lfr watchlist``, which needs one key only. ``--watchlist-key`` and
    ``--watchlist-passphrase`` are the same options under the names ``lfr run``
    uses.
    """
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--key-file",
        "--watchlist-key",
        dest="key_file",
        metavar="K",
        help="the watchlist's key file (`lfr keys create`); not the alert store's",
    )
    group.add_argument(
        "--passphrase",
        "--watchlist-passphrase",
        dest="passphrase",
        action="store_true",
        help=f"use a passphrase (asked for, or taken from ${PASSPHRASE_ENV})",
    )


def key_from(args: argparse.Namespace, *, confirm: bool = False) -> Key | Passphrase:
    """The key the options name (a :class:`Passphrase` is derived by the reader)."""
    return _key(args.key_file, confirm=confirm)


def _key(path: str | None, *, confirm: bool = False) -> Key | Passphrase:
    if path:
        return Key.from_file(path)
    secret = os.environ.get(PASSPHRASE_ENV)
    if not secret:
        if not sys.stdin.isatty():
            raise ValueError(
                "--passphrase needs a terminal to ask on, or the passphrase in "
                f"${PASSPHRASE_ENV}; or give a key file (--key-file)"
            )
        try:
            secret = getpass.getpass("passphrase: ")
            if confirm and getpass.getpass("again: ") != secret:
                raise ValueError("the passphrases differ")
        except EOFError:
            raise ValueError("no passphrase was typed (end of input)") from None
        if not secret:
            raise ValueError("the passphrase is empty")
    return Passphrase(secret)


def add_deployment_key_options(parser: argparse.ArgumentParser) -> None:
    """The two keys of a deployment: the watchlist's and the alert store's.

    ``--watchlist-key K`` (or ``--watchlist-passphrase``) and ``--store-key K``,
    which must be another key unless ``--allow-shared-key``. A single
    ``--key-file`` (or ``--passphrase``) would be ambiguous here: it is
    accepted only to be refused with a message naming the two options
    (:func:`deployment_keys`).
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--watchlist-key",
        metavar="K",
        help="the watchlist's key file (`lfr keys create`), held by those who "
        "enrol people; required (or --watchlist-passphrase)",
    )
    group.add_argument(
        "--watchlist-passphrase",
        action="store_true",
        help="the watchlist is protected by a passphrase (asked for, or taken "
        f"from ${PASSPHRASE_ENV})",
    )
    parser.add_argument(
        "--store-key",
        metavar="K",
        help="the alert store's own key file (`lfr keys create`), held by those "
        "who review alerts; required, and another key than the watchlist's",
    )
    parser.add_argument(
        "--allow-shared-key",
        action="store_true",
        help="run although --watchlist-key and --store-key are the same key "
        "(whoever enrols people can then read the alerts); recorded in the "
        "audit log and shown in the deployment record",
    )
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    parser.add_argument("--passphrase", action="store_true", help=argparse.SUPPRESS)


def deployment_keys(args: argparse.Namespace) -> tuple[Key | Passphrase, Key]:
    """The watchlist key and the store key, as the deployment key options name them.

    The options are those of :func:`add_deployment_key_options`.

    Returns:
        ``(watchlist key, store key)``; the first is a :class:`Passphrase` with
        ``--watchlist-passphrase``.

    Raises:
        ValueError: ``--key-file`` or ``--passphrase`` was given, or a key is
            missing; the message names ``--watchlist-key`` and ``--store-key``.
        SharedKeyError: Both name the same key (by ``key_id``) without
            ``--allow-shared-key``.
        KeyFileError: A key file cannot be read.
    """
    from lfr.pipeline.deployment import check_separate_keys

    if args.key_file or args.passphrase:
        given = "--key-file" if args.key_file else "--passphrase"
        raise ValueError(
            f"{given} is ambiguous here: a deployment has two keys. Give the "
            "watchlist's key with --watchlist-key K (or --watchlist-passphrase) "
            "and the alert store's own key with --store-key K"
        )
    if not (args.watchlist_key or args.watchlist_passphrase):
        raise ValueError(
            "the watchlist's key is missing: give --watchlist-key K (or "
            "--watchlist-passphrase), and --store-key K for the alert store"
        )
    if not args.store_key:
        raise ValueError(
            "the alert store's key is missing: give --store-key K (its own key, "
            "not the watchlist's; make one with `lfr keys create`)"
        )
    store = Key.from_file(args.store_key)
    try:
        watchlist = _key(args.watchlist_key)
    except BaseException:
        store.destroy()
        raise
    if isinstance(watchlist, Key):  # a passphrase's key is compared once derived
        try:
            check_separate_keys(
                watchlist.key_id, store.key_id, allow_shared=args.allow_shared_key
            )
        except BaseException:
            watchlist.destroy()
            store.destroy()
            raise
    return watchlist, store


def add_hardening_option(parser: argparse.ArgumentParser) -> None:
    """``--allow-core-dumps``: the operator's override of :func:`harden`."""
    parser.add_argument(
        "--allow-core-dumps",
        action="store_true",
        help="run although core dumps stay possible (to debug a crash): by default "
        "the command switches them off first and refuses to run when it cannot. "
        "Audited where the command writes an audit log, else warned on stderr",
    )


def harden(command: str, args: argparse.Namespace) -> MemoryReport:
    """Hardens the process before a command reads faces or keys.

    Core dumps off and not dumpable (:func:`lfr.secure.require_hardening`), or
    :class:`~lfr.errors.HardeningError` (the command then fails with status 1),
    unless ``--allow-core-dumps``: then a warning on stderr, and the caller
    audits it where it has an audit log.
    """
    report = require_hardening(args.allow_core_dumps)
    if not report.hardened:
        print(
            f"lfr {command}: warning: core dumps are allowed (--allow-core-dumps); "
            "a crash may write faces and keys to disk",
            file=sys.stderr,
        )
    return report


def signer_from(spec: str) -> Signer:
    """The audit signer a ``--signing-key`` names.

    A key file's path, or ``pkcs11:token=LABEL;object=LABEL`` for a key in a
    PKCS#11 token (``$LFR_PKCS11_MODULE``, ``$LFR_PKCS11_PIN``; see
    :mod:`lfr.audit.token`).
    """
    from lfr.audit.signing import SigningKey
    from lfr.audit.token import TokenSigner, parse_spec

    named = parse_spec(spec)
    if named is not None:
        return TokenSigner.open(*named)
    return SigningKey.load(spec)


def fail(command: str, error: object) -> int:
    """Prints ``lfr COMMAND: error`` on stderr; returns the exit status 1."""
    print(f"lfr {command}: {error}", file=sys.stderr)
    return 1


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC if no zone), or ``Nd``/``Nh`` from now."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in ("d", "h"):
        unit = timedelta(days=1) if text[-1] == "d" else timedelta(hours=1)
        return datetime.now(timezone.utc) + int(text[:-1]) * unit
    # datetime.fromisoformat reads a "Z" only from Python 3.11.
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        value = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (2027-01-31T12:00) or Nd / Nh"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
