"""Secure memory: wipe time by buffer size, and pool acquire/release overhead.

Baselines in the same run: ``ndarray.fill(0)`` on the same memory (a plain memset,
which a compiler may drop for memory that is about to be freed; ``wipe`` cannot be
dropped), and allocating a fresh SecureBuffer per use instead of pooling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import lfr

CASES = {
    "chip 112x112x3": 112 * 112 * 3,
    "chip 150x150x3": 150 * 150 * 3,
    "frame 1920x1080x3": 1920 * 1080 * 3,
    "embedding 512 x f32": 512 * 4,
}

Benchmark = Any


def _run(benchmark: Benchmark, fn: Callable[[], object], **info: object) -> None:
    benchmark.extra_info.update(info)
    benchmark(fn)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("how", ["wipe", "memset"])
def test_wipe(benchmark: Benchmark, case: str, how: str) -> None:
    nbytes = CASES[case]
    benchmark.group = f"wipe {case}"
    with lfr.SecureBuffer(nbytes) as buf:
        view = buf.array()
        view[:] = 0xA5
        fn = buf.wipe if how == "wipe" else (lambda: view.fill(0))
        _run(benchmark, fn, op="wipe", case=case, nbytes=nbytes, impl=how)
        # Leaving the block wipes the buffer; it is freed with the view.


@pytest.mark.parametrize("case", ["chip 150x150x3", "embedding 512 x f32"])
@pytest.mark.parametrize("how", ["pool", "lease", "allocate"])
def test_pool(benchmark: Benchmark, case: str, how: str) -> None:
    nbytes = CASES[case]
    benchmark.group = f"pool {case}"
    with lfr.SecurePool(nbytes, capacity=4) as pool:

        def acquire_release() -> None:
            pool.release(pool.acquire())

        def lease() -> None:
            with pool.lease():
                pass

        def allocate() -> None:
            lfr.SecureBuffer(nbytes).close()

        fn = {"pool": acquire_release, "lease": lease, "allocate": allocate}[how]
        _run(benchmark, fn, op="pool", case=case, nbytes=nbytes, impl=how)
