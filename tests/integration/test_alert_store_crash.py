"""SIGKILL in the middle of writes leaves a sound store and no plaintext on disk."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import lfr

SIDE = 48
CHILD = """
import sys
import numpy as np
import lfr

key = lfr.Key.from_file(sys.argv[1])
index = int(sys.argv[3])
with lfr.AlertStore(sys.argv[2], key) as store:
    while True:
        crop = np.random.default_rng(index).integers(0, 256, (48, 48, 3), np.uint8)
        store._add(
            subject_id=f"subject-{index}", score=0.75, box=(0, 0, 48, 48),
            crop=crop, camera_id="cam-1", deployment_id="dep-1",
        )
        print("added", index, flush=True)
        index += 1
"""


def crop_for(index: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(index).integers(0, 256, (SIDE, SIDE, 3), np.uint8)


def plaintext_runs(index: int) -> list[bytes]:
    """64-byte runs of the crop's pixels and of its PNG encoding."""
    import cv2

    crop = crop_for(index)
    ok, png = cv2.imencode(".png", crop)
    assert ok
    out = []
    for data in (crop.tobytes(), png.tobytes()):
        out += [data[i : i + 64] for i in range(0, len(data) - 64, len(data) // 6)]
    return out


def assert_no_plaintext(folder: Path, indices: list[int]) -> None:
    raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
    assert b"\x89PNG" not in raw
    for index in indices:
        assert f"subject-{index}".encode() not in raw
        for run in plaintext_runs(index):
            assert run not in raw


def test_sigkill_during_writes(tmp_path: Path) -> None:
    keys, folder = tmp_path / "keys", tmp_path / "store"
    keys.mkdir()
    folder.mkdir()
    key = lfr.Key.generate()
    key_file = key.save(keys / "store.key")
    db = folder / "alerts.db"
    rng = random.Random(20240501)
    written: list[int] = []  # printed as added: must survive
    attempted: list[int] = []  # possibly in flight when killed
    for round_ in range(5):
        start = round_ * 1000
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(key_file), str(db), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        wanted = rng.randint(2, 12)
        seen = 0
        while seen < wanted:
            line = child.stdout.readline()
            assert line, (
                f"the writer died: {child.stderr.read() if child.stderr else ''}"
            )
            seen += 1
        time.sleep(rng.uniform(0, 0.02))  # a random moment inside the next writes
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        rest = child.stdout.read()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        printed = seen + rest.count("added")
        written += range(start, start + printed)
        attempted += range(start, start + printed + 1)

        # As the crash left it (main file, -wal, -shm).
        assert_no_plaintext(folder, attempted)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        with lfr.AlertStore(db, key) as store:
            alerts = store.alerts()
            found = {int(a.subject_id.split("-")[1]) for a in alerts}
            assert set(written) <= found <= set(attempted)
            for alert in alerts:
                index = int(alert.subject_id.split("-")[1])
                np.testing.assert_array_equal(
                    store._crop_image(alert.alert_id), crop_for(index)
                )
        assert_no_plaintext(folder, attempted)
    key.destroy()
