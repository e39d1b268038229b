"""harden_process, require_hardening, memory_status, and failing closed when memory
cannot be locked or core dumps cannot be switched off.

Hardening is irreversible, so it runs in child processes. "The kernel refuses" is
provoked by replacing ``lfr._core.harden`` in the child (a real refusal needs a
seccomp policy).
"""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lfr
from lfr.secure import _swaps, memory_status

PR_GET_DUMPABLE = 3
PR_CAPBSET_DROP = 24
CAP_IPC_LOCK = 14


def run_child(code: str, *, memlock: int | None = None) -> dict[str, object]:
    """Runs ``code`` in a fresh interpreter; it prints one JSON object."""

    def limit_memlock() -> None:  # pragma: no cover - runs in the child
        if memlock is None:
            return
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, hard))
        # Root keeps CAP_IPC_LOCK across exec unless it leaves the bounding set.
        ctypes.CDLL(None).prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0)

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        preexec_fn=limit_memlock,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_harden_process_disables_core_dumps() -> None:
    out = run_child(
        """
        import json, resource, lfr
        report = lfr.harden_process()
        print(json.dumps({
            "core_dumps_disabled": report.core_dumps_disabled,
            "dumpable": report.dumpable,
            "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE),
            "headroom": report.memlock_headroom,
            "swap_safe": report.swap_safe,
        }))
        """
    )
    assert out["core_dumps_disabled"] is True
    assert out["dumpable"] is False
    assert out["rlimit_core"] == [0, 0]
    assert isinstance(out["swap_safe"], bool)


def test_memory_status_matches_the_kernel() -> None:
    status = memory_status()
    soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    expected = None if soft == resource.RLIM_INFINITY else soft
    assert status.memlock_limit == expected
    buf = lfr.SecureBuffer(1 << 20)
    assert memory_status().memlock_locked >= buf.mapped_nbytes
    buf.close()
    # Deployment.start and Watchlist.enroll harden the process they run in, so
    # earlier tests may have hardened this one: compare with the kernel.
    assert status.dumpable == bool(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def test_locking_fails_closed_with_the_numbers_and_the_fix() -> None:
    out = run_child(
        """
        import json, lfr
        from lfr.errors import SecureMemoryError
        from lfr.secure import memory_status
        result = {"privileged": memory_status().memlock_privileged}
        try:
            lfr.SecureBuffer(1 << 20)
            result["error"] = None
        except SecureMemoryError as e:
            result["error"] = str(e)
        try:
            lfr.SecurePool(1 << 20, capacity=2)
            result["pool_error"] = None
        except SecureMemoryError as e:
            result["pool_error"] = str(e)
        buf = lfr.SecureBuffer(1 << 20, allow_unlocked=True)
        result["unlocked"] = [buf.locked, buf.dontdump, buf.wipeonfork]
        print(json.dumps(result))
        """,
        memlock=64 * 1024,
    )
    if out["privileged"]:
        pytest.skip("the child kept CAP_IPC_LOCK, so the memlock limit cannot bind")
    message = str(out["error"])
    assert "cannot lock 1.0 MiB" in message
    assert "RLIMIT_MEMLOCK is 64 KiB" in message
    assert "ulimit -l" in message
    assert "allow_unlocked=True" in message
    assert out["pool_error"] is not None
    assert out["unlocked"] == [False, True, True]


def test_swap_backing_is_classified(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text(
        "Filename\tType\tSize\tUsed\tPriority\n"
        "/dev/zram0\tpartition\t1024\t0\t100\n"
        "/nowhere/swap\\040file\tfile\t2048\t512\t-2\n"
    )
    zram, missing = _swaps(str(swaps))
    assert (zram.backing, zram.size_bytes) == ("ram", 1024 * 1024)
    assert missing.path == "/nowhere/swap file"
    assert (missing.kind, missing.used_bytes, missing.backing) == (
        "file",
        512 * 1024,
        "unknown",
    )


def test_require_hardening_hardens() -> None:
    out = run_child(
        """
        import json, resource
        from lfr.secure import require_hardening
        report = require_hardening()
        print(json.dumps({
            "hardened": report.hardened,
            "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE),
        }))
        """
    )
    assert out == {"hardened": True, "rlimit_core": [0, 0]}


def test_require_hardening_fails_closed_unless_core_dumps_are_allowed() -> None:
    out = run_child(
        """
        import errno, json
        import lfr._core
        from lfr.errors import HardeningError, LfrError
        from lfr.secure import require_hardening

        def refused():
            raise PermissionError(errno.EPERM, "setrlimit(RLIMIT_CORE) failed")

        lfr._core.harden = refused
        result = {}
        try:
            require_hardening()
        except HardeningError as e:
            result["error"] = [str(e), isinstance(e, LfrError)]
        # Harden "succeeds" but nothing changed: refused too.
        lfr._core.harden = lambda: (True, False)
        try:
            require_hardening()
        except HardeningError as e:
            result["unchanged"] = str(e)
        report = require_hardening(allow_core_dumps=True)
        result["allowed"] = [report.hardened, report.dumpable]
        print(json.dumps(result))
        """
    )
    error = out["error"]
    assert isinstance(error, list)
    message = str(error[0])
    assert error[1] is True  # an LfrError
    assert "cannot switch core dumps off" in message
    assert "allow_core_dumps=True" in message
    assert "--allow-core-dumps" in message
    assert "core dumps are still possible" in str(out["unchanged"])
    # The override leaves the process as it was (negative control: the child
    # was dumpable, so the refusals above were not a side effect).
    assert out["allowed"] == [False, True]


def test_the_audit_records_whether_the_process_was_hardened() -> None:
    from lfr.audit.events import check_event
    from tests.support.audit_records import Records

    started = dict(Records().start().fields)
    assert (
        check_event("deployment_started", {**started, "hardened": False})["hardened"]
        is False
    )
    assert "hardened" not in check_event("deployment_started", started)
    for bad in (1, "false", None):
        with pytest.raises(ValueError, match="hardened must be true or false"):
            check_event("deployment_started", {**started, "hardened": bad})
    anomaly = check_event("anomaly", {"kind": "core_dumps_allowed"})
    assert anomaly["kind"] == "core_dumps_allowed"
