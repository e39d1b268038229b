"""Hypothesis: a wiped buffer is all zeros; no view outlives its buffer; pools hand out
only wiped buffers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import lfr

DTYPES = [np.uint8, np.int16, np.float32, np.float64, np.uint64]


@given(
    nbytes=st.integers(1, 3 * 4096 + 100),
    writes=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=300)),
        max_size=8,
    ),
    dtype=st.sampled_from(DTYPES),
    fill=st.integers(1, 255),
)
def test_any_write_then_wipe_leaves_zeros(
    nbytes: int, writes: list[tuple[int, bytes]], dtype: type, fill: int
) -> None:
    buf = lfr.SecureBuffer(nbytes)
    raw = buf.array()
    typed = buf.array(dtype)
    typed.view(np.uint8)[:] = fill
    for offset, data in writes:
        start = offset % nbytes
        chunk = np.frombuffer(data, np.uint8)[: nbytes - start]
        raw[start : start + chunk.size] = chunk
    buf.memoryview()[0] = fill
    buf.wipe()
    assert not raw.any()
    assert bytes(buf.memoryview()) == bytes(nbytes)
    del raw, typed
    buf.close()


class ViewLifetimes(RuleBasedStateMachine):
    """Views come and go; the buffer may be closed only when none is left."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = lfr.SecureBuffer(512)
        self.views: list[np.ndarray] = []
        self.expected = np.zeros(512, np.uint8)

    @precondition(lambda self: not self.buf.closed)
    @rule(dtype=st.sampled_from(DTYPES), sliced=st.booleans())
    def make_view(self, dtype: type, sliced: bool) -> None:
        view = self.buf.array(dtype)
        self.views.append(view[1:] if sliced else view)

    @precondition(lambda self: bool(self.views))
    @rule(index=st.integers(0, 100))
    def drop_view(self, index: int) -> None:
        self.views.pop(index % len(self.views))

    @precondition(lambda self: bool(self.views))
    @rule(index=st.integers(0, 100), value=st.integers(1, 255))
    def write_through_a_view(self, index: int, value: int) -> None:
        view = self.views[index % len(self.views)]
        raw = view.view(np.uint8).reshape(-1)
        raw[:] = value
        start = raw.ctypes.data - self.buf.address
        self.expected[start : start + raw.size] = value

    @precondition(lambda self: not self.buf.closed)
    @rule()
    def wipe(self) -> None:
        self.buf.wipe()
        self.expected[:] = 0

    @rule()
    def close(self) -> None:
        if self.buf.closed:
            self.buf.close()  # idempotent
        elif self.views:
            with pytest.raises(BufferError):
                self.buf.close()
        else:
            self.buf.close()

    @invariant()
    def views_are_counted_and_content_is_consistent(self) -> None:
        if self.buf.closed:
            assert not self.views
            with pytest.raises(BufferError):
                self.buf.array()
            return
        assert self.buf.views == len(self.views)
        np.testing.assert_array_equal(np.asarray(self.buf), self.expected)

    def teardown(self) -> None:
        self.views.clear()
        self.buf.close()


ViewLifetimes.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
TestViewLifetimes = ViewLifetimes.TestCase


@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40))
def test_pools_hand_out_only_wiped_buffers(ops: list[tuple[bool, int]]) -> None:
    with lfr.SecurePool(100, capacity=3) as pool:
        held: list[lfr.SecureBuffer] = []
        for acquire, pick in ops:
            if acquire and len(held) < pool.capacity:
                buf = pool.acquire(timeout=1)
                assert not np.asarray(buf).any()
                view = buf.array()
                view[:] = pick + 1
                del view
                held.append(buf)
            elif held:
                pool.release(held.pop(pick % len(held)))
            assert pool.available + pool.in_use == pool.capacity
        for buf in held:
            pool.release(buf)
        assert pool.retired == 0
