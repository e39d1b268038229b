//! Python wrappers for `crate::machine` (used by the benchmarks).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::machine::{self, Arith};

/// Best-of-`repeats` memory read bandwidth in bytes per second.
#[pyfunction]
pub fn read_bandwidth(py: Python<'_>, nbytes: usize, threads: usize, repeats: usize) -> f64 {
    py.detach(|| machine::read_bandwidth(nbytes, threads, repeats))
}

/// Peak operations per second (`kind` is "f32" for FMA, "i8" for int8 dot products),
/// or None where the CPU lacks the instructions.
#[pyfunction]
pub fn peak_flops(py: Python<'_>, kind: &str, threads: usize) -> PyResult<Option<f64>> {
    let kind = match kind {
        "f32" => Arith::F32Fma,
        "i8" => Arith::I8Dot,
        other => {
            return Err(PyValueError::new_err(format!(
                "kind must be \"f32\" or \"i8\", got {other:?}"
            )))
        }
    };
    Ok(py.detach(|| machine::peak_ops(kind, threads)))
}
