"""A scan of a process's memory for 32-byte keys known only in masked form.

``lfr._core.scan_memory`` looks for 64-byte runs; a data key is 32 bytes, so the key
tests use this scanner. The caller holds each key only XOR-masked with a random
32-byte mask (:func:`mask_key`); no 32-byte plaintext copy of a key is ever made by
the test or the scan, so neither can find itself:

* the prefilter compares memory, 8 bytes at a time at every byte offset, with the
  first 8 bytes of each key (an 8-byte value, which cannot match a 32-byte window);
* a candidate is confirmed in the masked domain (``memory ^ mask == masked key``).

Memory is read through ``/proc/PID/mem`` into one reused buffer that is zeroed after
every chunk, so a key found once is not found again in the scanner's own buffer.
Scanning another process (the key tests do) leaves its heap untouched by the scan:
freed Python objects are not reused before they are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

KEY = 32
_CHUNK = 1 << 20
_OVERLAP = KEY - 1
# Kernel pseudo-mappings that /proc/self/mem refuses or that hold no user data.
_SKIP = ("[vvar]", "[vvar_vclock]", "[vsyscall]")

U64 = npt.NDArray[np.uint64]


@dataclass
class Scan:
    """What one scan covered and found."""

    hits: list[tuple[int, int, str]] = field(default_factory=list)  # key, addr, map
    scanned: int = 0
    unreadable: int = 0
    regions: int = 0

    def found(self, key: int) -> int:
        """How many places hold key number ``key``."""
        return sum(1 for k, _, _ in self.hits if k == key)


def new_mask() -> U64:
    """A random 32-byte mask, as four little-endian 64-bit words."""
    return np.frombuffer(os.urandom(KEY), "<u8").copy()


def mask_key(plain: Any, mask: U64) -> U64:
    """``plain`` (a 32-byte buffer, e.g. a secure buffer) XOR ``mask``.

    Computed word by word into a new array: no plaintext copy is made.
    """
    words = np.asarray(plain).reshape(-1).view(np.uint8)[:KEY].view("<u8")
    out = np.empty(KEY // 8, "<u8")
    np.bitwise_xor(words, mask, out=out)
    del words
    return out


def _regions(pid: int | str) -> list[tuple[int, int, str]]:
    out = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if fields[1][0] != "r":
                continue
            name = fields[5].strip() if len(fields) > 5 else ""
            if name in _SKIP:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, name))
    return out


def scan_for_keys(masked: list[U64], mask: U64, pid: int | str = "self") -> Scan:
    """Every place in a process's readable memory that holds one of the keys."""
    buf = np.zeros(_CHUNK + _OVERLAP, np.uint8)
    whole = buf.data
    refs = np.stack(masked) if masked else np.zeros((0, 4), "<u8")
    report = Scan()
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end, name in _regions(pid):
            report.regions += 1
            pos = start
            while pos < end:
                want = min(end - pos, buf.size)
                try:
                    got = os.preadv(fd, [whole[:want]], pos)
                except OSError:
                    got = 0
                if got <= 0:
                    report.unreadable += end - pos
                    break
                _search(buf, got, refs, mask, pos, name, report)
                buf.fill(0)
                report.scanned += got
                if pos + got >= end or got < KEY:
                    pos += got
                else:
                    pos += got - _OVERLAP
    finally:
        os.close(fd)
    seen = set()
    unique = []
    for hit in sorted(report.hits, key=lambda h: (h[1], h[0])):
        if hit[:2] not in seen:
            seen.add(hit[:2])
            unique.append(hit)
    report.hits = unique
    return report


def _search(
    buf: npt.NDArray[np.uint8],
    got: int,
    refs: U64,
    mask: U64,
    base: int,
    name: str,
    report: Scan,
) -> None:
    for key in range(len(refs)):
        # The key's first 8 bytes only, as an integer: never 32 contiguous bytes.
        first = int(refs[key, 0]) ^ int(mask[0])
        for align in range(8):
            words = (got - align) // 8
            if words <= 0:
                continue
            view = buf[align : align + 8 * words].view("<u8")
            for index in np.flatnonzero(view == np.uint64(first)):
                at = align + 8 * int(index)
                if at + KEY > got:
                    continue
                window = buf[at : at + KEY].view("<u8") ^ mask  # masked domain
                if np.array_equal(window, refs[key]):
                    report.hits.append((key, base + at, name))
