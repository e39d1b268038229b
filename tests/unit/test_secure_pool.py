"""lfr.SecurePool: preallocated buffers handed out wiped."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import lfr


def test_buffers_come_back_wiped_and_are_reused() -> None:
    with lfr.SecurePool(256, capacity=2) as pool:
        first = pool.acquire()
        first.array()[:] = 0xEE
        address = first.address
        pool.release(first)
        again = pool.acquire()
        assert again.address == address  # reused, not reallocated
        assert not np.asarray(again).any()
        assert (pool.available, pool.in_use) == (1, 1)
        pool.release(again)


def test_lease_releases_on_error() -> None:
    with lfr.SecurePool(64, capacity=1) as pool:

        def fail_while_leased() -> None:
            with pool.lease() as buf:
                buf.array()[:] = 1
                raise KeyError("boom")

        with pytest.raises(KeyError):
            fail_while_leased()
        assert pool.available == 1
        with pool.lease() as buf:
            assert not np.asarray(buf).any()


def test_exhausted_pool_times_out() -> None:
    with lfr.SecurePool(64, capacity=1) as pool:
        held = pool.acquire()
        with pytest.raises(TimeoutError, match="all 1 buffers of 64 bytes"):
            pool.acquire(timeout=0.01)
        pool.release(held)


def test_foreign_and_double_releases_are_refused() -> None:
    with lfr.SecurePool(64, capacity=1) as pool:
        stranger = lfr.SecureBuffer(64)
        with pytest.raises(ValueError, match="not leased"):
            pool.release(stranger)
        buf = pool.acquire()
        pool.release(buf)
        with pytest.raises(ValueError, match="not leased"):
            pool.release(buf)
        assert pool.available == 1
        stranger.close()


def test_a_buffer_with_live_views_is_retired_not_reused() -> None:
    with lfr.SecurePool(64, capacity=1) as pool:
        buf = pool.acquire()
        stale = buf.array()
        stale[:] = 5
        pool.release(buf)
        assert not stale.any()  # wiped at once
        assert pool.retired == 1
        fresh = pool.acquire()
        assert fresh is not buf
        assert fresh.address != buf.address
        fresh.array()[:] = 9
        assert not stale.any()  # the next face is not visible through the old view
        pool.release(fresh)
        del stale


def test_close_frees_free_buffers_and_refuses_acquire() -> None:
    pool = lfr.SecurePool(64, capacity=2)
    leased = pool.acquire()
    pool.close()
    assert pool.closed
    assert "closed" in repr(pool)
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire()
    pool.release(leased)
    assert leased.closed


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        lfr.SecurePool(64, capacity=0)
    with pytest.raises(ValueError, match="nbytes"):
        lfr.SecurePool(0, capacity=1)
    with pytest.raises(TypeError, match="capacity"):
        lfr.SecurePool(64, capacity=1.5)  # type: ignore[arg-type]


def test_threads_never_share_a_buffer() -> None:
    errors: list[str] = []
    with lfr.SecurePool(4096, capacity=3) as pool:

        def work(tag: int) -> None:
            for _ in range(200):
                with pool.lease(timeout=10) as buf:
                    view = buf.array()
                    if view.any():
                        errors.append("acquired a buffer that was not wiped")
                    view[:] = tag
                    if not (view == tag).all():
                        errors.append("another thread wrote into a leased buffer")
                    del view

        threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pool.available == 3
        assert pool.retired == 0
    assert errors == []
