"""The operator preview shows an enrolled person sharp only once they alerted.

A match is not an alert: the tracker's k-of-n rule turns matches into an alert,
and only a stored alert may be shown. A real :class:`lfr.pipeline.Deployment`
with the real models runs over frames in which one real LFW face, enrolled on
the watchlist, stands still (one track, a match every frame) next to a passer-by
who is not enrolled. With ``confirm_hits=3`` the enrolled face matches on frames
0 and 1 without confirming, alerts on frame 2 (its write still queued) and is
stored before frame 3 is rendered (the test's sink waits for the alert on frame
2, with a time limit).

Checks: no 64-byte block of the enrolled face is in any frame the sink received
before the alert was stored (frames 0 to 2), while the raw frames hold every
block (negative control: the old rule, sharp on any match, would have shown
them); after the alert, blocks of that face are in every frame (positive
control: the scan finds the face when it is shown); the passer-by is never
shown.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.pipeline import Deployment
from lfr.tracking import TrackerConfig

pytestmark = pytest.mark.data

U8 = npt.NDArray[np.uint8]
WAIT_S = 120.0  # a limit on waits that must end; never a speed assertion
H, W = 480, 640
BLOCK = 64
FRAMES = 6
CONFIRM = 3  # frames 0..1 match unconfirmed, frame 2 alerts
# (photo side in pixels, x, y): the enrolled person, then the passer-by.
ENROLLED = (200, 40, 60)
PASSER_BY = (200, 380, 120)
SUBJECT = "S-0001"


def background() -> U8:
    yy, xx = np.mgrid[0:H, 0:W]
    frame = np.empty((H, W, 3), np.uint8)
    frame[..., 0] = (xx * 200 // W + 20).astype(np.uint8)
    frame[..., 1] = (yy * 200 // H + 20).astype(np.uint8)
    frame[..., 2] = 110
    return frame


def paste(frame: U8, photo: Path, place: tuple[int, int, int]) -> None:
    side, x, y = place
    image = cv2.imread(str(photo))
    assert image is not None
    frame[y : y + side, x : x + side] = cv2.resize(
        image, (side, side), interpolation=cv2.INTER_AREA
    )


def face_blocks(frame: U8, place: tuple[int, int, int]) -> list[bytes]:
    """The 64-byte blocks of the middle half of a pasted photo (the face)."""
    side, x, y = place
    q = side // 4
    out = []
    for row in range(y + q, y + side - q):
        data = frame[row, x + q : x + side - q].tobytes()
        for start in range(0, len(data) - BLOCK + 1, BLOCK):
            chunk = data[start : start + BLOCK]
            if len(set(chunk)) > 8:  # not a flat run any picture could hold
                out.append(chunk)
    return out


def hits(blocks: list[bytes], data: bytes) -> int:
    return sum(1 for chunk in blocks if chunk in data)


def usable(photo: Path, detector: lfr.FaceDetector, gate: lfr.QualityGate) -> bool:
    """Whether the photo, pasted alone, gives one face that passes the gate."""
    frame = background()
    paste(frame, photo, ENROLLED)
    faces = detector.detect(frame)
    return len(faces) == 1 and bool(gate.assess(frame, faces).passed.all())


def test_an_enrolled_face_is_blurred_until_its_alert_is_stored(
    tmp_path: Path, lfw_dir: Path, yunet_path: Path, embedder_path: Path
) -> None:
    detector, embedder, gate = lfr.FaceDetector(), lfr.FaceEmbedder(), lfr.QualityGate()
    folders = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    photos = [sorted(f.glob("*.jpg"))[0] for f in folders[:12]]
    good = [p for p in photos if usable(p, detector, gate)]
    assert len(good) >= 2, "too few usable LFW photos for this test"
    enrolled, passer_by = good[0], good[1]

    frame = background()
    paste(frame, enrolled, ENROLLED)
    paste(frame, passer_by, PASSER_BY)
    mine, theirs = face_blocks(frame, ENROLLED), face_blocks(frame, PASSER_BY)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(FRAMES):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), frame)  # lossless
    # Negative control: the raw frame holds every block of both faces.
    assert mine
    assert theirs
    assert hits(mine, frame.tobytes()) == len(mine)
    assert hits(theirs, frame.tobytes()) == len(theirs)

    # Enrol the person from the photo pasted alone (enrol directly with the
    # real embedder: Watchlist.enroll would harden the pytest process).
    alone = background()
    paste(alone, enrolled, ENROLLED)
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), embedder=embedder
    )
    wl.add(SUBJECT, embedder.embed(alone, detector.detect(alone)).copy())

    key, signing = lfr.Key.generate(), lfr.SigningKey.generate()
    store = lfr.AlertStore(tmp_path / "alerts.db", key)
    alerted = threading.Event()
    shown: list[bytes] = []

    def on_frame(image: U8) -> None:
        shown.append(image.tobytes())  # the test's own copy, to scan
        if len(shown) == CONFIRM:
            # The alert frame: let the writer store it before frame 3.
            assert alerted.wait(WAIT_S), "the alert was not stored in time"

    alerts: list[lfr.Alert] = []

    def on_alert(alert: lfr.Alert) -> None:
        alerts.append(alert)
        alerted.set()

    preview = lfr.preview.Preview(on_frame=on_frame)
    with Deployment(
        source=folder,
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=detector,
        embedder=embedder,
        gate=gate,
        tracking=TrackerConfig(confirm_hits=CONFIRM, confirm_window=5),
        on_alert=on_alert,
        preview=preview,
        # Hardening is tested in subprocesses (test_crash_hardening.py); here it
        # would set a hard RLIMIT_CORE of 0 for every later test's children.
        allow_core_dumps=True,
    ) as dep:
        assert dep.wait(WAIT_S), "the deployment did not finish in time"
        stats = dep.stats()
    store.close()
    assert stats.frames == FRAMES
    assert stats.faces == 2 * FRAMES
    assert stats.skipped == 0
    assert stats.alerts == 1
    assert [a.subject_id for a in alerts] == [SUBJECT]
    assert len(shown) == FRAMES

    # Counts only in the messages: a failing comparison must not print faces.
    found = [(hits(mine, p), hits(theirs, p)) for p in shown]
    # Before the alert was stored (frames 0..2): the enrolled face is blurred.
    assert [m for m, _ in found[:CONFIRM]] == [0] * CONFIRM, found
    # After (positive control): it is shown sharp, so the scan finds it.
    assert all(m > len(mine) // 2 for m, _ in found[CONFIRM:]), (found, len(mine))
    # The passer-by is never shown.
    assert [t for _, t in found] == [0] * FRAMES, found
