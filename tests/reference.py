"""Independent numpy model of what the matcher stores and returns."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def unit(x: F32) -> F32:
    """Rows normalised in float64 and rounded to float32, as lfr does."""
    x64 = x.astype(np.float64)
    norms = np.sqrt((x64 * x64).sum(axis=1, keepdims=True))
    out: F32 = (x64 / norms).astype(np.float32)
    return out


def stored(x: F32, dtype: str) -> npt.NDArray[np.float64]:
    """The unit vectors as the matcher stores them, dequantised (float64)."""
    u = unit(x)
    if dtype == "f32":
        return u.astype(np.float64)
    if dtype == "f16":
        return u.astype(np.float16).astype(np.float64)
    # i8: q = rint(u / max|u| * 127) in float32, scale = 1 / ||q||.
    mx = np.abs(u).max(axis=1, keepdims=True)
    codes = np.rint(u / mx * np.float32(127)).astype(np.float64)
    out: npt.NDArray[np.float64] = codes / np.sqrt(
        (codes * codes).sum(axis=1, keepdims=True)
    )
    return out


def scores(db: F32, queries: F32, dtype: str) -> npt.NDArray[np.float64]:
    """Reference cosine scores, ``(b, n)``."""
    out: npt.NDArray[np.float64] = (
        unit(queries).astype(np.float64) @ stored(db, dtype).T
    )
    return out


def check_search(
    ids: npt.NDArray[np.int64],
    got: F32,
    db_ids: npt.NDArray[np.int64],
    ref: npt.NDArray[np.float64],
    k: int,
    tol: float,
) -> None:
    """Asserts a search result is a correct top-k of ``ref`` (ties in any order)."""
    b, n = ref.shape
    assert ids.shape == (b, k)
    assert got.shape == (b, k)
    position = {int(i): p for p, i in enumerate(db_ids)}
    for row in range(b):
        want = np.sort(ref[row])[::-1][:k]
        found = min(k, n)
        assert np.all(ids[row, found:] == -1)
        assert np.all(np.isneginf(got[row, found:]))
        assert len(set(ids[row, :found].tolist())) == found
        # Each returned score is the reference's j-th best, and belongs to its id.
        np.testing.assert_allclose(got[row, :found], want, atol=tol, rtol=0)
        own = ref[row, [position[int(i)] for i in ids[row, :found]]]
        np.testing.assert_allclose(got[row, :found], own, atol=tol, rtol=0)
        assert np.all(np.diff(got[row, :found]) <= 0)
