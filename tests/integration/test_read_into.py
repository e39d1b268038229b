"""lfr.sources.read_into: a real cv2.VideoCapture read into a pooled secure buffer.

The video is written at run time with cv2.VideoWriter. A pool of the capture's
frame size receives every frame in place; a pool of another size gets a
CaptureMismatchError (and OpenCV's own copy of the frame is zeroed), where plain
``capture.read(image=frame)`` silently hands back an ordinary array.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from lfr.errors import CaptureMismatchError, SourceError
from lfr.secure import SecurePool
from lfr.sources import read_into

H, W, N = 48, 64, 6


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fails a test that runs for more than a minute (a capture that hangs)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("test ran past its 60 s limit")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened()
    for i in range(N):
        writer.write(np.full((H, W, 3), 30 + 30 * i, np.uint8))
    writer.release()
    return path


class Keeping:
    """A real VideoCapture that keeps every array its read() returned."""

    def __init__(self, path: Path) -> None:
        self.capture = cv2.VideoCapture(str(path))
        assert self.capture.isOpened()
        self.returned: list[Any] = []

    def read(self, image: Any = None) -> tuple[bool, Any]:
        ok, got = self.capture.read(image=image)
        self.returned.append(got)
        return ok, got


def test_matching_pool_receives_every_frame_in_place(video: Path) -> None:
    capture = cv2.VideoCapture(str(video))
    pool = SecurePool(H * W * 3, capacity=2)
    levels = []
    try:
        while True:
            with pool.lease() as buf:
                frame = buf.array(np.uint8, (H, W, 3))
                if not read_into(capture, frame):
                    del frame
                    break
                assert frame.ctypes.data == buf.address  # it landed in the buffer
                levels.append(int(frame.mean()))
                del frame
    finally:
        capture.release()
        pool.close()
    assert len(levels) == N
    assert all(abs(level - (30 + 30 * i)) < 4 for i, level in enumerate(levels))


@pytest.mark.parametrize("shape", [(2 * H, 2 * W, 3), (H // 2, W // 2, 3)])
def test_mismatched_pool_raises_and_zeroes_opencvs_copy(
    video: Path, shape: tuple[int, int, int]
) -> None:
    keeping = Keeping(video)
    pool = SecurePool(2 * H * 2 * W * 3, capacity=1)
    try:
        with pool.lease() as buf:
            frame = buf.array(np.uint8, shape)
            with pytest.raises(CaptureMismatchError) as info:
                read_into(keeping, frame)  # type: ignore[arg-type]
            assert not frame.any()  # nothing landed in the buffer
            del frame
    finally:
        keeping.capture.release()
        pool.close()
    assert isinstance(info.value, SourceError)
    assert info.value.expected == shape
    assert info.value.got == (H, W, 3)
    assert f"{shape}" in str(info.value)
    (returned,) = keeping.returned
    assert returned.shape == (H, W, 3)  # OpenCV's own array held the frame...
    assert not returned.any()  # ...and was zeroed before the error


def test_plain_read_falls_back_silently(video: Path) -> None:
    """The negative control: what read_into catches, VideoCapture.read does not."""
    capture = cv2.VideoCapture(str(video))
    pool = SecurePool(2 * H * 2 * W * 3, capacity=1)
    try:
        with pool.lease() as buf:
            frame = buf.array(np.uint8, (2 * H, 2 * W, 3))
            ok, got = capture.read(image=frame)
            assert ok  # no error, no warning...
            assert got.ctypes.data != frame.ctypes.data  # ...and not in the buffer
            assert got.any()
            assert not frame.any()
            got.fill(0)
            del frame
    finally:
        capture.release()
        pool.close()


def test_refuses_views_outside_secure_memory(video: Path) -> None:
    capture = cv2.VideoCapture(str(video))
    try:
        with pytest.raises(TypeError, match=r"view of a lfr\.SecureBuffer"):
            read_into(capture, np.zeros((H, W, 3), np.uint8))
        pool = SecurePool(H * W * 3 * 2, capacity=1)
        with pool.lease() as buf:
            wide = buf.array(np.uint8, (H, 2 * W, 3))
            with pytest.raises(TypeError, match="C-contiguous"):
                read_into(capture, wide[:, :W])
            with pytest.raises(TypeError, match="uint8"):
                read_into(capture, buf.array(np.float32, (H // 2, W, 3)))
            del wide
        pool.close()
    finally:
        capture.release()


def test_end_of_stream_returns_false(tmp_path: Path) -> None:
    capture = cv2.VideoCapture(str(tmp_path / "missing.avi"))
    pool = SecurePool(H * W * 3, capacity=1)
    with pool.lease() as buf:
        frame = buf.array(np.uint8, (H, W, 3))
        assert read_into(capture, frame) is False
        assert not frame.any()
        del frame
    pool.close()


def test_docstring_example() -> None:
    import doctest

    import lfr.sources._read_into as module

    assert doctest.testmod(module).failed == 0
