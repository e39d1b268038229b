//! lfr's native core: exact SIMD watchlist matching, secure memory for faces and
//! dlib's shape predictor. Pure
//! Rust modules; the Python bindings live behind the `python` feature.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod error;
#[cfg(feature = "bench-probes")]
pub mod machine;
pub mod matching;
pub mod secure;
pub mod shape;

#[cfg(feature = "python")]
mod py_buffer;
#[cfg(all(feature = "python", feature = "bench-probes"))]
mod py_machine;
#[cfg(feature = "python")]
mod py_matcher;
#[cfg(feature = "python")]
mod py_secure;
#[cfg(feature = "python")]
mod py_shape;

#[cfg(feature = "python")]
use pyo3::prelude::*;

/// The `lfr._core` extension module: registration only.
#[cfg(feature = "python")]
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py_matcher::PyMatcher>()?;
    m.add_function(wrap_pyfunction!(py_matcher::available_kernels, m)?)?;
    #[cfg(feature = "bench-probes")]
    {
        m.add_function(wrap_pyfunction!(py_machine::read_bandwidth, m)?)?;
        m.add_function(wrap_pyfunction!(py_machine::peak_flops, m)?)?;
    }
    m.add_class::<py_secure::PySecureBuffer>()?;
    m.add_class::<py_secure::SecureExport>()?;
    m.add_function(wrap_pyfunction!(py_secure::memlock_status, m)?)?;
    m.add_function(wrap_pyfunction!(py_secure::harden, m)?)?;
    m.add_function(wrap_pyfunction!(py_secure::hardening, m)?)?;
    #[cfg(feature = "forensic-scan")]
    {
        m.add_function(wrap_pyfunction!(py_secure::scan_memory, m)?)?;
        m.add_function(wrap_pyfunction!(py_secure::scan_process, m)?)?;
    }
    m.add_function(wrap_pyfunction!(py_secure::page_size, m)?)?;
    m.add_class::<py_shape::PyShapeModel>()?;
    Ok(())
}
