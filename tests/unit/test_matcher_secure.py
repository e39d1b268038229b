"""lfr.Matcher(secure=True): same results, locked memory, and failing closed."""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lfr

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux /proc and mlock"
)

PR_CAPBSET_DROP = 24
CAP_IPC_LOCK = 14
DTYPES = ["f32", "f16", "i8"]


def _vm_lck() -> int:
    """Bytes this process has locked (``VmLck`` in ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmLck in /proc/self/status")


def _protected_locked_bytes() -> int:
    """Sum of ``Locked:`` over the mappings flagged ``lo``, ``dd`` and ``wf``."""
    total, flags, locked = 0, set(), 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Locked":
            locked = int(value.split()[0]) * 1024
        elif key == "VmFlags":
            flags = set(value.split())
            if {"lo", "dd", "wf"} <= flags:
                total += locked
    return total


def _pair(
    dtype: str, rerank: bool, dim: int = 48
) -> tuple[lfr.Matcher, lfr.Matcher, np.ndarray, np.ndarray]:
    """A heap and a secure matcher fed the same adds (with growth) and removes."""
    rng = np.random.default_rng(7)
    heap = lfr.Matcher(dim, dtype, threads=1, rerank=rerank)  # type: ignore[arg-type]
    secure = lfr.Matcher(
        dim,
        dtype,  # type: ignore[arg-type]
        threads=1,
        rerank=rerank,
        secure=True,
    )
    all_ids, all_vecs = [], []
    start = 0
    for n in (1, 15, 40, 100, 250):
        ids = np.arange(start, start + n) * 3 + 1
        vecs = rng.standard_normal((n, dim), dtype=np.float32)
        heap.add(ids, vecs)
        secure.add(ids, vecs)
        all_ids.append(ids)
        all_vecs.append(vecs)
        start += n
    gone = [1, 4, 3 * 200 + 1, 3 * (start - 1) + 1]
    heap.remove(gone)
    secure.remove(gone)
    ids = np.concatenate(all_ids)
    vecs = np.concatenate(all_vecs)
    keep = ~np.isin(ids, gone)
    return heap, secure, ids[keep], vecs[keep]


@pytest.mark.parametrize("rerank", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_secure_matcher_returns_exactly_what_the_heap_one_does(
    dtype: str, rerank: bool
) -> None:
    heap, secure, ids, vecs = _pair(dtype, rerank)
    assert len(heap) == len(secure) == len(ids)
    assert heap.nbytes == secure.nbytes
    rng = np.random.default_rng(3)
    queries = np.concatenate(
        [vecs[::37], rng.standard_normal((20, vecs.shape[1]), dtype=np.float32)]
    )
    for k in (1, 7, len(ids) + 3):
        want_ids, want_scores = heap.search(queries, k=k)
        got_ids, got_scores = secure.search(queries, k=k)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)
    top, _ = secure.search(vecs[::37], k=1)
    assert top[:, 0].tolist() == ids[::37].tolist()
    assert all(int(i) in secure for i in ids)


def test_secure_flag_property_and_repr() -> None:
    plain = lfr.Matcher(8)
    secure = lfr.Matcher(8, "i8", secure=True, allow_unlocked=True)
    assert plain.secure is False
    assert secure.secure is True
    assert "secure" not in repr(plain)
    assert repr(secure).endswith(", secure=True)")
    assert secure.nbytes == 0  # nothing is locked before the first add
    with pytest.raises(AttributeError):
        secure.secure = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        lfr._core.Matcher(8, "f32", None, None, True, True)  # type: ignore[call-arg]


@linux_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_secure_rows_are_locked_undumpable_memory(dtype: str) -> None:
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((3000, 128), dtype=np.float32)
    before_lck, before_maps = _vm_lck(), _protected_locked_bytes()
    m = lfr.Matcher(128, dtype, secure=True)  # type: ignore[arg-type]
    m.add(np.arange(len(vecs)), vecs)
    matrix = 3000 * 128 * {"f32": 4, "f16": 2, "i8": 1}[dtype]
    assert m.nbytes >= matrix
    assert _vm_lck() - before_lck >= m.nbytes
    assert _protected_locked_bytes() - before_maps >= m.nbytes
    m.remove(np.arange(0, 3000, 2))
    assert _vm_lck() - before_lck >= m.nbytes  # removing zeroizes, keeps the memory
    del m
    assert _vm_lck() <= before_lck  # freed: unlocked and unmapped


@linux_only
def test_heap_matcher_locks_nothing() -> None:
    rng = np.random.default_rng(5)
    before = _vm_lck()
    m = lfr.Matcher(128)
    m.add(np.arange(3000), rng.standard_normal((3000, 128), dtype=np.float32))
    assert _vm_lck() - before < m.nbytes


def _run_limited(code: str, memlock: int) -> dict[str, object]:
    """Runs ``code`` in a fresh interpreter with a small ``RLIMIT_MEMLOCK`` and no
    ``CAP_IPC_LOCK``; it prints one JSON object."""

    def limit_memlock() -> None:  # pragma: no cover - runs in the child
        hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, hard))
        # Root keeps CAP_IPC_LOCK across exec unless it leaves the bounding set.
        ctypes.CDLL(None).prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0)

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        preexec_fn=limit_memlock,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@linux_only
def test_growth_beyond_the_memlock_limit_fails_closed_and_changes_nothing() -> None:
    out = _run_limited(
        """
        import json
        import numpy as np
        import lfr
        from lfr.errors import SecureMemoryError
        from lfr.secure import memory_status

        def vm_lck():
            return memory_status().memlock_locked

        rng = np.random.default_rng(1)
        first = rng.standard_normal((100, 128), dtype=np.float32)
        more = rng.standard_normal((1000, 128), dtype=np.float32)
        result = {"privileged": memory_status().memlock_privileged}
        for dtype in ("f32", "f16", "i8"):
            r = result[dtype] = {}
            m = lfr.Matcher(128, dtype, secure=True)
            m.add(np.arange(100), first)
            before = (len(m), m.nbytes, vm_lck())
            want = m.search(first, k=3)
            try:
                m.add(np.arange(100, 1100), more)
                r["error"] = None
            except SecureMemoryError as e:
                r["error"] = str(e)
            ids, scores = m.search(first, k=3)
            r["unchanged"] = before == (len(m), m.nbytes, vm_lck())
            r["same_search"] = bool(
                (ids == want[0]).all() and (scores == want[1]).all()
            )
            r["self_match"] = ids[:, 0].tolist() == list(range(100))
            r["absent"] = 100 in m
            m.add(np.arange(100, 110), more[:10])  # fits: still usable
            r["later_add"] = len(m)
            del m
            u = lfr.Matcher(128, dtype, secure=True, allow_unlocked=True)
            u.add(np.arange(100), first)
            u.add(np.arange(100, 1100), more)
            ids, _ = u.search(more[::100], k=1)
            r["unlocked"] = [u.secure, len(u), ids[:, 0].tolist()]
            del u
        print(json.dumps(result))
        """,
        memlock=256 * 1024,
    )
    if out["privileged"]:
        pytest.skip("the child kept CAP_IPC_LOCK, so the memlock limit cannot bind")
    for dtype in DTYPES:
        r = out[dtype]
        assert isinstance(r, dict)
        message = str(r["error"])
        assert "cannot lock" in message, dtype
        assert "RLIMIT_MEMLOCK is 256 KiB" in message
        assert "allow_unlocked=True" in message
        assert r["unchanged"] is True, dtype
        assert r["same_search"] is True, dtype
        assert r["self_match"] is True, dtype
        assert r["absent"] is False
        assert r["later_add"] == 110
        assert r["unlocked"] == [True, 1100, list(range(100, 1100, 100))]
