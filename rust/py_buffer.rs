//! Reading and writing numpy arrays through the buffer protocol, in the abi3 build.
//!
//! pyo3 offers `PyBuffer` only where the buffer protocol is part of the limited API
//! (CPython 3.11 on), and lfr's one wheel serves 3.9 on. The protocol's two functions
//! and its `Py_buffer` struct have had the same signatures and layout since CPython 3.3
//! (the 3.11 stable ABI took them over unchanged), and every CPython exports the
//! functions, so they are declared here and used the same way on every version. The
//! cross-Python smoke tests (scripts/test-pythons.sh) load the wheel on 3.9, 3.12 and
//! 3.13.
//!
//! Nothing here builds a Rust slice over the array's memory: other threads (numpy or
//! OpenCV with the GIL released) may write it at any time, so it is only ever read or
//! written through raw pointers, byte by byte copies into Rust-owned vectors.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::{ffi, PyErr};
use zeroize::{Zeroize, Zeroizing};

/// CPython's `Py_buffer` (Include/pybuffer.h), the same layout from 3.3 on.
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

const PYBUF_WRITABLE: c_int = 0x0001;
const PYBUF_FORMAT: c_int = 0x0004;
const PYBUF_ND: c_int = 0x0008;
const PYBUF_STRIDES: c_int = 0x0010 | PYBUF_ND;

/// An element type as the buffer protocol's `struct` format names it.
pub trait Item: Copy + Default + Zeroize {
    /// The format letters of this type's kind (their size is checked separately).
    const KINDS: &'static [u8];
}

impl Item for u8 {
    const KINDS: &'static [u8] = b"B";
}
impl Item for i64 {
    const KINDS: &'static [u8] = b"bhilq";
}
impl Item for f32 {
    const KINDS: &'static [u8] = b"efd";
}
impl Item for f64 {
    const KINDS: &'static [u8] = b"efd";
}

/// A buffer export of a Python object, released on drop (the GIL is held: `'py`).
pub struct Borrowed<'py> {
    view: Box<RawBuffer>,
    _gil: PhantomData<Python<'py>>,
}

impl<'py> Borrowed<'py> {
    /// Asks `obj` for a strided view with its format, writable if `writable`.
    fn get(obj: &Bound<'py, PyAny>, writable: bool) -> Result<Borrowed<'py>, Refusal> {
        let mut view = Box::new(RawBuffer {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 1,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        });
        let flags = PYBUF_STRIDES | PYBUF_FORMAT | if writable { PYBUF_WRITABLE } else { 0 };
        // SAFETY: the GIL is held (`Bound<'py>`), `obj` is a live object and `view` a
        // valid, boxed `Py_buffer` that stays put until `PyBuffer_Release` in drop.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            // The exporter's error says why (wrong type, read-only, ...): it becomes the
            // cause of ours (see `Refusal::explain`).
            return Err(Refusal(PyErr::take(obj.py())));
        }
        Ok(Borrowed {
            view,
            _gil: PhantomData,
        })
    }

    fn ndim(&self) -> usize {
        usize::try_from(self.view.ndim).unwrap_or(0)
    }

    /// The dimensions as the export gives them (no copy: searches call this per array).
    fn dims(&self) -> &[ffi::Py_ssize_t] {
        if self.view.shape.is_null() || self.ndim() == 0 {
            // Only a 0-d export may leave it out (PyBUF_STRIDES implies PyBUF_ND).
            return &[];
        }
        // SAFETY: with PyBUF_ND asked for, a non-null `shape` holds `ndim` entries that
        // live as long as the export, which `&self` borrows.
        unsafe { std::slice::from_raw_parts(self.view.shape, self.ndim()) }
    }

