"""lfr.sources: real video files, images and streams decoded into secure buffers.

Every test builds its media at run time (an MJPG .avi written by OpenCV, PNG/JPG
files, an HTTP stream served by a real ffmpeg process) with the frame number coded in
the pixels, so order and content can be checked after real decoding.
"""

from __future__ import annotations

import datetime as dt
import doctest
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr.sources
from lfr._core import SecureExport
from lfr.errors import SourceError
from lfr.secure import SecureBuffer, SecurePool, secure_owner
from lfr.sources import (
    Backoff,
    Frame,
    FrameSource,
    LiveSource,
    open_source,
    redact_url,
)
from tests.support.stream_server import Server, free_port

H, W, N = 240, 320, 40
BITS = 8  # 8 columns of 40 pixels: bit k of the frame number, black or white
JOIN_S = 20.0  # generous limits on waits that must end; never a speed assertion


def encode(number: int, h: int = H, w: int = W) -> npt.NDArray[np.uint8]:
    image = np.zeros((h, w, 3), np.uint8)
    step = w // BITS
    for bit in range(BITS):
        if number >> bit & 1:
            image[:, bit * step : (bit + 1) * step] = 255
    image[h // 2 :, :, 2] = 128  # a second tone, so channels are not all equal
    return image


def decode(image: npt.NDArray[np.uint8]) -> int:
    """The frame number coded by :func:`encode` (robust to JPEG loss)."""
    h, w = image.shape[:2]
    step = w // BITS
    centre = image[h // 8 : h // 2 - h // 8, :, 0]
    return sum(
        1 << bit
        for bit in range(BITS)
        if centre[:, bit * step + step // 4 : (bit + 1) * step - step // 4].mean() > 127
    )


def inside(image: npt.NDArray[Any], buf: SecureBuffer | None) -> bool:
    """Whether all of ``image`` lies within ``buf``'s memory."""
    assert buf is not None
    start = image.ctypes.data
    return buf.address <= start and start + image.nbytes <= buf.address + buf.nbytes


def write_video(path: Path, count: int = N) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (W, H))
    assert writer.isOpened()
    for i in range(count):
        writer.write(encode(i))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


def collect(source: FrameSource) -> list[tuple[int, int]]:
    """``(index, decoded number)`` of every frame, each released at once."""
    seen = []
    for frame in source.frames():
        with frame:
            assert inside(frame.image, frame.buffer)
            seen.append((frame.index, decode(frame.image)))
    return seen


# --- video files -----------------------------------------------------------------


def test_video_delivers_every_frame_in_order_in_secure_memory(video: Path) -> None:
    with open_source(video) as source:
        assert not source.live
        assert source.kind == "video"
        pool = source.pool
        assert pool is not None
        assert pool.nbytes == H * W * 3
        times: list[dt.datetime] = []
        seen = []
        for frame in source.frames():
            assert frame.image.shape == (H, W, 3)
            assert frame.image.dtype == np.uint8
            assert inside(frame.image, frame.buffer)
            assert frame.time.tzinfo is dt.timezone.utc
            times.append(frame.time)
            seen.append((frame.index, decode(frame.image)))
            frame.release()
        assert seen == [(i, i) for i in range(N)]
        assert times == sorted(times)
        stats = source.stats
        assert (stats.read, stats.delivered, stats.dropped) == (N, N, 0)
        assert pool.available == pool.capacity
        assert pool.retired == 0


def test_video_every_third_frame(video: Path) -> None:
    with open_source(video, every=3) as source:
        seen = collect(source)
        assert seen == [(i, i) for i in range(0, N, 3)]
        assert source.stats.read == N
        assert source.stats.delivered == len(seen)


def test_release_wipes_the_buffer_and_returns_it(video: Path) -> None:
    with open_source(video, pool_size=2) as source:
        pool = source.pool
        assert pool is not None
        frames = source.frames()
        frame = next(frames)
        buf = frame.buffer
        assert buf is not None
        assert decode(frame.image) == 0
        second = next(frames)  # frame 1 is non-zero in the pixels coding bit 0
        assert pool.in_use == 2
        kept = second.image  # a view outliving the release: wiped, buffer retired
        assert kept.any()
        second.release()
        assert not kept.any()
        assert pool.retired == 1
        del kept
        frame.release()
        frame.release()  # idempotent
        assert frame.released
        assert frame.buffer is None
        with pytest.raises(RuntimeError, match="released"):
            _ = frame.image
        assert not buf.array().any()
        assert buf.views == 0
        assert pool.in_use == 0
        with next(frames) as third:
            assert third.index == 2
            assert decode(third.image) == 2
        assert third.released
        assert pool.in_use == 0


def test_corrupt_and_missing_videos_raise_source_error(
    tmp_path: Path, video: Path
) -> None:
    rng = np.random.default_rng(7)
    for name in ("noise.avi", "noise.mp4"):
        (tmp_path / name).write_bytes(rng.integers(0, 256, 50_000, np.uint8).tobytes())
        with pytest.raises(SourceError, match="cannot open video"):
            open_source(tmp_path / name)
    # A valid AVI header over scrambled frames: it opens, the first read fails.
    data = bytearray(video.read_bytes())
    data[4096:] = rng.integers(0, 256, len(data) - 4096, np.uint8).tobytes()
    (tmp_path / "scrambled.avi").write_bytes(bytes(data))
    with pytest.raises(SourceError, match="video"):
        open_source(str(tmp_path / "scrambled.avi"))
    with pytest.raises(SourceError, match="nothing at"):
        open_source(tmp_path / "absent.avi")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        open_source(tmp_path / "empty")


def test_stop_from_another_thread_ends_a_blocked_video(video: Path) -> None:
    # The consumer keeps every frame, so the source waits for a free buffer; stop()
    # must end that wait and frames().
    source = open_source(video, pool_size=3)
    held: list[Frame] = []
    full = threading.Event()
    ended = threading.Event()

    def consume() -> None:
        for frame in source.frames():
            held.append(frame)
            if len(held) == 3:
                full.set()
        ended.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert full.wait(JOIN_S)
    assert not ended.is_set()
    source.stop()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert ended.is_set()
    assert [f.index for f in held] == [0, 1, 2]
    for frame in held:
        frame.release()
    source.close()
    with pytest.raises(RuntimeError, match="closed"):
        source.frames()


# --- folders -----------------------------------------------------------------------


def test_folder_sorted_by_name_with_unreadable_images_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    # Written in reverse so that directory order is not name order.
    names = [f"img_{i:02d}.{'png' if i % 2 else 'jpg'}" for i in range(8)]
    for i in reversed(range(8)):
        assert cv2.imwrite(str(folder / names[i]), encode(i * 3, 120, 160))
    (folder / "img_03.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub.png").mkdir()  # a folder, however named, is not an image
    events: list[tuple[str, dict[str, Any]]] = []
    with open_source(folder, on_event=lambda n, p: events.append((n, p))) as source:
        seen = collect(source)
        assert seen == [(i, i * 3) for i in range(8) if i != 3]
        stats = source.stats
        assert (stats.read, stats.delivered, stats.skipped) == (8, 7, 1)
    assert [name for name, _ in events] == ["frame_skipped"]
    assert events[0][1]["index"] == 3
    assert "img_03" not in repr(events)  # the log names the file, events do not

    with open_source(str(folder), every=3) as source:
        assert collect(source) == [(0, 0), (6, 18)]  # index 3 (corrupt) passed over


def test_folder_png_pixels_are_exact(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 256, (31, 47, 3), np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), image)
    with open_source(tmp_path) as source:
        (frame,) = list(source.frames())
        assert np.array_equal(frame.image, image)
        assert inside(frame.image, frame.buffer)
        frame.release()


# --- iterables ---------------------------------------------------------------------


def test_iterable_frames_are_copied_into_secure_memory() -> None:
    arrays = [encode(i, 60, 80) for i in range(10)]
    with open_source(iter(arrays)) as source:
        assert source.kind == "iterable"
        assert not source.live
        for frame in source.frames():
            original = arrays[frame.index]
            assert np.array_equal(frame.image, original)
            assert frame.image.ctypes.data != original.ctypes.data
            assert inside(frame.image, frame.buffer)
            frame.release()
        assert source.stats.delivered == 10
    with open_source(arrays, every=3) as source:
        assert [i for i, _ in collect(source)] == [0, 3, 6, 9]


def test_iterable_frames_may_grow_and_shrink() -> None:
    sizes = [(10, 10), (40, 30), (8, 6), (40, 30)]
    arrays = [encode(i, h, w) for i, (h, w) in enumerate(sizes)]
    with open_source(arrays) as source:
        pools = []
        for frame in source.frames():
            with frame:
                assert frame.image.shape == (*sizes[frame.index], 3)
                assert np.array_equal(frame.image, arrays[frame.index])
                pools.append(source.pool)
        assert pools[0] is not pools[1]  # grew: re-allocated
        assert pools[1] is pools[2] is pools[3]  # smaller frames fit


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        (np.zeros((60, 80), np.uint8), ValueError, "shape"),
        (np.zeros((60, 80, 4), np.uint8), ValueError, "shape"),
        (np.zeros((60, 80, 3), np.float32), TypeError, "uint8"),
        ([[1, 2, 3]], TypeError, "numpy"),
        (np.zeros((0, 80, 3), np.uint8), ValueError, "empty"),
    ],
)
def test_iterable_wrong_frame_raises_naming_its_index(
    bad: Any, error: type[Exception], words: str
) -> None:
    arrays = [encode(0, 60, 80), encode(1, 60, 80), bad, encode(3, 60, 80)]
    with open_source(arrays) as source:
        frames = source.frames()
        assert [next(frames).index, next(frames).index] == [0, 1]
        with pytest.raises(error, match=f"frame 2 of the iterable: .*{words}"):
            next(frames)
        pool = source.pool
        assert pool is not None
    assert pool.closed


