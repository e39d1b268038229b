"""lfr.SecureBuffer: protections, zero-copy views, wiping and closing."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import sys
from collections.abc import Callable

import cv2
import numpy as np
import pytest

import lfr
from lfr.errors import LfrError, SecureMemoryError
from tests.support.procfs import smaps_entry, vm_flags

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux /proc and madvise flags"
)


def test_new_buffer_is_zeroed_and_fully_protected() -> None:
    buf = lfr.SecureBuffer(10_000)
    assert len(buf) == buf.nbytes == 10_000
    assert buf.mapped_nbytes % os.sysconf("SC_PAGE_SIZE") == 0
    assert buf.mapped_nbytes >= 10_000
    assert buf.address % os.sysconf("SC_PAGE_SIZE") == 0
    assert (buf.locked, buf.dontdump, buf.wipeonfork) == (True, True, True)
    assert not np.asarray(buf).any()
    buf.close()


@linux_only
def test_smaps_shows_locked_dontdump_wipeonfork() -> None:
    buf = lfr.SecureBuffer(3 * 4096 + 5)
    buf.array()[:] = 1  # touch every page
    entry = smaps_entry(buf.address)
    assert entry is not None, "the buffer's mapping is not in /proc/self/smaps"
    assert entry["Locked"] == f"{buf.mapped_nbytes // 1024} kB"
    assert {"lo", "dd", "wf"} <= vm_flags(buf.address)
    buf.close()


def test_views_are_zero_copy_and_writable() -> None:
    buf = lfr.SecureBuffer(4 * 6)
    arr = buf.array(np.float32, (2, 3))
    assert arr.flags.writeable
    assert arr.flags.c_contiguous
    assert arr.ctypes.data == buf.address
    arr[1, 2] = 2.5
    assert np.asarray(buf).view(np.float32)[5] == 2.5
    mv = buf.memoryview()
    assert mv.nbytes == 24
    assert not mv.readonly
    assert buf.views == 2
    del arr, mv
    assert buf.views == 0
    buf.close()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 (__buffer__) is 3.12+")
def test_memoryview_of_the_buffer_itself_on_312_and_newer() -> None:
    buf = lfr.SecureBuffer(16)
    mv = memoryview(buf)
    mv[3] = 7
    assert buf.array()[3] == 7
    assert buf.views == 1
    with pytest.raises(BufferError):
        buf.close()
    mv.release()
    assert buf.views == 0
    buf.close()


def test_an_export_counts_until_its_last_array_is_gone() -> None:
    buf = lfr.SecureBuffer(64)
    export = buf.export()
    assert export.owner is buf
    assert buf.views == 1
    whole = np.asarray(export)
    part = whole[8:16].view(np.uint64)
    del export, whole
    assert buf.views == 1  # `part` still reaches the memory through its base
    with pytest.raises(BufferError):
        buf.close()
    part[0] = 1
    del part
    assert buf.views == 0
    buf.close()
    with pytest.raises(BufferError):
        buf.export()


def test_opencv_and_numpy_write_in_place() -> None:
    src = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    buf = lfr.SecureBuffer(20 * 10 * 3)
    dst = buf.array(np.uint8, (20, 10, 3))
    m = np.array([[1.0, 0.0, -2.0], [0.0, 1.0, -3.0]])  # dst(x, y) = src(x + 2, y + 3)
    out = cv2.warpAffine(src, m, (10, 20), dst=dst)
    assert out.ctypes.data == buf.address
    np.testing.assert_array_equal(dst, src[3:23, 2:12])
    np.multiply(dst, 0, out=dst)
    assert not np.asarray(buf).any()
    np.copyto(dst, 9)
    assert (np.asarray(buf) == 9).all()
    del dst, out
    buf.close()


def test_wipe_zeroes_every_view() -> None:
    buf = lfr.SecureBuffer(1000)
    arr = buf.array()
    arr[:] = 0xAB
    buf.wipe()
    assert not arr.any()
    del arr
    buf.close()


def test_close_is_refused_while_views_exist() -> None:
    buf = lfr.SecureBuffer(64)
    arr = buf.array(np.float32)
    sub = arr[3:5]
    del arr
    with pytest.raises(BufferError, match="1 view"):
        buf.close()
    del sub
    buf.close()
    assert buf.closed
    buf.close()  # idempotent


def test_closed_buffer_refuses_every_use() -> None:
    buf = lfr.SecureBuffer(64)
    buf.close()
    with pytest.raises(BufferError, match="closed"):
        np.asarray(buf)
    with pytest.raises(BufferError, match="closed"):
        buf.array()
    with pytest.raises(BufferError, match="closed"):
        buf.wipe()
    with pytest.raises(BufferError, match="closed"):
        _ = buf.locked
    assert "closed" in repr(buf)


@linux_only
def test_a_view_keeps_the_memory_mapped_until_it_goes() -> None:
    buf = lfr.SecureBuffer(5000)
    address = buf.address
    arr = buf.array()
    arr[:] = 7
    del buf
    gc.collect()
    assert (arr == 7).all()  # still mapped, still ours
    assert "lo" in vm_flags(address)
    del arr
    gc.collect()
    # Freed: zeroized, unlocked and unmapped (an unrelated mapping may reuse the
    # address, but never a locked one of ours).
    assert "lo" not in vm_flags(address)


def test_array_validates_dtype_and_shape() -> None:
    buf = lfr.SecureBuffer(100)
    with pytest.raises(ValueError, match="needs 104 bytes"):
        buf.array(np.float32, (26,))
    with pytest.raises(ValueError, match="negative"):
        buf.array(np.uint8, (-1, 2))
    with pytest.raises(TypeError, match="object"):
        buf.array(object)
    assert buf.array(np.float64).shape == (12,)
    assert buf.array(np.uint8, 7).shape == (7,)
    assert buf.array(np.uint8, (0, 3)).size == 0
    gc.collect()
    buf.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        lfr.SecureBuffer(0)
    with pytest.raises(OverflowError):
        lfr.SecureBuffer(-1)
    with pytest.raises(TypeError):
        lfr.SecureBuffer("8")  # type: ignore[arg-type]


def test_repr_shows_state_but_no_content() -> None:
    buf = lfr.SecureBuffer(16)
    buf.array()[:] = 0x41  # "AAAA..."
    text = repr(buf)
    assert text.startswith("SecureBuffer(nbytes=16, locked=True")
    assert "AAAA" not in text
    assert "65" not in text
    buf.close()


def test_context_manager_wipes_and_frees() -> None:
    with lfr.SecureBuffer(32) as buf:
        buf.array()[:] = 3
    assert buf.closed
    with lfr.SecureBuffer(32) as kept:
        view = kept.array()
        view[:] = 3
    assert not kept.closed
    assert not view.any()
    del view
    kept.close()


def test_secure_memory_error_is_an_lfr_error_and_a_memory_error() -> None:
    assert issubclass(SecureMemoryError, LfrError)
    assert issubclass(SecureMemoryError, MemoryError)


@linux_only
def test_fork_child_sees_zeros() -> None:
    buf = lfr.SecureBuffer(3 * 4096)
    buf.array()[:] = 0xAB
    plain = bytearray(b"\xab" * 64)  # ordinary memory: copied into the child
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        secure_zero = not np.asarray(buf).any()
        plain_kept = plain == bytearray(b"\xab" * 64)
        os._exit(0 if secure_zero and plain_kept else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    assert (np.asarray(buf) == 0xAB).all()  # the parent keeps its data
    buf.close()


@pytest.mark.parametrize("how", [pickle.dumps, copy.copy, copy.deepcopy])
def test_cannot_be_pickled_or_copied(how: Callable[[object], object]) -> None:
    buf = lfr.SecureBuffer(16)
    with pytest.raises(TypeError, match="pickle"):
        how(buf)
    buf.close()


def test_discard_wipes_and_frees_now_or_with_the_last_view() -> None:
    buf = lfr.SecureBuffer(32)
    view = buf.array()
    view[:] = 4
    buf.discard()
    assert not view.any()
    assert not buf.closed
    del view
    buf.discard()
    assert buf.closed
    buf.discard()  # nothing left to do


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="3.12+: numpy takes the buffer protocol first"
)
def test_numpy_conversions_that_would_copy_or_cast_are_refused() -> None:
    with lfr.SecureBuffer(64) as buf:
        assert lfr.secure.secure_owner(np.asarray(buf)) is buf
        with pytest.raises(TypeError, match="a cast would copy"):
            np.asarray(buf, dtype=np.float32)
        if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            # numpy 2 passes copy=True to __array__; numpy 1 copies after it.
            with pytest.raises(ValueError, match="copying face data"):
                np.array(buf, copy=True)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 (__buffer__) is 3.12+")
def test_on_312_numpy_casts_through_the_buffer_protocol_into_a_plain_copy() -> None:
    # What SecureBuffer's docstring says: there, a cast or copy is numpy's own copy, as
    # with buf.array().astype(); secure_owner() tells it from a view.
    with lfr.SecureBuffer(64) as buf:
        view = np.asarray(buf)
        assert lfr.secure.secure_owner(view) is buf
        cast = np.asarray(buf, dtype=np.float32)
        assert lfr.secure.secure_owner(cast) is None
        del view


def test_secure_owner_follows_views_and_checks_every_reachable_byte() -> None:
    from numpy.lib.stride_tricks import as_strided

    from lfr.secure import secure_owner

    with lfr.SecureBuffer(4096) as buf:
        whole = buf.array()
        # Views of every kind, strided and reversed, belong to the buffer.
        for view in (
            whole,
            whole[::-1],
            whole[10:20],
            whole[::7],
            whole.reshape(64, 64).T,
        ):
            assert secure_owner(view) is buf
        assert secure_owner(buf.memoryview()[::3]) is buf
        assert secure_owner(buf.array(np.float32, (32, 32))) is buf
        # A strided view that reaches past the end does not (control: one in range).
        assert secure_owner(as_strided(whole, shape=(2,), strides=(4095,))) is buf
        assert secure_owner(as_strided(whole, shape=(2,), strides=(4096,))) is None
        assert (
            secure_owner(as_strided(whole[100:], shape=(2,), strides=(-200,))) is None
        )
        # Copies, ordinary arrays, and arrays that only claim the buffer as base: None.
        assert secure_owner(np.array(whole, copy=True)) is None
        assert secure_owner(np.zeros(8, np.uint8)) is None

        class Forged:
            """Claims the buffer as its base; its memory is elsewhere."""

            def __init__(self, memory: np.ndarray) -> None:
                self.base = buf
                self.__array_interface__ = memory.__array_interface__
                self.memory = memory

        assert secure_owner(np.asarray(Forged(np.zeros(8, np.uint8)))) is None
        assert secure_owner(np.asarray(Forged(whole[8:16]))) is buf  # control
        assert secure_owner(Forged(whole)) is None  # not an array
        assert secure_owner(buf) is None  # the buffer itself is not a view
        del whole, view
    assert secure_owner(np.zeros(1)) is None


def test_secure_owner_is_not_fooled_by_subclasses_that_lie() -> None:
    from lfr.secure import secure_owner

    with lfr.SecureBuffer(4096) as buf:

        class Liar(np.ndarray):
            """Claims the buffer as base and its address as the data pointer."""

            @property
            def base(self) -> object:  # type: ignore[override]
                return buf

            @property
            def __array_interface__(self) -> dict[str, object]:
                real = dict(np.ndarray.__array_interface__.__get__(self))
                real["data"] = (buf.address, False)
                return real

        assert secure_owner(np.zeros(16, np.uint8).view(Liar)) is None
        assert secure_owner(buf.array()[:16].view(Liar)) is buf  # control: it is there

        class Impostor:
            __class__ = lfr.SecureBuffer  # type: ignore[assignment]

        class Holder:
            """Plain memory whose base claims to be a SecureBuffer."""

            def __init__(self) -> None:
                self.memory = np.zeros(8, np.uint8)
                self.__array_interface__ = self.memory.__array_interface__
                self.base = Impostor()

        assert isinstance(Impostor(), lfr.SecureBuffer)  # what the check must not trust
        assert secure_owner(np.asarray(Holder())) is None  # and no TypeError


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 (__buffer__) is 3.12+")
def test_secure_owner_finds_views_made_through_the_buffer_protocol() -> None:
    from lfr.secure import secure_owner

    class Plain:
        """Another Python exporter: its views are ordinary memory."""

        def __init__(self) -> None:
            self.memory = bytearray(64)

        def __buffer__(self, flags: int, /) -> memoryview:
            return memoryview(self.memory)

    with lfr.SecureBuffer(64) as buf:
        mv = memoryview(buf)
        assert type(mv.obj).__name__ == "_buffer_wrapper"  # the path under test
        assert secure_owner(mv) is buf
        assert secure_owner(np.asarray(buf)[8:]) is buf
        other = memoryview(Plain())
        assert type(other.obj).__name__ == "_buffer_wrapper"
        assert secure_owner(other) is None  # control: the same path, plain memory
        mv.release()