    /// The byte strides as the export gives them; None: C-contiguous.
    fn raw_strides(&self) -> Option<&[ffi::Py_ssize_t]> {
        if self.view.strides.is_null() || self.ndim() == 0 {
            return None;
        }
        // SAFETY: with PyBUF_STRIDES asked for, a non-null `strides` holds `ndim`
        // entries that live as long as the export, which `&self` borrows.
        Some(unsafe { std::slice::from_raw_parts(self.view.strides, self.ndim()) })
    }

    /// The dimensions.
    pub fn shape(&self) -> Vec<usize> {
        self.dims().iter().map(|&d| d as usize).collect()
    }

    /// The byte strides (C-contiguous ones where the exporter gave none).
    pub fn strides(&self) -> Vec<isize> {
        if let Some(strides) = self.raw_strides() {
            return strides.to_vec();
        }
        let dims = self.dims();
        let mut out = vec![0isize; dims.len()];
        let mut step = self.view.itemsize;
        for i in (0..dims.len()).rev() {
            out[i] = step;
            step *= dims[i];
        }
        out
    }

    /// Number of items, where the shape, the item size and the export's byte length
    /// agree (no negative or overflowing dimension, `len == items * itemsize`); None
    /// for an exporter whose header does not add up, which is never copied from.
    pub fn consistent_item_count(&self) -> Option<usize> {
        let mut items: usize = 1;
        for &d in self.dims() {
            items = items.checked_mul(usize::try_from(d).ok()?)?;
        }
        let itemsize = usize::try_from(self.view.itemsize).ok()?;
        let len = usize::try_from(self.view.len).ok()?;
        (items.checked_mul(itemsize)? == len).then_some(items)
    }

    /// Whether the items are `T` (kind and size).
    fn holds<T: Item>(&self) -> bool {
        if self.view.format.is_null() {
            return false;
        }
        // SAFETY: a non-null `format` is a NUL-terminated string owned by the export.
        let format = unsafe { CStr::from_ptr(self.view.format) }.to_bytes();
        let letters = match format {
            [b'@' | b'=' | b'<', rest @ ..] if cfg!(target_endian = "little") => rest,
            [b'@' | b'=', rest @ ..] => rest,
            other => other,
        };
        matches!(letters, [c] if T::KINDS.contains(c))
            && usize::try_from(self.view.itemsize).ok() == Some(std::mem::size_of::<T>())
    }

    /// Whether the items are laid out in C order without gaps.
    pub fn is_c_contiguous(&self) -> bool {
        let dims = self.dims();
        if dims.contains(&0) {
            return true;
        }
        let Some(strides) = self.raw_strides() else {
            return true; // the buffer protocol's way of saying C-contiguous
        };
        let mut step = self.view.itemsize;
        for (&n, &s) in dims.iter().zip(strides).rev() {
            if n != 1 && s != step {
                return false;
            }
            step *= n;
        }
        true
    }

    /// The first item's address.
    pub fn ptr(&self) -> *mut u8 {
        self.view.buf.cast::<u8>()
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
        // once; `'py` proves the GIL is still held (a `Borrowed` cannot cross `detach`).
        unsafe { PyBuffer_Release(&mut *self.view) }
    }
}

/// Why a buffer could not be borrowed: the exporter's own error, if it raised one (none
/// where it exported items of another type).
pub struct Refusal(Option<PyErr>);

impl Refusal {
    /// The exporter's error where it is not an `Exception` (KeyboardInterrupt,
    /// SystemExit): that one must reach the caller whatever else is reported.
    fn interrupt(self, py: Python<'_>) -> Option<PyErr> {
        self.0.filter(|e| !e.is_instance_of::<PyException>(py))
    }

    /// Whether the exporter's error is such an interrupt.
    fn is_interrupt(&self, py: Python<'_>) -> bool {
        self.0
            .as_ref()
            .is_some_and(|e| !e.is_instance_of::<PyException>(py))
    }

