"""The operator preview never shows or writes a passer-by's face unblurred.

Real faces (lfw-dev under LFR_DATA_DIR), pasted at sizes from large (found by
the detector) to small (which YuNet misses), through a real
:class:`lfr.pipeline.Deployment` with the real models and a watchlist none of
them is on. The preview's sink gets every rendered frame; no 64-byte block of
any pasted face is in any of them. Negative controls: the raw frames hold every
block, and blurring only what the detector found (the old preview) leaves
blocks of the small faces. The encrypted recording holds no block of the raw
or the shown frames, is no video a player opens, reads back through
``lfr alerts preview-export`` (audited) and is destroyed by a purge (audited).
"""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.alerts import Records
from lfr.cli import main
from lfr.pipeline import Deployment
from lfr.preview import Preview, PreviewRecorder, blur_faces, recordings
from lfr.preview.recording import MAGIC

pytestmark = pytest.mark.data

U8 = npt.NDArray[np.uint8]
WAIT_S = 120.0  # a limit on waits that must end; never a speed assertion
H, W = 480, 640
BLOCK = 64
# (photo side in pixels, x, y) of each pasted LFW photo; the face fills about
# the middle half of a photo, so these faces are ~90, ~45, ~25 and ~15 px wide.
PLACES = [(180, 40, 60), (90, 300, 40), (50, 450, 300), (30, 560, 80), (30, 200, 400)]


