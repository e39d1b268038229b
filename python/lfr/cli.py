"""The ``lfr`` command line (also ``python -m lfr``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from lfr import __version__
from lfr.matcher import available_kernels
from lfr.secure import memory_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfr",
        description="Privacy-first live facial recognition.",
    )
    parser.add_argument("--version", action="version", version=f"lfr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser(
        "info",
        help="show the version, matching kernels, core count and memory protection",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _bytes(n: int | None) -> str:
    return "unlimited" if n is None else f"{n / 1048576:.1f} MiB"


def _info(as_json: bool) -> int:
    kernels = available_kernels()
    memory = memory_status()
    data: dict[str, object] = {
        "version": __version__,
        "kernels": kernels,
        "default_kernel": kernels[-1],
        "cores": os.cpu_count() or 1,
        "memlock_limit_bytes": memory.memlock_limit,
        "memlock_headroom_bytes": memory.memlock_headroom,
        "memlock_privileged": memory.memlock_privileged,
        "swap": [f"{s.path} ({s.backing})" for s in memory.swap],
        "swap_safe": memory.swap_safe,
        "core_dumps_disabled": memory.core_dumps_disabled,
    }
    if as_json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            if key.endswith("_bytes"):
                shown: object = _bytes(value if isinstance(value, int) else None)
                key = key.removesuffix("_bytes")
            elif isinstance(value, list):
                shown = ", ".join(value) or "none"
            else:
                shown = value
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
