//! Numpy arrays in and out of the native core: checked, copied into vectors that are
//! zeroized when dropped (they may hold face data), and written back.

use pyo3::buffer::{Element, PyBuffer};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use zeroize::{Zeroize, Zeroizing};

/// Borrows a C-contiguous buffer of `T` with `ndim` dimensions and copies it out into a
/// vector that is zeroized when dropped.
pub fn read<T: Element + Copy + Default + Zeroize>(
    py: Python<'_>,
    obj: &PyAny,
    name: &str,
    type_name: &str,
    ndim: usize,
) -> PyResult<(Zeroizing<Vec<T>>, Vec<usize>)> {
    let buf = PyBuffer::<T>::get(obj)
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a {type_name} array")))?;
    if buf.dimensions() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must have {ndim} dimension(s), got {}",
            buf.dimensions()
        )));
    }
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous"
        )));
    }
    let mut copy = Zeroizing::new(vec![T::default(); buf.item_count()]);
    buf.copy_to_slice(py, &mut copy)?;
    Ok((copy, buf.shape().to_vec()))
}

/// Copies `data` into a writable, C-contiguous buffer of exactly `data.len()` items.
pub fn write<T: Element + Copy>(
    py: Python<'_>,
    obj: &PyAny,
    name: &str,
    data: &[T],
) -> PyResult<()> {
    let buf = PyBuffer::<T>::get(obj)
        .map_err(|_| PyTypeError::new_err(format!("{name} has the wrong dtype")))?;
    if buf.readonly() || !buf.is_c_contiguous() || buf.item_count() != data.len() {
        return Err(PyValueError::new_err(format!(
            "{name} must be a writable, C-contiguous array of {} items",
            data.len()
        )));
    }
    buf.copy_from_slice(py, data)
}
