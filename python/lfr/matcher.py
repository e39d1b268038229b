"""Exact watchlist matching (the Rust kernels in ``lfr._core``, typed for Python)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from lfr import _core

__all__ = ["Dtype", "Matcher", "available_kernels"]

Dtype = Literal["f32", "f16", "i8"]

_INT64_MAX = np.iinfo(np.int64).max


def available_kernels() -> list[str]:
    """Names of the matching kernels this CPU can run, fastest last.

    Returns:
        A subset of ``["scalar", "neon", "avx2", "avx512"]``; ``"scalar"`` is always
        present.
    """
    return _core.available_kernels()


def _as_ids(ids: npt.ArrayLike, name: str = "ids") -> npt.NDArray[np.int64]:
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > _INT64_MAX:
        raise ValueError(f"{name} must fit in int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_rows(
    values: npt.NDArray[np.float32], name: str, dim: int
) -> npt.NDArray[np.float32]:
    if not isinstance(values, np.ndarray):
        raise TypeError(
            f"{name} must be a float32 numpy array, got {type(values).__name__}"
        )
    if values.dtype != np.float32:
        raise TypeError(
            f"{name} must have dtype float32, got {values.dtype} "
            "(convert with .astype(np.float32))"
        )
    if values.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n, {dim}), got shape {values.shape}"
            + (" (use x[None, :] for one vector)" if values.ndim == 1 else "")
        )
    if values.shape[1] != dim:
        raise ValueError(
            f"{name} have dimension {values.shape[1]}, the matcher expects {dim}"
        )
    return np.ascontiguousarray(values)


class Matcher:
    """Exact cosine-similarity search over a watchlist of face embeddings.

    Vectors are L2-normalised on :meth:`add` and in :meth:`search`, so scores are
    cosine similarities in [-1, 1]. The matrix lives in Rust memory, is scanned by
    SIMD kernels chosen at run time (AVX-512, AVX2+FMA, NEON or scalar) with the GIL
    released, and is zeroized when entries are removed or the matcher is freed.

    Searches from several Python threads may run at once; :meth:`add` and
    :meth:`remove` wait for them and change nothing unless they succeed.

    Args:
        dim: Embedding dimension (for example 128 or 512).
        dtype: Storage precision: ``"f32"`` (exact), ``"f16"`` (half the memory) or
            ``"i8"`` (a quarter; per-vector scale). Queries stay float32.
        threads: Most threads one search uses (default: the number of cores). Small
            watchlists are scanned on one thread whatever this says.
        kernel: Force a kernel (``"scalar"``, ``"avx2"``, ``"avx512"``, ``"neon"``)
            for tests and benchmarks; default: the fastest available.
        rerank: For ``"f16"`` and ``"i8"``: also keep an exact float32 copy of each
            vector and re-score the best candidates of the quantised scan with it,
            so ids and scores equal a ``"f32"`` matcher's (the scan still reads 2x /
            4x fewer bytes; memory is 1.5x / 1.25x of f32). ``False`` keeps only
            the quantised matrix (0.5x / 0.25x memory) and accepts that near-ties
            may be ordered differently. Ignored for ``"f32"``.
        secure: Keep the matrix, and the exact copies used for re-ranking, in locked
            memory (like :class:`lfr.SecureBuffer`: ``mlock``ed so it is never
            swapped, left out of core dumps, zeros in a forked child) instead of the
            heap. Searches return the same results (and run within a few percent
            of the heap's speed: no huge pages). The storage grows by doubling and
            briefly holds the old copy too, so ``RLIMIT_MEMLOCK`` must cover about
            three times :attr:`nbytes`.
        allow_unlocked: With ``secure``: where memory cannot be locked (or
            ``MADV_DONTDUMP``/``MADV_WIPEONFORK`` is refused), use it unprotected
            instead of raising :class:`~lfr.errors.SecureMemoryError`.

    Raises:
        ValueError: ``dim``, ``dtype``, ``threads`` or ``kernel`` is invalid.
        RuntimeError: The requested kernel is not available on this CPU.

    Examples:
        >>> import numpy as np, lfr
        >>> m = lfr.Matcher(dim=4)
        >>> m.add(np.array([7, 9]), np.eye(4, dtype=np.float32)[:2])
        >>> ids, scores = m.search(np.array([[1, 0.1, 0, 0]], np.float32), k=2)
        >>> ids.tolist()
        [[7, 9]]
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        dim: int,
        dtype: Dtype = "f32",
        *,
        threads: int | None = None,
        kernel: str | None = None,
        rerank: bool = True,
        secure: bool = False,
        allow_unlocked: bool = False,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self._core = _core.Matcher(
            int(dim),
            dtype,
            threads,
            kernel,
            bool(rerank),
            secure=bool(secure),
            allow_unlocked=bool(allow_unlocked),
        )

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._core.dim

    @property
    def dtype(self) -> Dtype:
        """Storage precision."""
        dtype: Dtype = self._core.dtype  # type: ignore[assignment]
        return dtype

    @property
    def kernel(self) -> str:
        """The kernel searches run on."""
        return self._core.kernel

    @property
    def threads(self) -> int:
        """Most threads one search uses."""
        return self._core.threads

    @property
    def rerank(self) -> bool:
        """Whether quantised scans are re-ranked with exact copies."""
        return self._core.rerank

    @property
    def secure(self) -> bool:
        """Whether the vectors live in locked, undumpable memory."""
        return self._core.secure

    @property
    def nbytes(self) -> int:
        """Bytes of memory holding the vectors."""
        return self._core.nbytes

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Adds entries.

        Args:
            ids: ``n`` unique integer ids (int64 range, not -1), none already present.
            vectors: float32 array of shape ``(n, dim)``; each row is normalised.

        Raises:
            TypeError: ``vectors`` is not a float32 array or ``ids`` not integers.
            ValueError: Shapes disagree, an id repeats or is present or is -1, or a
                vector is zero or holds NaN/inf. Nothing is added.
            SecureMemoryError: A ``secure`` matcher needs more memory and it cannot
                be locked (``RLIMIT_MEMLOCK``). Nothing is added; the matcher keeps
                its entries and stays usable.
        """
        id_arr = _as_ids(ids)
        rows = _as_rows(vectors, "vectors", self.dim)
        self._core.add(id_arr, rows)

    def remove(self, ids: npt.ArrayLike) -> None:
        """Removes entries (their vectors are zeroized).

        Args:
            ids: Integer ids to remove.

        Raises:
            KeyError: An id is not in the matcher. Nothing is removed.
            ValueError: An id is given twice. Nothing is removed.
        """
        self._core.remove(_as_ids(ids))

    def search(
        self, queries: npt.NDArray[np.float32], k: int = 1
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Finds the ``k`` most similar entries for each query.

        All queries of a call share one pass over the watchlist, so pass every face
        of a frame at once.

        Args:
            queries: float32 array of shape ``(b, dim)``; each row is normalised.
            k: Results per query (at least 1).

        Returns:
            ``(ids, scores)``: int64 and float32 arrays of shape ``(b, k)``, best
            first (equal scores: smaller id first). Scores are cosine similarities.
            Where fewer than ``k`` entries exist, ids are -1 and scores ``-inf``.

        Raises:
            TypeError: ``queries`` is not a float32 array.
            ValueError: Wrong shape, ``k < 1``, or a query is zero or holds NaN/inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        rows = _as_rows(queries, "queries", self.dim)
        out_ids = np.empty((rows.shape[0], int(k)), dtype=np.int64)
        out_scores = np.empty((rows.shape[0], int(k)), dtype=np.float32)
        self._core.search(rows, int(k), out_ids, out_scores)
        return out_ids, out_scores

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            return False
        if not -(2**63) <= int(id) <= _INT64_MAX:
            return False
        return int(id) in self._core

    def __repr__(self) -> str:
        return (
            f"Matcher(dim={self.dim}, dtype={self.dtype!r}, size={len(self)}, "
            f"kernel={self.kernel!r}, threads={self.threads}"
            + (", secure=True)" if self.secure else ")")
        )
