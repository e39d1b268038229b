"""The ``lfr`` command line (also ``python -m lfr``).

One module per command group: :mod:`lfr.cli._system` (``info``, ``models``),
:mod:`lfr.cli._keys` (``keys``), :mod:`lfr.cli._watchlist` (``watchlist``),
:mod:`lfr.cli._audit` (``audit``), :mod:`lfr.cli._alerts` (``alerts``),
:mod:`lfr.cli._run` (``run``), :mod:`lfr.cli._demo` (``demo``),
:mod:`lfr.cli._eval` (``eval``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lfr import __version__
from lfr.cli import (
    _alerts,
    _audit,
    _demo,
    _eval,
    _keys,
    _run,
    _system,
    _watchlist,
)

__all__ = ["main"]

_GROUPS = {
    "info": _system,
    "models": _system,
    "keys": _keys,
    "watchlist": _watchlist,
    "audit": _audit,
    "alerts": _alerts,
    "run": _run,
    "demo": _demo,
    "eval": _eval,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr",
        description="Privacy-first live facial recognition.",
    )
    parser.add_argument("--version", action="version", version=f"lfr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in dict.fromkeys(_GROUPS.values()):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    module = _GROUPS.get(args.command or "")
    if module is None:
        parser.print_help(sys.stdout)
        return 0
    try:
        status: int = module.run(args, parser)
    except KeyboardInterrupt:
        print(f"lfr {args.command}: interrupted", file=sys.stderr)
        return 130
    return status
