//! lfr's native core: exact SIMD watchlist matching (and, in later issues, secure
//! memory). Pure Rust modules; the Python bindings live behind the `python` feature.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod error;
pub mod machine;
pub mod matching;

#[cfg(feature = "python")]
mod py_machine;
#[cfg(feature = "python")]
mod py_matcher;

#[cfg(feature = "python")]
use pyo3::prelude::*;

/// The `lfr._core` extension module: registration only.
#[cfg(feature = "python")]
#[pymodule]
fn _core(_py: Python<'_>, m: &PyModule) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py_matcher::PyMatcher>()?;
    m.add_function(wrap_pyfunction!(py_matcher::available_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(py_machine::read_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(py_machine::peak_flops, m)?)?;
    Ok(())
}
