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


# -- key files: the store, watchlist and signing keys after load, save, destroy -----

#: What is scanned for: each key raw, and the part of its file text that is key.
KEY_FILE_FORMS = [
    "store key",
    "store key base64 (first 32 of 44 chars)",
    "watchlist key",
    "watchlist key base64 (first 32 of 44 chars)",
    "signing seed",
    "signing PEM body (chars 32-63, all seed)",
]


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """Three key files, and every form of their keys, masked."""
    from lfr._keyfile import read_secret
    from tests.support.keyscan import mask_key, new_mask

    folder = tmp_path_factory.mktemp("key-files")
    for name in ("store", "watchlist"):
        key = lfr.Key.generate()
        key.save(folder / f"{name}.key")
        key.destroy()
    signing = SigningKey.generate()
    signing.save(folder / "signing.key")
    signing.destroy()
    mask = new_mask()
    masked = []
    for name in ("store", "watchlist"):
        key = lfr.Key.from_file(folder / f"{name}.key")
        masked.append(mask_key(key._view(), mask))
        key.destroy()
        text = read_secret(folder / f"{name}.key", 4096)
        view = text.text()
        assert bytes(view[:11]) == b"lfr-key-v1:"
        masked.append(mask_key(view[11:43], mask))
        del view
        text.discard()
    signing = SigningKey.load(folder / "signing.key")
    masked.append(mask_key(signing._seed_view(), mask))
    signing.destroy()
    text = read_secret(folder / "signing.key", 4096)
    view = text.text()
    head = len(b"-----BEGIN PRIVATE KEY-----\n")
    masked.append(mask_key(view[head + 32 : head + 64], mask))
    del view
    text.discard()
    return folder, masked, mask


#: Which forms belong to which key file.
KEY_FILE_FORMS_OF = {"store": (0, 1), "watchlist": (2, 3), "signing": (4, 5)}


def scan_key_files(
    mode: str, which: str, key_files: tuple[Path, Any, Any]
) -> dict[str, int]:
    """Hits per form of :data:`KEY_FILE_FORMS` in a child that loaded and saved."""
    folder, masked, mask = key_files
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT)])
    )
    command = [sys.executable, "-m", "tests.support.keyfile_forensics"]
    with subprocess.Popen(
        [*command, mode, str(folder), which],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as child:
        timer = threading.Timer(120, child.kill)  # the time limit
        timer.start()
        try:
            assert child.stdout is not None
            assert child.stdin is not None
            done = json.loads(child.stdout.readline() or "null")
            if done is None:
                child.wait(10)
                raise AssertionError(
                    child.stderr.read()[-3000:] if child.stderr else ""
                )
            scan = scan_for_keys(masked, mask, pid=child.pid)
            child.stdin.write("done\n")
            child.stdin.flush()
            assert child.wait(30) == 0
        finally:
            timer.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
    assert scan.scanned > 10_000_000
    assert scan.regions > 10
    # What was saved is what was loaded: the same file, byte for byte.
    saved = folder / f"{mode}-{which}.key"
    assert saved.read_bytes() == (folder / f"{which}.key").read_bytes()
    saved.unlink()
    return {form: scan.found(i) for i, form in enumerate(KEY_FILE_FORMS)}


@pytest.mark.parametrize("which", ["store", "watchlist", "signing"])
def test_no_key_file_text_or_key_is_left_after_load_save_and_destroy(
    key_files: tuple[Path, Any, Any], which: str
) -> None:
    found = scan_key_files("lfr", which, key_files)
    assert found == dict.fromkeys(KEY_FILE_FORMS, 0)


@pytest.mark.parametrize("which", ["store", "watchlist", "signing"])
def test_the_old_base64_module_path_leaves_key_text_that_the_scan_finds(
    key_files: tuple[Path, Any, Any], which: str
) -> None:
    found = scan_key_files("old", which, key_files)
    _raw, text = (KEY_FILE_FORMS[i] for i in KEY_FILE_FORMS_OF[which])
    assert found[text] > 0, found
