"""Property tests: every kernel and dtype against the numpy reference, and add/remove
sequences against a model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import lfr
from tests.reference import check_search, scores

KERNELS = lfr.available_kernels()
TOLERANCE = {"f32": 1e-5, "f16": 1e-5, "i8": 1e-5}

finite = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)


@st.composite
def problems(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray, int]:
    dim = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 64, 128]))
    n = draw(st.integers(0, 70))
    b = draw(st.integers(1, 11))
    db = draw(hnp.arrays(np.float32, (n, dim), elements=finite))
    queries = draw(hnp.arrays(np.float32, (b, dim), elements=finite))
    assume(n == 0 or np.all(np.abs(db).max(axis=1) > 1e-3))
    assume(np.all(np.abs(queries).max(axis=1) > 1e-3))
    k = draw(st.integers(1, 6))
    return dim, db, queries, k


@given(
    problem=problems(),
    dtype=st.sampled_from(["f32", "f16", "i8"]),
    kernel=st.sampled_from(KERNELS),
    threads=st.sampled_from([1, 2]),
    rerank=st.booleans(),
)
def test_every_kernel_and_dtype_matches_numpy(
    problem: tuple[int, np.ndarray, np.ndarray, int],
    dtype: str,
    kernel: str,
    threads: int,
    rerank: bool,
) -> None:
    dim, db, queries, k = problem
    m = lfr.Matcher(dim, dtype, threads=threads, kernel=kernel, rerank=rerank)  # type: ignore[arg-type]
    db_ids = np.arange(len(db), dtype=np.int64) * 3 - 50
    m.add(db_ids, db)
    ids, got = m.search(queries, k)
    # Re-ranked quantised matchers return exact (f32) scores.
    ref = scores(db, queries, "f32" if rerank else dtype)
    check_search(ids, got, db_ids, ref, k, TOLERANCE[dtype])


@pytest.mark.parametrize("dim", [128, 300])
@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_large_watchlist_split_across_threads(
    dtype: str, kernel: str, dim: int
) -> None:
    # Big enough that the search is split across threads and row blocks; dim 300
    # makes f32 panels large enough for the two-panel single-query tiles, and 17
    # queries leave a block of one query with every kernel's block size.
    rng = np.random.default_rng(5)
    db = rng.standard_normal((20_011, dim), dtype=np.float32)
    db_ids = rng.permutation(len(db)).astype(np.int64) * 7919 - 10**6
    for rerank in (True, False):
        m = lfr.Matcher(dim, dtype, threads=2, kernel=kernel, rerank=rerank)  # type: ignore[arg-type]
        m.add(db_ids, db)
        for b in (1, 17):
            queries = rng.standard_normal((b, dim), dtype=np.float32)
            ids, got = m.search(queries, 5)
            ref = scores(db, queries, "f32" if rerank else dtype)
            check_search(ids, got, db_ids, ref, 5, TOLERANCE[dtype])


class MatcherModel(RuleBasedStateMachine):
    """Random add/remove/search sequences against a dict of vectors."""

    dim = 5

    @initialize(
        dtype=st.sampled_from(["f32", "f16", "i8"]),
        kernel=st.sampled_from(KERNELS),
        rerank=st.booleans(),
    )
    def start(self, dtype: str, kernel: str, rerank: bool) -> None:
        self.dtype = dtype if not rerank else "f32"
        self.matcher = lfr.Matcher(
            self.dim,
            dtype,  # type: ignore[arg-type]
            threads=1,
            kernel=kernel,
            rerank=rerank,
        )
        self.model: dict[int, np.ndarray] = {}
        self.rng = np.random.default_rng(0)

    def _vectors(self, n: int) -> np.ndarray:
        return self.rng.uniform(0.05, 1.0, (n, self.dim)).astype(np.float32)

    @rule(ids=st.sets(st.integers(-(2**63), 2**63 - 1), max_size=40))
    def add(self, ids: set[int]) -> None:
        new = [i for i in ids if i not in self.model and i != -1]
        vecs = self._vectors(len(new))
        self.matcher.add(np.array(new, dtype=np.int64), vecs)
        self.model.update(zip(new, vecs))

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def add_existing_fails(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(sorted(self.model)))
        fresh = next(i for i in itertools.count(10**6) if i not in self.model)
        with pytest.raises(ValueError, match="already in the matcher"):
            self.matcher.add(np.array([fresh, old]), self._vectors(2))

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        gone = data.draw(st.sets(st.sampled_from(sorted(self.model)), min_size=1))
        self.matcher.remove(np.array(sorted(gone), dtype=np.int64))
        for i in gone:
            del self.model[i]

    @rule(unknown=st.integers(-(2**63), 2**63 - 1))
    def remove_unknown_fails(self, unknown: int) -> None:
        assume(unknown not in self.model)
        present = sorted(self.model)[:2]
        with pytest.raises(KeyError):
            self.matcher.remove(np.array([*present, unknown], dtype=np.int64))

    @rule(k=st.integers(1, 4))
    def search(self, k: int) -> None:
        queries = self._vectors(3)
        ids, got = self.matcher.search(queries, k)
        db_ids = np.array(list(self.model), dtype=np.int64)
        db = np.array(list(self.model.values()), dtype=np.float32).reshape(-1, self.dim)
        check_search(ids, got, db_ids, scores(db, queries, self.dtype), k, 1e-5)

    @invariant()
    def same_size_and_members(self) -> None:
        if not hasattr(self, "matcher"):
            return
        assert len(self.matcher) == len(self.model)
        for i in list(self.model)[:5]:
            assert i in self.matcher


TestMatcherModel = MatcherModel.TestCase


@given(
    n=st.integers(1, 12),
    dim=st.integers(1, 20),
    defect=st.sampled_from(["nan", "inf", "-inf", "zero", "dim", "dtype", "dup-id"]),
    data=st.data(),
)
def test_bad_batches_raise_and_leave_the_matcher_unchanged(
    n: int, dim: int, defect: str, data: st.DataObject
) -> None:
    rng = np.random.default_rng(n * 31 + dim)
    m = lfr.Matcher(dim, "f32", threads=1)
    m.add(np.arange(5), rng.uniform(0.1, 1.0, (5, dim)).astype(np.float32))
    probe = rng.uniform(0.1, 1.0, (3, dim)).astype(np.float32)
    before = [a.tolist() for a in m.search(probe, 6)]
    vecs: np.ndarray = rng.uniform(0.1, 1.0, (n, dim)).astype(np.float32)
    ids = np.arange(100, 100 + n)
    row = data.draw(st.integers(0, n - 1))
    col = data.draw(st.integers(0, dim - 1))
    error: type[Exception] = ValueError
    if defect in ("nan", "inf", "-inf"):
        vecs[row, col] = float(defect)
    elif defect == "zero":
        vecs[row] = 0.0
    elif defect == "dim":
        vecs = np.hstack([vecs, vecs[:, :1]])
    elif defect == "dtype":
        vecs = vecs.astype(np.float64)
        error = TypeError
    else:
        ids[row] = 3  # already present
    with pytest.raises(error):
        m.add(ids, vecs)
    assert len(m) == 5
    assert [a.tolist() for a in m.search(probe, 6)] == before
