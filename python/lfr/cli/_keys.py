"""``lfr keys``: make key files."""

from __future__ import annotations

import argparse

from lfr.cli._common import fail
from lfr.errors import LfrError
from lfr.keys import Key


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``keys``."""
    keys = sub.add_parser("keys", help="make key files")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = ksub.add_parser(
        "create",
        help="write a new random 256-bit key file (mode 0600)",
        description="Writes a new random 256-bit key to PATH, readable only by you. "
        "Keep it away from the data it protects, and back it up: without it, "
        "watchlists and alerts encrypted with it cannot be read.",
    )
    create.add_argument("path", metavar="PATH")
    create.add_argument("--force", action="store_true", help="overwrite PATH")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``keys create``."""
    try:
        key = Key.generate()
        try:
            path = key.save(args.path, overwrite=args.force)
        finally:
            key.destroy()
    except (LfrError, OSError) as exc:
        return fail("keys create", exc)
    print(f"wrote key {key.key_id} to {path}")
    return 0