    /// `ours`, a clearer error, with the exporter's error as its `__cause__`; an exporter's
    /// `BaseException` that is not an `Exception` (KeyboardInterrupt, SystemExit) is
    /// returned itself, unreplaced.
    pub fn explain(self, py: Python<'_>, ours: PyErr) -> PyErr {
        match self.0 {
            Some(theirs) if !theirs.is_instance_of::<PyException>(py) => theirs,
            Some(theirs) => {
                ours.set_cause(py, Some(theirs));
                ours
            }
            None => ours,
        }
    }
}

/// Borrows a buffer of `T` items (any exporter: numpy arrays, memoryviews, ...).
pub fn borrow<'py, T: Item>(
    obj: &Bound<'py, PyAny>,
    writable: bool,
) -> Result<Borrowed<'py>, Refusal> {
    let buf = Borrowed::get(obj, writable)?;
    if buf.holds::<T>() {
        Ok(buf)
    } else {
        Err(Refusal(None))
    }
}

/// Borrows a C-contiguous buffer of `T` with `ndim` dimensions and copies it out into a
/// vector that is zeroized when dropped.
pub fn read<T: Item>(
    obj: &Bound<'_, PyAny>,
    name: &str,
    type_name: &str,
    ndim: usize,
) -> PyResult<(Zeroizing<Vec<T>>, Vec<usize>)> {
    let buf = borrow::<T>(obj, false).map_err(|r| {
        r.explain(
            obj.py(),
            PyTypeError::new_err(format!("{name} must be a {type_name} array")),
        )
    })?;
    if buf.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must have {ndim} dimension(s), got {}",
            buf.ndim()
        )));
    }
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous"
        )));
    }
    let count = buf.consistent_item_count().ok_or_else(|| {
        PyValueError::new_err(format!(
            "{name}'s buffer is inconsistent: its length is not its shape times its item size"
        ))
    })?;
    let mut copy = Zeroizing::new(vec![T::default(); count]);
    if count > 0 {
        // SAFETY: the export is C-contiguous with `count` items of `size_of::<T>()` bytes
        // (checked by `holds`), alive until `buf` drops; `copy` owns as many bytes. The
        // copy is bytewise, so the source need not be aligned.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.ptr().cast_const(),
                copy.as_mut_ptr().cast::<u8>(),
                count * std::mem::size_of::<T>(),
            );
        }
    }
    Ok((copy, buf.shape()))
}

/// Copies `data` into a writable, C-contiguous buffer of exactly `data.len()` items.
pub fn write<T: Item>(obj: &Bound<'_, PyAny>, name: &str, data: &[T]) -> PyResult<()> {
    let wrong = || {
        PyValueError::new_err(format!(
            "{name} must be a writable, C-contiguous array of {} items of the right dtype",
            data.len()
        ))
    };
    let buf = match borrow::<T>(obj, true) {
        Ok(buf) => buf,
        Err(refusal) if refusal.is_interrupt(obj.py()) => {
            // Not asked again: the interrupt is the answer.
            return Err(refusal.explain(obj.py(), wrong()));
        }
        Err(refusal) => {
            let ours = match Borrowed::get(obj, false) {
                Ok(b) if b.holds::<T>() => wrong(),
                Ok(_) => PyTypeError::new_err(format!("{name} has the wrong dtype")),
                Err(again) => match again.interrupt(obj.py()) {
                    Some(interrupt) => return Err(interrupt),
                    None => PyTypeError::new_err(format!("{name} has the wrong dtype")),
                },
            };
            return Err(refusal.explain(obj.py(), ours));
        }
    };
    if buf.view.readonly != 0
        || !buf.is_c_contiguous()
        || buf.consistent_item_count() != Some(data.len())
    {
        return Err(wrong());
    }
    if !data.is_empty() {
        // SAFETY: the writable export holds `data.len()` contiguous items of `T`'s size,
        // alive until `buf` drops; the copy is bytewise (no alignment needed) and the
        // regions cannot overlap (`data` is Rust-owned).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr().cast::<u8>(),
                buf.ptr(),
                std::mem::size_of_val(data),
            );
        }
    }
    Ok(())
}
