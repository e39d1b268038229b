"""Key files read and written without a copy of the secret outside secure memory.

A key file is small text: a tag and the key in base64 (``lfr-key-v1:...``) or a PEM
block. Python's ordinary tools leave copies of such text behind that are never
wiped: a buffered reader's internal buffer, every ``bytes`` made by ``strip``,
``partition`` or slicing, and the ``bytes`` that :mod:`base64` returns. Here instead:

* :func:`read_secret` reads the file with one unbuffered ``readinto`` straight into a
  :class:`~lfr.secure.SecureBuffer` (size-bounded: a key file is small);
* :func:`b64decode_into` and :func:`b64encode_into` convert between base64 text and
  bytes with numpy, every intermediate (sextets, table indices) written with
  ``out=`` into a secure scratch buffer, never into a numpy temporary;
* the caller writes the file from a secure buffer with :func:`lfr._files.write_file`
  (``os.write`` of a view).

The decoder is strict: only the standard alphabet, a length that is a multiple of 4,
at most two ``=`` and only at the end, and zero padding bits. It accepts a subset of
what ``base64.b64decode(text, validate=True)`` accepts and returns the same bytes
(``tests/property/test_keyfile_props.py``). Its errors never contain the text.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr.errors import KeyFileError
from lfr.secure import SecureBuffer

__all__ = [
    "SecretText",
    "b64decode_into",
    "b64decoded_size",
    "b64encode_into",
    "read_secret",
    "strip_span",
]

U8 = npt.NDArray[np.uint8]

_ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8
)
#: Byte -> sextet; 0xFF for every byte outside the alphabet ('=' included).
_DECODE = np.full(256, 0xFF, np.uint8)
_DECODE[_ALPHABET] = np.arange(64, dtype=np.uint8)
_PAD = ord("=")
#: What ``bytes.strip()`` removes.
_WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")


@dataclass
class SecretText:
    """A small file's bytes in secure memory: ``buf``'s first ``size`` bytes."""

    buf: SecureBuffer
    size: int
    mode: int

    def text(self) -> U8:
        """A view of the file's bytes (release it before :meth:`discard`)."""
        return self.buf.array(np.uint8, (self.size,))

    def discard(self) -> None:
        """Wipes and frees the buffer."""
        self.buf.discard()


