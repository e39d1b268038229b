"""Still images: size bounded from the header, decoded straight into secure buffers.

Adversarial inputs (a size bomb, an oversized still, damaged files) run in a child
process with a time limit, so a hang or a memory blow-up cannot take the test run
with it; the child reports what it saw as JSON. Every bound has a negative control
that lifts it and shows what it prevents.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lfr.sources import MAX_STILL_PIXELS, open_source
from lfr.sources._stills import DEFAULT_MAX_STILL_PIXELS, UnusableImageError, read_size

REPO = Path(__file__).resolve().parents[2]
CHILD_S = 120  # generous: a child that takes longer has hung
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fails an in-process test that runs for more than a minute."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("test ran past its 60 s limit")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def png_bomb(path: Path, w: int, h: int) -> Path:
    """A valid grey PNG of ``w`` x ``h`` zeros: a few hundred KB at most."""
    raw = zlib.compress(b"\x00" * (w + 1) * h, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    return path


def still(i: int, h: int = 48, w: int = 64) -> npt.NDArray[np.uint8]:
    image = np.random.default_rng(i).integers(0, 256, (h, w, 3), np.uint8)
    image[:, : w // 2] = (i * 37) % 256  # a flat half: JPEG keeps its value
    return image


def run_child(code: str, **env: str) -> dict[str, Any]:
    """Runs ``code`` in a fresh interpreter (lfr from this tree); its JSON output."""
    environ = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "python"), str(REPO), environ.get("PYTHONPATH", "")]
    )
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=CHILD_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


# Iterates a folder source, measuring peak RSS around it; ``BOUND`` (if given)
# replaces lfr's own header bound, to show what it prevents.
FOLDER_RUN = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
import lfr.sources, lfr.sources._stills as stills
def hwm():  # own peak RSS, KiB (ru_maxrss would start at the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
bound = {bound!r}
if bound is not None:
    stills.MAX_STILL_PIXELS = bound
before = hwm()
seen = []
with lfr.sources.open_source({folder!r}, pool_size=1, allow_unlocked=True) as source:
    for frame in source.frames():
        with frame:
            seen.append([frame.index, list(frame.image.shape)])
    stats = source.stats
peak = hwm()
print(json.dumps({{"seen": seen, "skipped": stats.skipped,
                  "delivered": stats.delivered, "rss_mb": (peak - before) / 1024}}))
"""


def folder_run(folder: Path, bound: int | None = None, **env: str) -> dict[str, Any]:
    return run_child(FOLDER_RUN.format(folder=str(folder), bound=bound), **env)


def test_import_sets_opencvs_pixel_bound_unless_the_operator_did() -> None:
    code = (
        "import os, json, lfr.sources as s; print(json.dumps({'v': "
        "[os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], s.MAX_STILL_PIXELS]}))"
    )
    got = run_child(code)
    assert got["v"] == [str(DEFAULT_MAX_STILL_PIXELS), DEFAULT_MAX_STILL_PIXELS]
    chosen = run_child(code, OPENCV_IO_MAX_IMAGE_PIXELS="1000000")
    assert chosen["v"] == ["1000000", 1000000]
    assert MAX_STILL_PIXELS == DEFAULT_MAX_STILL_PIXELS  # this process, too


def test_size_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    bomb = png_bomb(folder / "b_bomb.png", 8000, 8000)
    assert bomb.stat().st_size < 200 * 1024  # a tiny file declaring 64 Mpx
    assert cv2.imwrite(str(folder / "a_good.png"), still(1))
    assert cv2.imwrite(str(folder / "c_good.png"), still(2))

    got = folder_run(folder)
    assert got["seen"] == [[0, [48, 64, 3]], [2, [48, 64, 3]]]
    assert (got["skipped"], got["delivered"]) == (1, 2)
    assert got["rss_mb"] < 200, got
    assert "b_bomb.png" in got["stderr"]
    assert "too large: 8000x8000" in got["stderr"]

    # Negative control: with lfr's header bound lifted, OpenCV's own bound (set by
    # `import lfr`) still refuses to decode it, but lfr has already sized its pool
    # for 8000x8000 (192 MB, one buffer): the header bound is what keeps memory flat.
    lifted = folder_run(folder, bound=1 << 30)
    assert (lifted["skipped"], lifted["delivered"]) == (1, 2)
    assert lifted["rss_mb"] > 150, lifted


IMREAD_BOMB = """
import json
import lfr, cv2
def hwm():  # own peak RSS, KiB (ru_maxrss would start at the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm()
try:
    shape = list(cv2.imread({path!r}, cv2.IMREAD_COLOR).shape)
except cv2.error:
    shape = None
peak = hwm()
print(json.dumps({{"shape": shape, "rss_mb": (peak - before) / 1024}}))
"""


