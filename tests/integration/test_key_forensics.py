"""No data key outlives its reading: a heap scan after the alert store is closed.

A store with alerts (reviews and a hold included) is made here; a child process
(:mod:`tests.support.key_forensics`) learns every data key of the store independently
(unwrapped into a secure buffer and kept only XOR-masked), reads every alert through
:class:`lfr.alerts.Records`, closes the store, destroys the store key and waits. The
test then scans all of the child's readable memory (``/proc/PID/maps`` and
``/proc/PID/mem``) for each key, 32-byte window by window
(:mod:`tests.support.keyscan`). Scanning from outside matters: a scan run inside the
child allocates Python objects that reuse (and so hide) freed ones before it reads
them.

With lfr's key discipline (data keys unwrapped into a :class:`lfr.ciphers.DataCipher`'s
secure buffer, wiped when the cipher goes) the scan finds nothing. Negative controls
prove that it can see them where they would be: copies made by the unwrap path lfr had
before (``Key.unwrap`` through ``bytes``) and kept unwiped are found in the Python heap,
and keys whose ciphers are kept past the store's close are found in their secure
buffers.

What the scan cannot see: the old path with its wipe, or without it but dropping its
copies, left no key the scan found here, because Python reused the freed ``bytes`` and
``bytearray`` memory before the scan. Freed, unwiped copies are therefore not ruled
out by a scan; lfr's path does not make them (docs/data-handling.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lfr
from lfr.alerts import Records
from lfr.audit import SigningKey
from tests.support.keyscan import scan_for_keys

ROOT = Path(__file__).resolve().parents[2]
ALERTS = 6
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("key-forensics")
    key = lfr.Key.generate()
    signing = SigningKey.generate()
    rng = np.random.default_rng(3)
    with Records.open(
        folder / "alerts.db", key, folder / "audit.log", signing
    ) as records:
        for n in range(ALERTS):
            alert = records.raise_alert(
                subject_id=f"S-{n}",
                score=0.9,
                box=(1, 2, 30, 40),
                crop=rng.integers(0, 256, (40, 32, 3), dtype=np.uint8),
                camera_id="cam-1",
                deployment_id="dep-1",
            )
            if n % 2 == 0:
                records.review(alert.alert_id, "officer-1", "confirmed", note="n")
        until = datetime.now(timezone.utc) + timedelta(days=2)
        records.hold(alert.alert_id, "case 9", until, by="officer-2")
    key.save(folder / "store.key")
    signing.save(folder / "signing.key")
    key.destroy()
    return folder


def read_and_scan(mode: str, folder: Path) -> dict[str, Any]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT)])
    )
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.key_forensics", mode, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as child:
        return _scan_child(child)


def _scan_child(child: subprocess.Popen[str]) -> dict[str, Any]:
    timer = threading.Timer(180, child.kill)  # the time limit
    timer.start()
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        keys = json.loads(child.stdout.readline() or "null")
        done = json.loads(child.stdout.readline() or "null")
        if keys is None or done is None:
            child.wait(10)
            raise AssertionError(child.stderr.read()[-3000:] if child.stderr else "")
        mask = np.frombuffer(bytes.fromhex(keys["mask"]), "<u8")
        masked = [np.frombuffer(bytes.fromhex(k), "<u8") for k in keys["keys"]]
        scan = scan_for_keys(masked, mask, pid=child.pid)
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(30) == 0
    finally:
        timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    # Every alert was read, and the scan covered the process.
    assert len(masked) == ALERTS + 1
    assert done == {"read": ALERTS, "holds": 1, "reviews": (ALERTS + 1) // 2}
    assert scan.scanned > 10_000_000
    assert scan.regions > 10
    return {
        "found": [scan.found(i) for i in range(len(masked))],
        "hits": scan.hits,
        "where": [f"key {k} at {a:#x} in {m or '[anon]'}" for k, a, m in scan.hits],
    }


def test_no_data_key_is_left_after_reading_alerts_and_closing(store: Path) -> None:
    result = read_and_scan("lfr", store)
    assert sum(result["found"]) == 0, result["where"]


def test_copies_kept_by_the_old_bytes_path_are_found_in_the_heap(
    store: Path,
) -> None:
    result = read_and_scan("bytes", store)
    assert result["found"][0] == 0, result["where"]  # the key check: lfr's own path
    assert all(n > 0 for n in result["found"][1:]), result


def test_keys_kept_past_the_close_are_found_in_their_buffers(store: Path) -> None:
    result = read_and_scan("kept", store)
    assert result["found"][0] == 0, result["where"]
    # Each alert's key is found at the start of a page: its DataCipher's buffer.
    in_buffers = {k for k, address, _ in result["hits"] if address % PAGE == 0}
    assert in_buffers == set(range(1, ALERTS + 1)), result["where"]