# --- specs, errors, redaction ------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        b"clip.avi",
        3.5,
        None,
        True,
        object(),
        "ftp://user:secret@example.invalid/clip",
        np.zeros((60, 80, 3), np.uint8),
        -1,
    ],
    ids=repr,
)
def test_unsupported_specs_raise_source_error(spec: object) -> None:
    with pytest.raises(SourceError) as info:
        open_source(spec)
    assert "secret" not in str(info.value)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="every"):
        open_source([encode(0)], every=0)
    with pytest.raises(TypeError, match="pool_size"):
        open_source([encode(0)], pool_size="4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    assert list(Backoff(initial=1, factor=3, maximum=5, attempts=4).delays()) == [
        1,
        3,
        5,
        5,
    ]
    assert list(Backoff(attempts=0).delays()) == []


def test_urls_are_redacted() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/stream1") == (
        "rtsp://10.0.0.5:554/stream1"
    )
    shown = redact_url("https://cam.example/live?channel=2&token=abc123&Password=x")
    assert shown == "https://cam.example/live?channel=2&token=***&Password=***"
    # An unreachable stream: refused at once, and the message has no password.
    with pytest.raises(SourceError, match="cannot open stream") as info:
        open_source(f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/s", timeout=2)
    assert "hunter2" not in str(info.value)
    assert "admin" not in str(info.value)


def test_docstring_examples() -> None:
    for module in (lfr.sources, lfr.sources._base):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0
        assert result.failed == 0


# --- live semantics with a fake capture ---------------------------------------------


class FakeCapture:
    """A camera that grabs numbered frames as fast as asked, then fails."""

    def __init__(self, count: int, start: int = 0, h: int = 48, w: int = 64) -> None:
        self._count = count
        self._numbers = iter(range(start, start + count))
        self._current: int | None = None
        self._cond = threading.Condition()
        self.grabbed = 0
        self.released = False
        self.gate: threading.Event | None = None  # when set up, grab waits on it
        self.shape = (h, w)
        self.sizes: dict[int, tuple[int, int]] = {}  # frame number -> (h, w)
        self.grey = False
        self.allocated: list[npt.NDArray[np.uint8]] = []  # arrays it made itself

    def grab(self) -> bool:
        if self.gate is not None:
            self.gate.wait()
        with self._cond:
            self._current = next(self._numbers, None)
            if self._current is None:
                return False
            self.grabbed += 1
            self._cond.notify_all()
            return True

    def retrieve(self, out: npt.NDArray[np.uint8] | None) -> npt.NDArray[Any] | None:
        assert self._current is not None
        self.shape = self.sizes.get(self._current, self.shape)
        image = encode(self._current, *self.shape)
        if self.grey:
            image = np.ascontiguousarray(image[:, :, 0])
        if out is None or out.shape != image.shape:
            self.allocated.append(image)
            return image
        np.copyto(out, image)
        return out

    def release(self) -> None:
        self.released = True

    def size(self) -> tuple[int, int] | None:
        return self.shape

    def wait_grabbed(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.grabbed >= count, JOIN_S)


def test_live_newest_frame_wins_and_drops_are_wiped() -> None:
    total = 200
    capture = FakeCapture(total)
    events: list[str] = []
    source = LiveSource(
        lambda: capture if not capture.released else None,
        kind="camera",
        spec="fake",
        reconnect=Backoff(attempts=0),
        on_event=lambda name, payload: events.append(name),
    )
    assert source.live
    pool = source.pool
    assert pool is not None
    # Spy on the pool: which frame each released buffer held (read before the wipe).
    released: list[int] = []
    real_release = pool.release

    def spy(buf: SecureBuffer) -> None:
        view = buf.array(np.uint8, (48, 64, 3))
        released.append(decode(view))
        del view
        real_release(buf)

    pool.release = spy  # type: ignore[method-assign]
    delivered = []
    for frame in source.frames():
        with frame:
            assert inside(frame.image, frame.buffer)
            assert decode(frame.image) == frame.index  # content matches its index
            delivered.append(frame.index)
        # A slow consumer: wait until the reader has grabbed 10 more frames, so at
        # least 8 of them replaced one another in the mailbox.
        capture.wait_grabbed(min(total, delivered[-1] + 10))
    stats = source.stats
    source.close()
    assert delivered == sorted(set(delivered))  # strictly increasing, no repeats
    assert stats.read == total
    assert stats.dropped > 0
    assert stats.delivered == len(delivered)
    assert stats.delivered + stats.dropped == total  # each frame: seen or dropped
    assert sorted(released) == list(range(total))  # every buffer released (wiped)
    dropped = set(range(total)) - set(delivered)
    assert len(dropped) == stats.dropped
    assert events == ["stream_lost", "stream_ended"]
    assert pool.retired == 0
    assert capture.released


def test_live_every_third_frame() -> None:
    capture = FakeCapture(30)
    source = LiveSource(
        lambda: capture, spec="fake", every=3, reconnect=Backoff(attempts=0)
    )
    delivered = collect(source)
    source.close()
    assert delivered
    assert all(index % 3 == 0 and number == index for index, number in delivered)
    stats = source.stats
    assert stats.read == 30
    assert stats.delivered + stats.dropped == 10


class BrokenCapture(FakeCapture):
    def retrieve(self, out: npt.NDArray[np.uint8] | None) -> npt.NDArray[Any] | None:
        if self.grabbed == 3:
            raise OSError("driver fault")
        return super().retrieve(out)


def test_live_reader_failure_is_raised_by_frames() -> None:
    capture = BrokenCapture(10)
    source = LiveSource(lambda: capture, spec="fake")
    seen: list[tuple[int, int]] = []

    def consume() -> None:
        seen.extend(collect(source))

    with pytest.raises(SourceError, match="OSError") as info:
        consume()
    assert isinstance(info.value.__cause__, OSError)
    assert all(i < 2 for i, _ in seen)
    source.close()
    assert capture.released


def test_frames_released_after_close_are_freed(video: Path) -> None:
    source = open_source(video)
    frame = next(source.frames())
    buf = frame.buffer
    assert buf is not None
    source.close()
    assert not buf.closed  # still leased: the frame may be in use
    frame.release()
    assert buf.closed  # wiped and freed, not returned to a closed pool


def test_live_reconnects_with_backoff_then_ends() -> None:
    captures = [FakeCapture(5), None, None, FakeCapture(4, start=100), None]
    opened: list[int] = []

    def opener() -> FakeCapture | None:
        opened.append(len(opened))
        return captures[len(opened) - 1] if len(opened) <= len(captures) else None

    events: list[tuple[str, dict[str, Any]]] = []
    source = LiveSource(
        opener,
        spec="fake",
        reconnect=Backoff(initial=0.001, factor=2.0, maximum=0.002, attempts=3),
        on_event=lambda name, payload: events.append((name, payload)),
    )
    seen = []
    for frame in source.frames():
        with frame:
            seen.append(decode(frame.image))
    source.close()
    names = [name for name, _ in events]
    assert names == ["stream_lost", "stream_recovered", "stream_lost", "stream_ended"]
    assert events[1][1]["attempts"] == 3  # two refusals, then the new capture
    assert events[3][1]["attempts"] == 3  # all three refused
    assert len(opened) == 7  # the first open and 2 x 3 retries
    assert source.stats.reconnects == 1
    assert set(seen) <= {*range(5), *range(100, 104)}
    assert seen == sorted(seen)
    assert 100 in seen or 103 in seen
    for _, payload in events:  # counts and times only
        assert set(payload) <= {"kind", "attempts", "down_s", "frames_read", "time"}


def test_live_stop_ends_frames_while_the_reader_is_blocked() -> None:
    capture = FakeCapture(1000)
    capture.gate = threading.Event()
    capture.gate.set()
    source = LiveSource(lambda: capture, spec="fake")
    got_one = threading.Event()
    ended = threading.Event()

    def consume() -> None:
        for frame in source.frames():
            frame.release()
            if capture.gate is not None:
                capture.gate.clear()  # the camera now blocks in grab()
            got_one.set()
        ended.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert got_one.wait(JOIN_S)
    source.stop()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert ended.is_set()
    capture.gate.set()  # the blocked grab returns; close() can join the reader
    source.close()
    assert capture.released
    pool = source.pool
    assert pool is None  # freed by close()


def test_live_stop_interrupts_the_backoff_wait() -> None:
    lost = threading.Event()
    source = LiveSource(
        lambda: FakeCapture(0),  # every grab fails
        spec="fake",
        reconnect=Backoff(initial=3600.0, maximum=3600.0),
        on_event=lambda name, payload: lost.set() if name == "stream_lost" else None,
    )
    ended = threading.Event()

    def consume() -> None:
        for frame in source.frames():
            frame.release()
        ended.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert lost.wait(JOIN_S)
    source.stop()
    thread.join(JOIN_S)
    assert ended.is_set()
    source.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("lfr-stream")]
    assert source.stats.reconnects == 0


