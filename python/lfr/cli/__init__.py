"""The ``lfr`` command line (also ``python -m lfr``).

One module per command group: :mod:`lfr.cli._system` (``info``, ``models``),
:mod:`lfr.cli._keys` (``keys``), :mod:`lfr.cli._watchlist` (``watchlist``),
:mod:`lfr.cli._audit` (``audit``), :mod:`lfr.cli._alerts` (``alerts``),
:mod:`lfr.cli._run` (``run``), :mod:`lfr.cli._demo` (``demo``),
:mod:`lfr.cli._eval` (``eval``).
"""

from __future__ import annotations

import argparse
import os
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


def _quiet_opencv() -> None:
    """Keeps FFmpeg's and OpenCV's own log lines out of lfr's output.

    lfr says itself when a stream cannot be opened or is lost (the error, the
    status line of ``lfr run``). Left alone, OpenCV's FFmpeg backend prints
    FFmpeg's errors on stderr at every failed attempt (``[tcp @ 0x...]
    Connection to tcp://... failed``) and OpenCV its own warnings (``[ WARN:0@...]
    ... VIDEOIO(FFMPEG) ...``). An operator who sets ``OPENCV_FFMPEG_LOGLEVEL`` or
    ``OPENCV_LOG_LEVEL`` keeps that choice (OpenCV then prints FFmpeg's lines on
    stdout, with ``[OPENCV:FFMPEG:<level>]``).
    """
    # AV_LOG_QUIET; OpenCV reads it at every capture it opens.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if "OPENCV_LOG_LEVEL" not in os.environ:  # read once, when cv2 loaded
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_opencv()
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
