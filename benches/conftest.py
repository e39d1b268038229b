"""Benchmark fixtures: this machine's physical limits, data and indexes.

Run with ``pytest benches/ --benchmark-only`` (see docs/benchmarks.md); ``make bench``
also rewrites docs/benchmarks.md from the results.
"""

from __future__ import annotations

import os
import platform
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lfr import _core

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # faiss's SWIG types
    import faiss

F32 = npt.NDArray[np.float32]
GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Measured read bandwidth (bytes/s) and peak throughput (ops/s) by thread count."""

    bandwidth: dict[int, float]
    f32_flops: dict[int, float]
    i8_ops: dict[int, float | None]

    def floor(self, nbytes: float, ops: float, threads: int, arith: str) -> float:
        """max(bytes / bandwidth, ops / peak) in seconds."""
        peak = self.i8_ops[threads] if arith == "i8" else self.f32_flops[threads]
        compute = ops / peak if peak else 0.0
        return max(nbytes / self.bandwidth[threads], compute)


_LIMITS: Limits | None = None


def limits() -> Limits:
    """Measures the limits once per run (about ten seconds)."""
    global _LIMITS
    if _LIMITS is None:
        threads = (1, 2)
        _LIMITS = Limits(
            bandwidth={t: _core.read_bandwidth(GIB, t, 7) for t in threads},
            f32_flops={t: _core.peak_flops("f32", t) or float("nan") for t in threads},
            i8_ops={t: _core.peak_flops("i8", t) for t in threads},
        )
    return _LIMITS


@pytest.fixture(scope="session")
def machine_limits() -> Limits:
    return limits()


def pytest_benchmark_update_machine_info(
    config: Any, machine_info: dict[str, Any]
) -> None:
    """Records the limits and the BLAS numpy used next to the results."""
    from threadpoolctl import threadpool_info

    machine_info["lfr_limits"] = {
        k: {str(t): v for t, v in d.items()} for k, d in asdict(limits()).items()
    }
    machine_info["blas"] = [
        {
            k: info.get(k)
            for k in ("internal_api", "version", "architecture", "num_threads")
        }
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    machine_info["openblas_env"] = {
        k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")
    }
    machine_info["faiss"] = faiss.__version__
    machine_info["numpy"] = np.__version__
    machine_info["platform"] = platform.platform()


def unit_rows(n: int, dim: int, seed: int) -> F32:
    """``n`` random unit vectors (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class OneSlotCache:
    """Keeps only the latest value: large watchlists are built one at a time."""

    def __init__(self) -> None:
        self.key: Any = None
        self.value: Any = None

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        if key != self.key:
            self.key, self.value = None, None  # free the old one first
            self.value = build()
            self.key = key
        return self.value


# The model fixtures of the test suite, which skip with the fix where a model is
# missing.
from tests.conftest import embedder_path, yunet_path  # noqa: E402, F401