def test_live_consumer_holding_every_buffer_causes_drops_not_a_stall() -> None:
    capture = FakeCapture(100)
    source = LiveSource(
        lambda: capture, spec="fake", pool_size=2, reconnect=Backoff(attempts=0)
    )
    held = []
    for frame in source.frames():
        held.append(frame)  # never released while the stream runs
    assert capture.grabbed == 100
    stats = source.stats
    assert stats.delivered == len(held)
    assert stats.delivered + stats.dropped == 100
    indices = [f.index for f in held]
    assert indices == sorted(set(indices))
    for frame in held:
        frame.release()
    source.close()


def test_capture_size_changes_reallocate_and_zero_temporaries() -> None:
    capture = FakeCapture(6)
    capture.sizes = {2: (96, 128), 4: (24, 32)}
    source = lfr.sources.VideoSource(lambda: capture, spec="fake")
    shapes, pools = [], []
    for frame in source.frames():
        with frame:
            assert decode(frame.image) == frame.index
            assert inside(frame.image, frame.buffer)
            shapes.append(frame.image.shape[:2])
            pools.append(source.pool)
    source.close()
    assert shapes == [(48, 64)] * 2 + [(96, 128)] * 2 + [(24, 32)] * 2
    assert pools[1] is not pools[2]  # grew: a new pool
    assert pools[2] is pools[5]  # shrank: the larger buffers serve
    assert len(capture.allocated) == 2  # the two size changes, then in place again
    assert not any(a.any() for a in capture.allocated)  # zeroed after the copy


