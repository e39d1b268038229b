//! Python wrapper of `matching::Matcher`: borrows numpy buffers with the GIL held,
//! copies them into Rust memory (zeroized when dropped: they hold embeddings), and runs
//! the work with the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::Error;
use crate::matching::{Dtype, Kernel, Matcher, Memory};
use crate::py_array::{read, write};

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
#[pyclass(
    name = "Matcher",
    module = "lfr._core",
    text_signature = "(dim, dtype=\"f32\", threads=None, kernel=None, rerank=True, *, \
                      secure=False, allow_unlocked=False)"
)]
pub struct PyMatcher {
    inner: Matcher,
}

#[pymethods]
impl PyMatcher {
    #[new]
    #[args(
        dtype = "\"f32\"",
        threads = "None",
        kernel = "None",
        rerank = "true",
        "*",
        secure = "false",
        allow_unlocked = "false"
    )]
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
    #[pyo3(text_signature = "($self, ids, vectors)")]
    fn add(&self, py: Python<'_>, ids: &PyAny, vectors: &PyAny) -> PyResult<()> {
        let (ids, _) = read::<i64>(py, ids, "ids", "int64", 1)?;
        let (vectors, shape) = read::<f32>(py, vectors, "vectors", "float32", 2)?;
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
        Ok(py.allow_threads(|| inner.add(&ids, &vectors))?)
    }

    /// Removes `ids` (int64[n]); unknown ids raise KeyError and remove nothing.
    #[pyo3(text_signature = "($self, ids)")]
    fn remove(&self, py: Python<'_>, ids: &PyAny) -> PyResult<()> {
        let (ids, _) = read::<i64>(py, ids, "ids", "int64", 1)?;
        let inner = &self.inner;
        Ok(py.allow_threads(|| inner.remove(&ids))?)
    }

    /// Searches `queries` (float32[b, dim]) and writes the `k` best ids and scores into
    /// `out_ids` (int64[b, k]) and `out_scores` (float32[b, k]).
    #[pyo3(text_signature = "($self, queries, k, out_ids, out_scores)")]
    fn search(
        &self,
        py: Python<'_>,
        queries: &PyAny,
        k: usize,
        out_ids: &PyAny,
        out_scores: &PyAny,
    ) -> PyResult<()> {
        let (queries, shape) = read::<f32>(py, queries, "queries", "float32", 2)?;
        if shape[1] != self.inner.dim() {
            return Err(Error::Dim {
                expected: self.inner.dim(),
                got: shape[1],
            }
            .into());
        }
        let inner = &self.inner;
        let result = py.allow_threads(|| inner.search(&queries, k))?;
        write(py, out_ids, "out_ids", &result.ids)?;
        write(py, out_scores, "out_scores", &result.scores)
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
