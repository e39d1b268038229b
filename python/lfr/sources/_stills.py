"""Still images: their size read from the header, bounded, then decoded in place.

A still is decoded only after its header has been read here (a few bytes, no
decoder involved) and its size checked against :data:`MAX_STILL_PIXELS` and
:data:`~lfr.align.MAX_FRAME_SIDE`: a tiny file that declares 8000x8000 pixels is
refused before any pixel memory exists. Then ``cv2.imread(path, dst, flags)``
decodes it straight into a secure buffer, and the result is checked to *be* that
buffer.

OpenCV's own bound, ``OPENCV_IO_MAX_IMAGE_PIXELS``, backs this up for every decode
in the process: ``import lfr`` sets it (unless the operator did) before anything
imports OpenCV, which reads it once, when it loads.

Two cases do not land in place, and are handled so that the decoded pixels still end
up only in the buffer:

* A JPEG whose EXIF orientation turns it by 90 degrees: OpenCV decodes into the
  buffer, then transposes into an array of its own. That array is copied into the
  buffer (same byte count) and zeroed at once.
* A decode that fails quietly: with a destination, ``imread`` returns it untouched
  for some damaged files. A random 16-byte sentinel written at both ends of the
  destination first, and still there afterwards, tells (up to a 2^-128 chance, less
  for images under 6 pixels) that nothing was decoded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import numpy.typing as npt

from lfr.align import MAX_FRAME_SIDE
from lfr.errors import SourceError
from lfr.secure import SecureBuffer

__all__ = [
    "DEFAULT_MAX_STILL_PIXELS",
    "MAX_STILL_PIXELS",
    "UnusableImageError",
    "decode_into",
    "read_size",
]

#: The default bound on a still's pixels (32 Mi, e.g. 8192x4096: a 24 MP camera
#: fits; decoded it takes 96 MiB). ``import lfr`` gives it to OpenCV as
#: ``OPENCV_IO_MAX_IMAGE_PIXELS`` unless the operator set that variable.
DEFAULT_MAX_STILL_PIXELS = 1 << 25

_SENTINEL = 16
_JPEG_SEGMENTS = 4096  # a real JPEG has tens before its frame header
# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _bound() -> int:
    raw = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MAX_STILL_PIXELS
    return value if value > 0 else DEFAULT_MAX_STILL_PIXELS


#: The most pixels a still may have: ``OPENCV_IO_MAX_IMAGE_PIXELS`` as OpenCV read
#: it (an integer), else :data:`DEFAULT_MAX_STILL_PIXELS`.
MAX_STILL_PIXELS = _bound()


class UnusableImageError(SourceError):
    """A still that is not decoded: unreadable, not an image, damaged or too large.

    ``reason`` says why in words that name no pixel (sizes and formats only).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_size(path: Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Reads a JPEG, PNG, BMP or WebP header; returns the image's ``(h, w)``.

    Only the header is read (the JPEG segments before its frame header at most),
    so a declared size is known, and bounded, before any decoder runs.

    Args:
        path: The image file (its content decides the format, not its name).
        max_pixels: The most pixels accepted; default :data:`MAX_STILL_PIXELS`.

    Returns:
        ``(height, width)`` as the file declares them.

    Raises:
        UnusableImageError: The file cannot be read, is no JPEG, PNG, BMP or WebP, its
            header is damaged, or it declares more than ``max_pixels`` pixels or
            more than :data:`~lfr.align.MAX_FRAME_SIDE` on a side.
    """
    try:
        with open(path, "rb") as f:
            h, w = _header_size(f)
    except OSError as exc:
        raise UnusableImageError(
            f"cannot read it: {exc.strerror or type(exc).__name__}"
        ) from None
    bound = MAX_STILL_PIXELS if max_pixels is None else max_pixels
    if h < 1 or w < 1:
        raise UnusableImageError(f"declares an empty image ({w}x{h} px)")
    if max(h, w) > MAX_FRAME_SIDE:
        raise UnusableImageError(
            f"too large: {w}x{h} px exceeds {MAX_FRAME_SIDE} px on a side"
        )
    if h * w > bound:
        raise UnusableImageError(
            f"too large: {w}x{h} px exceeds the bound of {bound} pixels "
            "(OPENCV_IO_MAX_IMAGE_PIXELS)"
        )
    return h, w


def decode_into(
    path: Path, buffer: SecureBuffer, shape: tuple[int, int]
) -> tuple[int, int]:
    """Decodes a still straight into ``buffer`` as ``uint8[h, w, 3]`` BGR.

    Args:
        path: The image file, whose header said ``shape`` (:func:`read_size`).
        buffer: A wiped secure buffer of at least ``h * w * 3`` bytes.
        shape: ``(h, w)`` from :func:`read_size`.

    Returns:
        The decoded ``(h, w)``: ``shape``, or ``(w, h)`` when EXIF orientation
        turned the image (OpenCV's turned copy was copied into ``buffer`` and
        zeroed).

    Raises:
        UnusableImageError: The file does not decode, or decodes to another size than
            its header declared (changed meanwhile). ``buffer`` may hold part of a
            decode: the caller wipes it (releasing it to its pool does).
    """
    h, w = shape
    view = buffer.array(np.uint8, (h, w, 3))
    flat = view.reshape(-1)
    n = min(_SENTINEL, flat.size)
    head = np.frombuffer(os.urandom(n), np.uint8)
    tail = np.frombuffer(os.urandom(n), np.uint8)
    flat[:n] = head
    flat[-n:] = tail
    try:
        result = cv2.imread(os.fspath(path), view, cv2.IMREAD_COLOR)
    except cv2.error:
        raise UnusableImageError(
            "not decodable (damaged, or changed since its header was read)"
        ) from None
    try:
        if result is None or not isinstance(result, np.ndarray) or result.size == 0:
            raise UnusableImageError("not decodable (damaged data)")
        if result.ctypes.data == view.ctypes.data and result.shape == view.shape:
            if np.array_equal(flat[:n], head) or np.array_equal(flat[-n:], tail):
                raise UnusableImageError("not decodable (the decoder wrote nothing)")
            return h, w
        return _turned(result, buffer, view.size)
    finally:
        del result, view, flat


def _turned(
    result: npt.NDArray[Any], buffer: SecureBuffer, nbytes: int
) -> tuple[int, int]:
    """Copies OpenCV's own (EXIF-turned) array into ``buffer``; zeroes it."""
    try:
        if (
            result.dtype != np.uint8
            or result.ndim != 3
            or result.shape[2] != 3
            or result.size != nbytes
        ):
            raise UnusableImageError(
                "decoded to another size than its header declared (changed meanwhile)"
            )
        h, w = int(result.shape[0]), int(result.shape[1])
        target = buffer.array(np.uint8, (h, w, 3))
        np.copyto(target, result)
        del target
        return h, w
    finally:
        np.asarray(result).fill(0)


def _header_size(f: BinaryIO) -> tuple[int, int]:
    head = f.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise UnusableImageError("not decodable (PNG without a header chunk)")
        w, h = struct.unpack(">II", head[16:24])
        return h, w
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(f)
    if head.startswith(b"BM") and len(head) >= 26:
        (dib,) = struct.unpack("<I", head[14:18])
        if dib == 12:  # OS/2 BITMAPCOREHEADER
            w, h = struct.unpack("<HH", head[18:22])
            return h, w
        w, h = struct.unpack("<ii", head[18:26])
        return abs(h), w
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    raise UnusableImageError("not a JPEG, PNG, BMP or WebP image")


def _webp_size(head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        (bits,) = struct.unpack("<I", head[21:25])
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return h, w
    raise UnusableImageError("not decodable (WebP without a known frame header)")


def _jpeg_size(f: BinaryIO) -> tuple[int, int]:
    f.seek(2)
    for _ in range(_JPEG_SEGMENTS):
        byte = f.read(1)
        if byte != b"\xff":
            break
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            break
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # standalone markers
            continue
        if m in (0xD9, 0xDA):  # end of image, or scan data before a frame header
            break
        raw = f.read(2)
        if len(raw) < 2:
            break
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            break
        if m in _SOF:
            body = f.read(5)
            if len(body) < 5:
                break
            h, w = struct.unpack(">HH", body[1:5])
            return h, w
        f.seek(length - 2, os.SEEK_CUR)
    raise UnusableImageError("not decodable (JPEG without a frame header)")
