"""Starting children with core dumps on, even after the test process was hardened.

``Deployment.start`` and ``Watchlist.enroll`` harden the process they run in, so
once an in-process test has called them the pytest process has a hard
``RLIMIT_CORE`` of 0, and without ``CAP_SYS_RESOURCE`` (root in a container often
lacks it) no child can raise it again. A :class:`Launcher` is started before any
test runs (at collection) and spawns the children instead: it keeps the limits
pytest started with, so ``ulimit -c unlimited`` works for its children whenever it
would have worked at the start.

Run as a script, this file is the launcher: one JSON request per line on stdin,
one JSON reply per line on stdout. ``{"argv", "cwd", "stderr"}`` spawns (with the
core limit raised to unlimited, soft and hard) and replies ``{"pid"}`` or
``{"error"}``; ``{"wait": pid, "timeout": s}`` replies ``{"returncode"}`` (negative
for a signal) or ``{"timeout": true}``. It imports nothing of lfr.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _unlimited_core() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(
        resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )


def _serve() -> None:  # pragma: no cover - runs in the launcher
    children: dict[int, subprocess.Popen[bytes]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        reply: dict[str, Any]
        if "wait" in request:
            child = children[int(request["wait"])]
            try:
                reply = {"returncode": child.wait(timeout=float(request["timeout"]))}
                del children[child.pid]
            except subprocess.TimeoutExpired:
                reply = {"timeout": True}
        else:
            try:
                with open(request["stderr"], "w") as stderr:
                    child = subprocess.Popen(
                        request["argv"],
                        cwd=request["cwd"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        preexec_fn=_unlimited_core,
                    )
                children[child.pid] = child
                reply = {"pid": child.pid}
            except (OSError, subprocess.SubprocessError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    for child in children.values():
        child.kill()
        child.wait()


class Launcher:
    """A client of the launcher process (start it before any test hardens)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply: dict[str, Any] = json.loads(self._process.stdout.readline())
        return reply

    def spawn(self, argv: Sequence[str], cwd: Path, stderr: Path) -> int:
        """Starts ``argv`` under ``ulimit -c unlimited``; returns its pid.

        Raises:
            PermissionError: The core limit cannot be raised (the message says why).
        """
        reply = self._ask({"argv": list(argv), "cwd": str(cwd), "stderr": str(stderr)})
        if "error" in reply:
            raise PermissionError(f"ulimit -c unlimited failed: {reply['error']}")
        return int(reply["pid"])

    def wait(self, pid: int, timeout: float) -> int | None:
        """The child's return code, or None if it is still running after ``timeout``."""
        reply = self._ask({"wait": pid, "timeout": timeout})
        return None if reply.get("timeout") else int(reply["returncode"])

    def close(self) -> None:
        """Ends the launcher (and kills any child left)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


if __name__ == "__main__":
    _serve()
