"""The Matcher's public contract: shapes, errors, and failed calls changing nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import lfr
from tests.reference import check_search, scores

ALL_KERNELS = ["scalar", "avx2", "avx512", "neon"]


def _matcher(dtype: str = "f32") -> tuple[lfr.Matcher, np.ndarray]:
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((10, 8), dtype=np.float32)
    m = lfr.Matcher(8, dtype)  # type: ignore[arg-type]
    m.add(np.arange(100, 110), vecs)
    return m, vecs


def _snapshot(m: lfr.Matcher) -> tuple[int, list[list[int]], list[list[float]]]:
    probe = np.eye(8, dtype=np.float32)
    ids, got = m.search(probe, k=len(m) + 1)
    return len(m), ids.tolist(), got.tolist()


def test_search_shapes_and_padding() -> None:
    m, vecs = _matcher()
    ids, got = m.search(vecs[:3], k=12)
    assert ids.dtype == np.int64
    assert got.dtype == np.float32
    assert ids.shape == got.shape == (3, 12)
    assert ids[:, 0].tolist() == [100, 101, 102]
    np.testing.assert_allclose(got[:, 0], 1.0, atol=1e-6)
    assert np.all(ids[:, 10:] == -1)
    assert np.all(np.isneginf(got[:, 10:]))


def test_empty_matcher_and_empty_queries() -> None:
    m = lfr.Matcher(4)
    ids, got = m.search(np.ones((2, 4), np.float32), k=2)
    assert ids.tolist() == [[-1, -1], [-1, -1]]
    assert np.all(np.isneginf(got))
    ids, got = m.search(np.ones((0, 4), np.float32), k=3)
    assert ids.shape == (0, 3)


def test_vectors_are_normalised() -> None:
    m = lfr.Matcher(2)
    m.add([1, 2], np.array([[10.0, 0.0], [0.0, 0.001]], np.float32))
    ids, got = m.search(np.array([[3.0, 4.0]], np.float32), k=2)
    assert ids.tolist() == [[2, 1]]
    np.testing.assert_allclose(got, [[0.8, 0.6]], atol=1e-6)


def test_len_contains_and_repr() -> None:
    m, _ = _matcher()
    assert len(m) == 10
    assert 105 in m
    assert np.int64(105) in m
    assert 5 not in m
    assert "105" not in m
    assert 2**70 not in m
    assert repr(m).startswith("Matcher(dim=8, dtype='f32', size=10")


def test_remove_then_search() -> None:
    m, vecs = _matcher()
    m.remove([100, 109])
    assert len(m) == 8
    assert 100 not in m
    ids, _ = m.search(vecs[:1], k=10)
    assert 100 not in ids
    assert ids[0, -2:].tolist() == [-1, -1]


BAD_ADDS: list[
    tuple[str, Callable[[np.ndarray], tuple[Any, Any]], type[Exception], str]
] = [
    (
        "nan",
        lambda v: ([1, 2], np.where(np.arange(16).reshape(2, 8) == 9, np.nan, v[:2])),
        ValueError,
        "NaN or infinity",
    ),
    (
        "inf",
        lambda v: ([1, 2], np.where(np.arange(16).reshape(2, 8) == 3, np.inf, v[:2])),
        ValueError,
        "NaN or infinity",
    ),
    (
        "zero",
        lambda v: ([1, 2], np.vstack([v[0], np.zeros(8)])),
        ValueError,
        "zero vector",
    ),
    ("float64", lambda v: ([1, 2], v[:2].astype(np.float64)), TypeError, "float32"),
    ("list", lambda v: ([1, 2], v[:2].tolist()), TypeError, "numpy array"),
    ("dim", lambda v: ([1, 2], v[:2, :7]), ValueError, "dimension 7"),
    ("1d", lambda v: ([1], v[0]), ValueError, "2-D"),
    ("3d", lambda v: ([1], v[None, :1]), ValueError, "2-D"),
    ("count", lambda v: ([1, 2, 3], v[:2]), ValueError, "rows of vectors"),
    ("dup-batch", lambda v: ([1, 1], v[:2]), ValueError, "more than once"),
    ("present", lambda v: ([1, 103], v[:2]), ValueError, "already in the matcher"),
    ("reserved", lambda v: ([1, -1], v[:2]), ValueError, "reserved"),
    ("float-ids", lambda v: ([1.0, 2.0], v[:2]), TypeError, "integers"),
    ("2d-ids", lambda v: ([[1, 2]], v[:2]), ValueError, "1-D"),
    (
        "huge-id",
        lambda v: (np.array([2**64 - 1, 1], np.uint64), v[:2]),
        ValueError,
        "int64",
    ),
]


@pytest.mark.parametrize("dtype", ["f32", "i8"])
@pytest.mark.parametrize(
    ("name", "make", "error", "message"), BAD_ADDS, ids=[b[0] for b in BAD_ADDS]
)
def test_bad_add_raises_and_changes_nothing(
    dtype: str,
    name: str,
    make: Callable[[np.ndarray], tuple[Any, Any]],
    error: type[Exception],
    message: str,
) -> None:
    m, vecs = _matcher(dtype)
    before = _snapshot(m)
    ids, bad = make(vecs)
    if isinstance(bad, np.ndarray) and bad.dtype == np.float64 and name != "float64":
        bad = bad.astype(np.float32)
    with pytest.raises(error, match=message):
        m.add(ids, bad)
    assert _snapshot(m) == before


@pytest.mark.parametrize(
    ("ids", "error"),
    [([100, 5], KeyError), ([101, 101], ValueError), ([1.5], TypeError)],
)
def test_bad_remove_raises_and_changes_nothing(
    ids: list[Any], error: type[Exception]
) -> None:
    m, _ = _matcher()
    before = _snapshot(m)
    with pytest.raises(error):
        m.remove(ids)
    assert _snapshot(m) == before


@pytest.mark.parametrize(
    ("queries", "k", "error", "message"),
    [
        (np.full((1, 8), np.nan, np.float32), 1, ValueError, "query 0"),
        (np.zeros((2, 8), np.float32), 1, ValueError, "zero vector"),
        (np.ones((1, 8), np.float64), 1, TypeError, "float32"),
        (np.ones(8, np.float32), 1, ValueError, r"x\[None, :\]"),
        (np.ones((1, 9), np.float32), 1, ValueError, "dimension 9"),
        (np.ones((1, 8), np.float32), 0, ValueError, "positive"),
        (np.ones((1, 8), np.float32), True, ValueError, "positive"),
    ],
)
def test_bad_search_raises(
    queries: np.ndarray, k: int, error: type[Exception], message: str
) -> None:
    m, _ = _matcher()
    with pytest.raises(error, match=message):
        m.search(queries, k)


def test_errors_and_repr_carry_no_vector_values() -> None:
    m = lfr.Matcher(4)
    secret = np.array([[0.123456789, 0.987654321, np.nan, 0.5]], np.float32)
    with pytest.raises(ValueError, match="NaN") as info:
        m.add([1], secret)
    text = str(info.value) + repr(m)
    assert "0.1234" not in text
    assert "0.9876" not in text


def test_non_contiguous_inputs_are_accepted() -> None:
    rng = np.random.default_rng(2)
    big = rng.standard_normal((20, 16), dtype=np.float32)
    m = lfr.Matcher(8)
    m.add(np.arange(10)[::-1], big[::2, ::2])
    ids, got = m.search(big[:4, 1::2], k=3)
    check_search(
        ids,
        got,
        np.arange(10)[::-1],
        scores(big[::2, ::2], big[:4, 1::2], "f32"),
        3,
        1e-5,
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"dim": 0}, ValueError),
        ({"dim": "8"}, TypeError),
        ({"dim": 8, "dtype": "f64"}, ValueError),
        ({"dim": 8, "threads": 0}, ValueError),
        ({"dim": 8, "kernel": "sse9"}, ValueError),
    ],
)
def test_bad_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        lfr.Matcher(**kwargs)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_each_kernel_forced_explicitly(kernel: str, dtype: str) -> None:
    if kernel not in lfr.available_kernels():
        with pytest.raises(RuntimeError, match="not available"):
            lfr.Matcher(8, kernel=kernel)
        pytest.skip(f"kernel {kernel} is not available on this CPU")
    rng = np.random.default_rng(3)
    db = rng.standard_normal((300, 64), dtype=np.float32)
    queries = rng.standard_normal((13, 64), dtype=np.float32)
    m = lfr.Matcher(64, dtype, kernel=kernel, rerank=False)  # type: ignore[arg-type]
    assert m.kernel == kernel
    m.add(np.arange(300), db)
    ids, got = m.search(queries, 4)
    check_search(ids, got, np.arange(300), scores(db, queries, dtype), 4, 1e-5)


def test_default_kernel_is_the_best_available() -> None:
    assert lfr.Matcher(8).kernel == lfr.available_kernels()[-1]


def test_concurrent_searches_and_writes() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((5000, 64), dtype=np.float32)
    queries = base[:16] + 0.01 * rng.standard_normal((16, 64), dtype=np.float32)
    m = lfr.Matcher(64, threads=2)
    m.add(np.arange(5000), base)
    expected = m.search(queries, 1)[0]
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            ids, _ = m.search(queries, 1)
            if not np.array_equal(ids, expected):
                failures.append("a concurrent search returned a different top-1")

    def writer() -> None:
        # Entries pointing away from every query never become a top-1.
        away = -np.abs(base[:200]) - 1.0
        for round_ in range(30):
            ids = np.arange(10_000 + round_ * 200, 10_200 + round_ * 200)
            m.add(ids, away.astype(np.float32))
            m.remove(ids)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    writer()
    stop.set()
    for t in readers:
        t.join()
    assert failures == []
    assert len(m) == 5000


def test_search_releases_the_gil() -> None:
    rng = np.random.default_rng(6)
    m = lfr.Matcher(128, threads=1)
    m.add(np.arange(300_000), rng.standard_normal((300_000, 128), dtype=np.float32))
    queries = rng.standard_normal((32, 128), dtype=np.float32)
    window: list[float] = []

    def search() -> None:
        start = time.perf_counter()
        m.search(queries, 1)
        window.extend([start, time.perf_counter()])

    ticks: list[float] = []
    worker = threading.Thread(target=search)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = window
    inside = [t for t in ticks if start < t < end]
    # With the GIL held for the whole call, this thread could not run inside it.
    assert len(inside) > 100, f"{len(inside)} ticks during a {end - start:.3f}s search"