def read_secret(path: Path, limit: int) -> SecretText:
    """Reads a small secret file into secure memory, without any other copy.

    The file is opened unbuffered and read with ``readinto`` into a
    :class:`SecureBuffer` of ``limit + 1`` bytes, so a file longer than ``limit``
    is refused even if it grows while it is read.

    Raises:
        KeyFileError: It cannot be read, or holds more than ``limit`` bytes.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            info = os.fstat(f.fileno())
            if info.st_size > limit:
                raise KeyFileError(_too_large(path, limit))
            buf = SecureBuffer(limit + 1, allow_unlocked=True)
            try:
                size = _read_all(f, buf, limit + 1)
            except BaseException:
                buf.discard()
                raise
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if size > limit:
        buf.discard()
        raise KeyFileError(_too_large(path, limit))
    return SecretText(buf, size, stat.S_IMODE(info.st_mode))


def _too_large(path: Path, limit: int) -> str:
    return f"{path} is larger than a key file can be ({limit} bytes at most)"


def _read_all(f: Any, buf: SecureBuffer, want: int) -> int:
    view = buf.memoryview()[:want]
    try:
        got = 0
        while got < want:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        return got
    finally:
        view.release()


def strip_span(text: U8, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """The span of ``text[start:end]`` without leading and trailing whitespace.

    Like ``bytes.strip()``, but returns indices instead of a copy.
    """
    end = text.size if end is None else end
    while start < end and int(text[start]) in _WHITESPACE:
        start += 1
    while end > start and int(text[end - 1]) in _WHITESPACE:
        end -= 1
    return start, end


def b64decoded_size(text: U8) -> int:
    """How many bytes the base64 ``text`` decodes to.

    Raises:
        ValueError: The length is not a multiple of 4 (no key material in the
            message).
    """
    n = text.size
    if n % 4:
        raise ValueError("base64 text must have a multiple of 4 characters")
    pad = 0
    while pad < min(2, n) and int(text[n - 1 - pad]) == _PAD:
        pad += 1
    return n // 4 * 3 - pad


def b64decode_into(text: U8, out: U8) -> None:
    """Decodes the base64 ``text`` into ``out`` (strictly; see the module notes).

    ``out`` must have exactly :func:`b64decoded_size` bytes. Every intermediate
    value lives in a secure scratch buffer that is wiped before this returns.

    Raises:
        ValueError: ``text`` is not valid base64 or ``out`` has the wrong size
            (no key material in the message).
    """
    size = b64decoded_size(text)
    if out.size != size or out.dtype != np.uint8:
        raise ValueError(f"the decoded base64 has {size} bytes, not {out.size}")
    n = text.size
    groups = n // 4
    pad = groups * 3 - size
    if n == 0:
        return
    # intp table indices (n * 8 bytes), then sextets (n), then whole groups (3 per
    # group), then one byte per group of scratch.
    with SecureBuffer(n * 8 + n + 4 * groups, allow_unlocked=True) as scratch:
        error = _decode(scratch, text, out, n, groups, pad)
    if error:
        raise ValueError(error)


def _decode(
    scratch: SecureBuffer, text: U8, out: U8, n: int, groups: int, pad: int
) -> str:
    whole = scratch.array(np.uint8)
    index = whole[: n * 8].view(np.intp)
    sextets = whole[n * 8 : n * 9]
    decoded = whole[n * 9 : n * 9 + 3 * groups].reshape(groups, 3)
    tmp = whole[n * 9 + 3 * groups : n * 9 + 4 * groups]
    # Table indices already intp and contiguous (so np.take makes no copy of them),
    # and mode="clip" (so np.take does not buffer its output).
    np.copyto(index, text, casting="unsafe")
    np.take(_DECODE, index, out=sextets, mode="clip")
    sextets[n - pad :] = 0  # the padding ('=' decodes as invalid above)
    if int(sextets.max()) > 63:
        return "base64 text holds a character outside the base64 alphabet"
    s = sextets.reshape(groups, 4)
    if (pad == 2 and int(s[-1, 1]) & 0x0F) or (pad == 1 and int(s[-1, 2]) & 0x03):
        return "base64 text has non-zero padding bits"
    np.left_shift(s[:, 0], 2, out=decoded[:, 0])
    np.right_shift(s[:, 1], 4, out=tmp)
    np.bitwise_or(decoded[:, 0], tmp, out=decoded[:, 0])
    np.left_shift(s[:, 1], 4, out=decoded[:, 1])
    np.right_shift(s[:, 2], 2, out=tmp)
    np.bitwise_or(decoded[:, 1], tmp, out=decoded[:, 1])
    np.left_shift(s[:, 2], 6, out=decoded[:, 2])
    np.bitwise_or(decoded[:, 2], s[:, 3], out=decoded[:, 2])
    np.copyto(out, decoded.reshape(-1)[: out.size])
    return ""


def b64encode_into(data: U8, out: U8) -> None:
    """Encodes ``data`` as base64 (with ``=`` padding) into ``out``.

    ``out`` must have exactly ``4 * ceil(len(data) / 3)`` bytes. Every
    intermediate value lives in a secure scratch buffer wiped before this returns.

    Raises:
        ValueError: ``out`` has the wrong size.
    """
    size = data.size
    groups = -(-size // 3)
    n = 4 * groups
    if out.size != n or out.dtype != np.uint8:
        raise ValueError(f"base64 of {size} bytes has {n} characters, not {out.size}")
    if size == 0:
        return
    with SecureBuffer(n * 8 + n + 3 * groups, allow_unlocked=True) as scratch:
        _encode(scratch, data, out, size, groups)


def _encode(scratch: SecureBuffer, data: U8, out: U8, size: int, groups: int) -> None:
    n = 4 * groups
    whole = scratch.array(np.uint8)
    index = whole[: n * 8].view(np.intp)
    sextets = whole[n * 8 : n * 9].reshape(groups, 4)
    padded = whole[n * 9 : n * 9 + 3 * groups]
    padded[size:] = 0
    np.copyto(padded[:size], data)
    b = padded.reshape(groups, 3)
    np.right_shift(b[:, 0], 2, out=sextets[:, 0])
    np.left_shift(b[:, 0], 4, out=sextets[:, 1])
    np.bitwise_and(sextets[:, 1], 0x30, out=sextets[:, 1])
    np.right_shift(b[:, 1], 4, out=sextets[:, 2])  # sextets[:, 2] as scratch
    np.bitwise_or(sextets[:, 1], sextets[:, 2], out=sextets[:, 1])
    np.left_shift(b[:, 1], 2, out=sextets[:, 2])
    np.bitwise_and(sextets[:, 2], 0x3C, out=sextets[:, 2])
    np.right_shift(b[:, 2], 6, out=sextets[:, 3])  # sextets[:, 3] as scratch
    np.bitwise_or(sextets[:, 2], sextets[:, 3], out=sextets[:, 2])
    np.bitwise_and(b[:, 2], 0x3F, out=sextets[:, 3])
    np.copyto(index, sextets.reshape(-1), casting="unsafe")
    np.take(_ALPHABET, index, out=out, mode="clip")
    tail = groups * 3 - size
    if tail:
        out[n - tail :] = _PAD
