"""The ``lfr`` command line (also ``python -m lfr``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from lfr import __version__
from lfr.matcher import available_kernels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr",
        description="Privacy-first live facial recognition.",
    )
    parser.add_argument("--version", action="version", version=f"lfr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser(
        "info", help="show the version, matching kernels and core count"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _info(as_json: bool) -> int:
    kernels = available_kernels()
    data = {
        "version": __version__,
        "kernels": kernels,
        "default_kernel": kernels[-1],
        "cores": os.cpu_count() or 1,
    }
    if as_json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key}: {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(args.json)
    parser.print_help(sys.stdout)
    return 0