def frames_of_faces(lfw_dir: Path, count: int) -> tuple[list[U8], list[list[bytes]]]:
    """Composite frames and, per frame, the 64-byte blocks of its faces' middles."""
    photos = sorted((lfw_dir / "identities").glob("*/*.jpg"))[: count * len(PLACES)]
    assert len(photos) == count * len(PLACES)
    yy, xx = np.mgrid[0:H, 0:W]
    frames, blocks = [], []
    for f in range(count):
        frame = np.empty((H, W, 3), np.uint8)
        frame[..., 0] = (xx * 200 // W + 20).astype(np.uint8)
        frame[..., 1] = (yy * 200 // H + 20).astype(np.uint8)
        frame[..., 2] = 110
        for (side, x, y), photo in zip(PLACES, photos[f * len(PLACES) :]):
            image = cv2.imread(str(photo))
            assert image is not None
            frame[y : y + side, x : x + side] = cv2.resize(
                image, (side, side), interpolation=cv2.INTER_AREA
            )
        mine = []
        for side, x, y in PLACES:
            # The middle half of the photo: the face.
            q = side // 4
            for row in range(y + q, y + side - q):
                data = frame[row, x + q : x + side - q].tobytes()
                for start in range(0, len(data) - BLOCK + 1, BLOCK):
                    chunk = data[start : start + BLOCK]
                    if len(set(chunk)) > 8:  # not a flat run any picture could hold
                        mine.append(chunk)
        frames.append(frame)
        blocks.append(mine)
    return frames, blocks


def hits(blocks: list[bytes], data: bytes) -> int:
    return sum(1 for chunk in blocks if chunk in data)


@pytest.fixture(scope="module")
def models(
    yunet_path: Path, embedder_path: Path
) -> tuple[lfr.FaceDetector, lfr.FaceEmbedder]:
    return lfr.FaceDetector(), lfr.FaceEmbedder()


def test_no_passer_by_face_reaches_the_preview_or_its_recording(
    tmp_path: Path,
    lfw_dir: Path,
    models: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    detector, embedder = models
    frames, blocks = frames_of_faces(lfw_dir, 4)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), frame)  # lossless

    # Negative control 1: the raw frames hold every block of every face.
    for frame, mine in zip(frames, blocks):
        assert mine
        assert hits(mine, frame.tobytes()) == len(mine)
    # Negative control 2: blurring only what the detector found (the old
    # preview) leaves blocks of the faces it missed.
    leaked = 0
    for frame, mine in zip(frames, blocks):
        found = detector.detect(frame)
        old = blur_faces(
            frame, found.boxes, np.zeros(len(found), bool), out=np.empty_like(frame)
        )
        leaked += hits(mine, old.tobytes())
    assert leaked > 0, "the detector found every face: the control shows nothing"

    key = lfr.Key.generate()
    signing = lfr.SigningKey.generate()
    store = lfr.AlertStore(tmp_path / "alerts.db", key)
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), embedder=embedder
    )
    rng = np.random.default_rng(0)
    for i in range(5):
        wl.add(f"R-{i}", rng.standard_normal((1, embedder.dim), dtype=np.float32))
    shown: list[bytes] = []

    def on_frame(image: U8) -> None:
        assert not image.flags.writeable
        shown.append(image.tobytes())  # the test's own copy, to scan

    recorder = PreviewRecorder(store, fps=5.0)
    preview = Preview(on_frame=on_frame, recorder=recorder)
    with Deployment(
        source=folder,
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=detector,
        embedder=embedder,
        preview=preview,
    ) as dep:
        assert dep.wait(WAIT_S), "the deployment did not finish in time"
        stats = dep.stats()
    assert stats.frames == len(frames)
    assert stats.alerts == 0
    assert len(shown) == len(frames)
    assert preview.closed
    assert recorder.closed
    # The sink got no block of any passer-by's face.
    for picture, mine in zip(shown, blocks):
        assert hits(mine, picture) == 0

    # The recording: 0600 in a 0700 folder, no raw or shown bytes, no container.
    path = recorder.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    assert all(hits(mine, data) == 0 for mine in blocks)
    for picture in shown:
        quarter = [picture[i : i + BLOCK] for i in range(0, len(picture), 4096)]
        assert hits(quarter, data) == 0
    capture = cv2.VideoCapture(str(path))
    try:
        assert not capture.isOpened() or not capture.read()[0]
    finally:
        capture.release()

    # Read back through the command, audited.
    store.close()
    key_file = tmp_path / "store.key"
    key.save(key_file)
    signing_file = tmp_path / "keys" / "audit.key"
    signing_file.parent.mkdir()
    signing.save(signing_file)
    out = tmp_path / "export.avi"
    common = [
        "--store", str(tmp_path / "alerts.db"), "--key-file", str(key_file),
        "--audit", str(tmp_path / "audit.log"), "--signing-key", str(signing_file),
    ]  # fmt: skip
    argv = ["alerts", "preview-export", recorder.recording_id, *common]
    assert main([*argv, "--out", str(out), "--by", "PC-7"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    capture = cv2.VideoCapture(str(out))
    read = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            assert image.shape == (H, W, 3)
            read += 1
    finally:
        capture.release()
    assert read == len(frames)
    events = [
        r.event
        for r in lfr.audit.read_log(tmp_path / "audit.log", signing.public_key())[0]
    ]
    assert events.count("preview_exported") == 1

    # Purge: a day and a bit later the recording is destroyed, and audited.
    later = datetime.now(timezone.utc) + timedelta(days=2)
    with Records.open(
        tmp_path / "alerts.db", key, tmp_path / "audit.log", signing,
        clock=lambda: later,
    ) as records:  # fmt: skip
        assert [r.recording_id for r in recordings(records.store)] == [
            recorder.recording_id
        ]
        with pytest.raises(lfr.errors.RetentionError):  # expired, not yet purged
            records.export_preview(recorder.recording_id, by="PC-7")
        records.purge()
        assert recordings(records.store) == []
        with pytest.raises(KeyError):
            records.export_preview(recorder.recording_id, by="PC-7")
    assert not path.exists()
    events = [
        r.event
        for r in lfr.audit.read_log(tmp_path / "audit.log", signing.public_key())[0]
    ]
    assert events.count("preview_purged") == 1
    report = lfr.audit.verify(tmp_path / "audit.log", signing.public_key())
    assert report.ok, report.violations
