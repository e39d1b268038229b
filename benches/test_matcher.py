"""Matcher benchmarks: lfr (f32, f16, i8) against numpy and FAISS IndexFlatIP.

Every result records its floor, max(bytes scanned / read bandwidth, arithmetic / peak),
measured on this machine in the same run (benches/conftest.py).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import lfr
from benches.conftest import F32, Limits, OneSlotCache, unit_rows

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import faiss

SIZES = [1_000, 10_000, 100_000, 1_000_000]
DIMS = [128, 512]
BATCHES = [1, 8, 32]
THREADS = [1, 2]
IMPLS = ["lfr-f32", "lfr-f16", "lfr-i8", "numpy", "faiss"]
BYTES_PER_VALUE = {"lfr-f16": 2, "lfr-i8": 1}

_data = OneSlotCache()
_index = OneSlotCache()


def _params() -> list[Any]:
    # Nested so that one watchlist and one index are alive at a time.
    return [
        pytest.param(n, d, impl, t, b, id=f"{impl}-N{n}-d{d}-b{b}-t{t}")
        for n in SIZES
        for d in DIMS
        for impl in IMPLS
        for t in THREADS
        for b in BATCHES
    ]


def _searcher(impl: str, x: F32, threads: int) -> Callable[[F32], Any]:
    n, dim = x.shape
    if impl.startswith("lfr-"):
        m = lfr.Matcher(dim, impl[4:], threads=threads)  # type: ignore[arg-type]
        m.add(np.arange(n, dtype=np.int64), x)
        return lambda q: m.search(q, 1)
    if impl == "faiss":
        index = faiss.IndexFlatIP(dim)
        index.add(x)

        def faiss_search(q: F32) -> Any:
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            return index.search(qn, 1)

        return faiss_search

    def numpy_search(q: F32) -> Any:
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        s = qn @ x.T
        best = s.argmax(axis=1)
        return best, s[np.arange(len(q)), best]

    return numpy_search


def _run(benchmark: Any, fn: Callable[[], Any]) -> None:
    """Enough rounds for a stable median without spending minutes on big cases."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    iterations = max(1, int(2e-3 / once))
    rounds = int(min(200, max(7, 0.6 / (once * iterations))))
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)


@pytest.mark.parametrize(("n", "dim", "impl", "threads", "b"), _params())
def test_search(
    benchmark: Any,
    machine_limits: Limits,
    n: int,
    dim: int,
    impl: str,
    threads: int,
    b: int,
) -> None:
    x = _data.get((n, dim), lambda: unit_rows(n, dim, seed=n + dim))
    search = _index.get((n, dim, impl, threads), lambda: _searcher(impl, x, threads))
    queries = unit_rows(b, dim, seed=7)
    nbytes = n * dim * BYTES_PER_VALUE.get(impl, 4)
    ops = 2.0 * n * dim * b
    arith = "i8" if impl == "lfr-i8" else "f32"
    benchmark.group = f"N={n} dim={dim} b={b} threads={threads}"
    benchmark.extra_info.update(
        n=n,
        dim=dim,
        b=b,
        threads=threads,
        impl=impl,
        bytes=nbytes,
        ops=ops,
        floor=machine_limits.floor(nbytes, ops, threads, arith),
    )
    # Thread limits are set outside the timed calls (threadpoolctl is slow to enter).
    faiss.omp_set_num_threads(threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        _run(benchmark, lambda: search(queries))