def test_opencvs_bound_holds_for_any_decode_after_import_lfr(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png", 8000, 8000)
    got = run_child(IMREAD_BOMB.format(path=str(bomb)))
    assert got["shape"] is None  # refused by OpenCV itself
    assert got["rss_mb"] < 50, got
    # Negative control: with OpenCV's default bound (2^30 pixels) it decodes.
    lifted = run_child(
        IMREAD_BOMB.format(path=str(bomb)), OPENCV_IO_MAX_IMAGE_PIXELS=str(1 << 30)
    )
    assert lifted["shape"] == [8000, 8000, 3]
    assert lifted["rss_mb"] > 150, lifted


def test_oversized_still_in_a_folder_is_skipped_named_and_counted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(4):
        assert cv2.imwrite(str(folder / f"img_{i}.png"), still(i))
    wide = np.zeros((1, 17000, 3), np.uint8)  # within OpenCV's bound, over lfr's side
    assert cv2.imwrite(str(folder / "img_1_wide.png"), wide)

    got = folder_run(folder)
    assert [index for index, _ in got["seen"]] == [0, 1, 3, 4]  # the rest goes on
    assert (got["skipped"], got["delivered"]) == (1, 4)
    warnings = [line for line in got["stderr"].splitlines() if "skipped" in line]
    assert len(warnings) == 1
    assert "img_1_wide.png" in warnings[0]
    assert "too large: 17000x1" in warnings[0]

    # Negative control: without it, nothing is skipped and nothing is logged.
    (folder / "img_1_wide.png").unlink()
    clean = folder_run(folder)
    assert (clean["skipped"], clean["delivered"]) == (0, 4)
    assert "skipped" not in clean["stderr"]


def test_broken_files_are_skipped_and_the_folder_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "a.png"), still(1))
    good_png = (folder / "a.png").read_bytes()
    assert cv2.imwrite(str(folder / "b.bmp"), still(2))
    good_bmp = (folder / "b.bmp").read_bytes()
    broken = {
        "c_header_only.png": good_png[:33],
        "d_half.png": good_png[: len(good_png) // 2],
        "e_half.bmp": good_bmp[: len(good_bmp) // 2],
        "f_noise.jpg": np.random.default_rng(0).bytes(4000),
        "g_empty.webp": b"",
        "h_soi_only.jpg": b"\xff\xd8\xff\xd9",
        "i_text.png": b"not an image at all",
    }
    for name, data in broken.items():
        (folder / name).write_bytes(data)
    assert cv2.imwrite(str(folder / "z.jpg"), still(3))

    got = folder_run(folder)
    assert [index for index, _ in got["seen"]] == [0, 1, 9]
    assert (got["skipped"], got["delivered"]) == (len(broken), 3)
    for name in broken:
        assert name in got["stderr"], name


def test_a_quiet_decoder_failure_is_caught(tmp_path: Path) -> None:
    """``imread(path, dst)`` returns ``dst`` untouched for some damaged files."""
    assert cv2.imwrite(str(tmp_path / "a.png"), still(1))
    data = (tmp_path / "a.png").read_bytes()
    half = tmp_path / "half.png"
    half.write_bytes(data[: len(data) // 2])
    # Negative control: OpenCV neither raises nor returns None here; without
    # lfr's sentinel, the untouched buffer would pass as a decoded frame.
    dst = np.full((48, 64, 3), 7, np.uint8)
    assert cv2.imread(str(half), dst, cv2.IMREAD_COLOR) is dst
    assert (dst == 7).all()
    with open_source(tmp_path) as source:
        assert [frame.index for frame in source.frames()] == [0]
        assert source.stats.skipped == 1


def test_stills_are_decoded_into_the_pooled_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = {f"{i}.{ext}": still(i) for i, ext in enumerate(["png", "bmp", "jpg"])}
    for name, image in images.items():
        assert cv2.imwrite(str(tmp_path / name), image)
    webp = still(9)
    assert cv2.imwrite(str(tmp_path / "3.webp"), webp, [cv2.IMWRITE_WEBP_QUALITY, 101])
    images["3.webp"] = webp
    calls: list[tuple[bool, int]] = []
    real = cv2.imread

    def spying(path: str, *args: Any) -> Any:
        result = real(path, *args)
        calls.append((result is args[0], id(result)))
        return result

    monkeypatch.setattr(cv2, "imread", spying)
    with open_source(tmp_path) as source:
        # zip_longest: zip(strict=True) needs Python 3.10.
        for frame, name in itertools.zip_longest(source.frames(), sorted(images)):
            assert frame is not None, f"no frame for {name}"
            assert name is not None, "more frames than images"
            with frame:
                buf = frame.buffer
                assert buf is not None
                start = frame.image.ctypes.data
                assert buf.address <= start
                assert start + frame.image.nbytes <= buf.address + buf.nbytes
                if not name.endswith(".jpg"):  # lossless
                    assert np.array_equal(frame.image, images[name])
        pool = source.pool
        assert pool is not None
        assert pool.retired == 0
    assert [same for same, _ in calls] == [True] * 4  # OpenCV wrote in place


def test_exif_turned_jpeg_is_copied_into_the_buffer_and_zeroed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one case where OpenCV allocates: a JPEG turned by its EXIF orientation."""
    pil = pytest.importorskip("PIL.Image")
    image = still(4, 40, 60)
    exif = pil.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise
    pil.fromarray(image[:, :, ::-1].copy()).save(tmp_path / "r.jpg", exif=exif)
    kept: list[Any] = []
    real = cv2.imread

    def keeping(path: str, *args: Any) -> Any:
        result = real(path, *args)
        kept.append(result)
        return result

    monkeypatch.setattr(cv2, "imread", keeping)
    with open_source(tmp_path) as source:
        (frame,) = list(source.frames())
        with frame:
            assert frame.image.shape == (60, 40, 3)
            assert frame.image.any()
            buf = frame.buffer
            assert buf is not None
            assert frame.image.ctypes.data == buf.address
    (result,) = kept
    assert result.shape == (60, 40, 3)  # OpenCV's own array (the negative control)
    assert not result.any()  # zeroed once copied


@pytest.mark.parametrize(
    ("name", "make", "size"),
    [
        ("a.png", lambda p: cv2.imwrite(str(p), still(0, 30, 50)), (30, 50)),
        ("a.jpg", lambda p: cv2.imwrite(str(p), still(0, 30, 50)), (30, 50)),
        ("a.bmp", lambda p: cv2.imwrite(str(p), still(0, 30, 50)), (30, 50)),
        ("a.webp", lambda p: cv2.imwrite(str(p), still(0, 30, 50)), (30, 50)),
        (
            "lossless.webp",
            lambda p: cv2.imwrite(
                str(p), still(0, 30, 50), [cv2.IMWRITE_WEBP_QUALITY, 101]
            ),
            (30, 50),
        ),
        (
            "progressive.jpg",
            lambda p: cv2.imwrite(
                str(p), still(0, 30, 50), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
            ),
            (30, 50),
        ),
    ],
)
def test_header_sizes_match_what_opencv_decodes(
    tmp_path: Path, name: str, make: Any, size: tuple[int, int]
) -> None:
    path = tmp_path / name
    assert make(path)
    assert read_size(path) == size
    decoded = cv2.imread(str(path))
    assert decoded is not None
    assert decoded.shape[:2] == size


def test_header_bounds(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "b.png", 6000, 6000)
    with pytest.raises(UnusableImageError, match=r"too large: 6000x6000"):
        read_size(bomb)
    assert read_size(bomb, max_pixels=6000 * 6000) == (6000, 6000)  # the control
    (tmp_path / "x.jpg").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(UnusableImageError, match="not a JPEG, PNG, BMP or WebP"):
        read_size(tmp_path / "x.jpg")
    with pytest.raises(UnusableImageError, match="cannot read"):
        read_size(tmp_path / "missing.png")


def test_enrolment_decodes_into_secure_memory(tmp_path: Path) -> None:
    from lfr.enrolment import load_image
    from lfr.secure import SecureBuffer

    assert cv2.imwrite(str(tmp_path / "a.png"), still(5))
    image, buffer = load_image(tmp_path / "a.png")
    assert isinstance(image, np.ndarray)
    assert isinstance(buffer, SecureBuffer)
    assert np.array_equal(image, still(5))
    assert image.ctypes.data == buffer.address
    del image
    buffer.discard()
    assert buffer.closed

    png_bomb(tmp_path / "bomb.png", 8000, 8000)
    reason, none = load_image(tmp_path / "bomb.png")
    assert none is None
    assert isinstance(reason, str)
    assert "too large: 8000x8000" in reason


@pytest.mark.data
def test_a_folder_deployment_goes_on_past_bad_stills_and_counts_them(
    tmp_path: Path, yunet_path: Path, embedder_path: Path
) -> None:
    import lfr
    from lfr.pipeline import Deployment

    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(folder / f"img_{i}.png"), still(i, 120, 160))
    png_bomb(folder / "img_0_bomb.png", 8000, 8000)
    assert cv2.imwrite(
        str(folder / "img_1_wide.png"), np.zeros((1, 17000, 3), np.uint8)
    )
    (folder / "img_2_broken.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    embedder = lfr.FaceEmbedder()
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), embedder=embedder
    )
    wl.add(
        "R-0", np.random.default_rng(0).standard_normal((1, embedder.dim), np.float32)
    )
    dep = Deployment(
        source=folder,
        watchlist=wl,
        store=lfr.AlertStore(tmp_path / "a.db", lfr.Key.generate()),
        audit=tmp_path / "audit.log",
        signing_key=lfr.SigningKey.generate(),
        detector=lfr.FaceDetector(),
        embedder=embedder,
    )
    with dep:
        assert dep.wait(50)
        stats = dep.stats()
    assert dep.error is None
    assert (stats.frames, stats.unreadable) == (3, 3)
