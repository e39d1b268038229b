//! Python wrapper of `matching::Matcher`: borrows numpy buffers with the GIL held,
//! copies them into Rust memory (zeroized when dropped: they hold embeddings), and runs
//! the work with the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::Error;
use crate::matching::{Dtype, Kernel, Matcher, Memory};
use crate::py_buffer::{read, write};

/// Names of the kernels this CPU can run, best last.
#[pyfunction]
pub fn available_kernels() -> Vec<&'static str> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.available())
        .map(Kernel::name)
        .collect()
}

/// Exact cosine-similarity matcher (see `lfr.Matcher` for the documented API).
#[pyclass(name = "Matcher", module = "lfr._core")]
pub struct PyMatcher {
    inner: Matcher,
}

#[pymethods]
impl PyMatcher {
    #[new]
    #[pyo3(signature = (
        dim, dtype = "f32", threads = None, kernel = None, rerank = true, *,
        secure = false, allow_unlocked = false
    ))]
    fn new(
        dim: usize,
        dtype: &str,
        threads: Option<usize>,
        kernel: Option<&str>,
        rerank: bool,
        secure: bool,
        allow_unlocked: bool,
    ) -> PyResult<Self> {
        let dtype = Dtype::parse(dtype).ok_or_else(|| {
            PyValueError::new_err(format!(
                "dtype must be \"f32\", \"f16\" or \"i8\", got {dtype:?}"
            ))
        })?;
        let kernel = match kernel {
            None | Some("auto") => None,
            Some(name) => Some(Kernel::parse(name).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "kernel must be one of \"auto\", \"scalar\", \"avx2\", \"avx512\", \
                     \"neon\", got {name:?}"
                ))
            })?),
        };
        let memory = if secure {
            Memory::Secure { allow_unlocked }
        } else {
            Memory::Heap
        };
        Ok(PyMatcher {
            inner: Matcher::new(dim, dtype, threads, kernel, rerank, memory)?,
        })
    }

    /// Adds `ids` (int64[n]) with `vectors` (float32[n, dim]).
    fn add(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (ids, _) = read::<i64>(ids, "ids", "int64", 1)?;
        let (vectors, shape) = read::<f32>(vectors, "vectors", "float32", 2)?;
        if shape[1] != self.inner.dim() {
            return Err(Error::Dim {
                expected: self.inner.dim(),
                got: shape[1],
            }
            .into());
        }
        if shape[0] != ids.len() {
            return Err(Error::Length {
                what: "rows of vectors for the number of ids",
                expected: ids.len(),
                got: shape[0],
            }
            .into());
        }
        let inner = &self.inner;
        Ok(py.detach(|| inner.add(&ids, &vectors))?)
    }

    /// Removes `ids` (int64[n]); unknown ids raise KeyError and remove nothing.
    fn remove(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<()> {
        let (ids, _) = read::<i64>(ids, "ids", "int64", 1)?;
        let inner = &self.inner;
        Ok(py.detach(|| inner.remove(&ids))?)
    }

    /// Searches `queries` (float32[b, dim]) and writes the `k` best ids and scores into
    /// `out_ids` (int64[b, k]) and `out_scores` (float32[b, k]).
    fn search(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: usize,
        out_ids: &Bound<'_, PyAny>,
        out_scores: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let (queries, shape) = read::<f32>(queries, "queries", "float32", 2)?;
        if shape[1] != self.inner.dim() {
            return Err(Error::Dim {
                expected: self.inner.dim(),
                got: shape[1],
            }
            .into());
        }
        let inner = &self.inner;
        let result = py.detach(|| inner.search(&queries, k))?;
        write(out_ids, "out_ids", &result.ids)?;
        write(out_scores, "out_scores", &result.scores)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, id: i64) -> bool {
        self.inner.contains(id)
    }

    /// Vector dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Storage precision: "f32", "f16" or "i8".
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype().name()
    }

    /// Kernel in use: "scalar", "avx2", "avx512" or "neon".
    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel().name()
    }

    /// Most threads one search uses.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// Whether f16/i8 candidates are re-ranked with exact f32 copies.
    #[getter]
    fn rerank(&self) -> bool {
        self.inner.rerank()
    }

    /// Whether the vectors live in locked, undumpable memory.
    #[getter]
    fn secure(&self) -> bool {
        self.inner.memory() != Memory::Heap
    }

    /// Bytes of vector storage held.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.nbytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "Matcher(dim={}, dtype={:?}, size={}, kernel={:?}, threads={}{})",
            self.inner.dim(),
            self.inner.dtype().name(),
            self.inner.len(),
            self.inner.kernel().name(),
            self.inner.threads(),
            if self.secure() { ", secure=True" } else { "" }
        )
    }
}
