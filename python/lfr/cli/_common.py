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
    """``--key-file K`` or ``--passphrase`` (prompted, or ``$LFR_PASSPHRASE``)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--key-file", metavar="K", help="key file made by `lfr keys create`"
    )
    group.add_argument(
        "--passphrase",
        action="store_true",
        help=f"use a passphrase (asked for, or taken from ${PASSPHRASE_ENV})",
    )


def key_from(args: argparse.Namespace, *, confirm: bool = False) -> Key | Passphrase:
    """The key the options name (a :class:`Passphrase` is derived by the reader)."""
    if args.key_file:
        return Key.from_file(args.key_file)
    secret = os.environ.get(PASSPHRASE_ENV)
    if not secret:
        secret = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != secret:
            raise ValueError("the passphrases differ")
    return Passphrase(secret)


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
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (2027-01-31T12:00) or Nd / Nh"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