def test_grey_frames_are_converted_to_bgr() -> None:
    capture = FakeCapture(3)
    capture.grey = True
    source = lfr.sources.VideoSource(lambda: capture, spec="fake")
    for frame in source.frames():
        with frame:
            assert frame.image.shape == (48, 64, 3)
            assert decode(frame.image) == frame.index
            assert np.array_equal(frame.image[..., 0], frame.image[..., 2])
    source.close()
    assert len(capture.allocated) == 3
    assert not any(a.any() for a in capture.allocated)


def test_opencv_decodes_video_in_place(
    video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lfr.sources._base import _convert_into

    copies = []

    def counting(image: Any, view: Any, what: str) -> None:
        copies.append(image.shape)
        _convert_into(image, view, what)

    monkeypatch.setattr("lfr.sources._capture._convert_into", counting)
    with open_source(video) as source:
        assert len(collect(source)) == N
    assert copies == []  # every frame went straight into its secure buffer


# Stills decoded in place, size bombs, oversized and broken files:
# tests/integration/test_stills.py.


# --- a real network stream: ffmpeg serving HTTP on 127.0.0.1 ------------------------


@pytest.fixture
def server(video: Path) -> Iterator[Server]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/setup.sh installs it)")
    serving = Server(video, free_port())
    yield serving
    serving.kill()


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + JOIN_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_network_stream_lost_recovered_and_stopped(server: Server) -> None:
    url = f"http://viewer:s3cret@127.0.0.1:{server.port}/live"
    with pytest.raises(SourceError, match="cannot open stream"):
        open_source(url, timeout=2)  # nothing listening yet
    server.start()
    events: list[tuple[str, dict[str, Any]]] = []
    source: FrameSource | None = None
    deadline = time.monotonic() + JOIN_S
    while source is None:  # ffmpeg takes a moment to listen
        try:
            source = open_source(
                url,
                timeout=5,
                reconnect=Backoff(initial=0.1, factor=2.0, maximum=0.5),
                on_event=lambda name, payload: events.append((name, payload)),
            )
        except SourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert source.live
    assert source.kind == "stream"
    assert "s3cret" not in repr(source)
    assert "viewer" not in repr(source)
    numbers: list[int] = []
    ended = threading.Event()

    def consume() -> None:
        assert source is not None
        for frame in source.frames():
            with frame:
                assert inside(frame.image, frame.buffer)
                numbers.append(decode(frame.image))
        ended.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(numbers) >= 10, "frames from the stream")
        assert all(0 <= n < N for n in numbers)  # real frames of the clip
        server.kill()
        wait_for(lambda: "stream_lost" in [e for e, _ in events], "stream_lost")
        server.start()
        wait_for(lambda: "stream_recovered" in [e for e, _ in events], "recovery")
        before = len(numbers)
        wait_for(lambda: len(numbers) >= before + 5, "frames after recovery")
        assert source.stats.reconnects == 1
        server.kill()
        wait_for(lambda: [e for e, _ in events].count("stream_lost") == 2, "2nd loss")
        assert not ended.is_set()
        source.stop()  # during the backoff (or a reconnect attempt)
        thread.join(JOIN_S)
        assert not thread.is_alive()
        assert ended.is_set()
    finally:
        source.close()
        thread.join(JOIN_S)
    names = [e for e, _ in events]
    assert names[:3] == ["stream_lost", "stream_recovered", "stream_lost"]
    assert "stream_ended" not in names
    assert all(0 <= n < N for n in numbers)
    assert not [t for t in threading.enumerate() if t.name.startswith("lfr-stream")]


def test_secure_pool_is_the_frame_store(video: Path) -> None:
    with open_source(video) as source:
        assert isinstance(source.pool, SecurePool)
        frame = next(source.frames())
        base: Any = frame.image
        while not isinstance(base, SecureBuffer):
            base = base.owner if isinstance(base, SecureExport) else base.base
        assert base is frame.buffer
        assert secure_owner(frame.image) is frame.buffer
        frame.release()
