//! Python wrappers of `secure`: the `SecureBuffer` class (a writable buffer-protocol
//! exporter over a `SecureRegion`), the process-hardening functions and the forensic scan.

use std::cell::Cell;
use std::os::raw::{c_char, c_int, c_void};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::prelude::*;
use pyo3::{ffi, AsPyPointer};

use crate::error::Error;
use crate::secure::{process, scan, SecureRegion};

/// The buffer protocol's format string for unsigned bytes.
static FORMAT_U8: &[u8; 2] = b"B\0";

/// Locked, undumpable, wipe-on-fork memory (see `lfr.SecureBuffer`).
#[pyclass(
    subclass,
    name = "SecureBuffer",
    module = "lfr._core",
    text_signature = "(nbytes, allow_unlocked=False)"
)]
pub struct PySecureBuffer {
    region: Option<SecureRegion>,
    nbytes: usize,
    views: Cell<usize>,
}

impl PySecureBuffer {
    fn region(&self) -> PyResult<&SecureRegion> {
        self.region
            .as_ref()
            .ok_or_else(|| Error::BufferClosed.into())
    }
}

#[pymethods]
impl PySecureBuffer {
    #[new]
    #[args(allow_unlocked = "false")]
    fn new(py: Python<'_>, nbytes: usize, allow_unlocked: bool) -> PyResult<Self> {
        let region = py.allow_threads(|| SecureRegion::new(nbytes, allow_unlocked))?;
        Ok(PySecureBuffer {
            region: Some(region),
            nbytes,
            views: Cell::new(0),
        })
    }

    /// Zeroizes the buffer (volatile writes and a compiler fence).
    #[pyo3(text_signature = "($self)")]
    fn wipe(&mut self) -> PyResult<()> {
        self.region
            .as_mut()
            .ok_or_else(|| PyErr::from(Error::BufferClosed))?
            .wipe();
        Ok(())
    }

    /// Zeroizes, unlocks and unmaps the buffer now; refused while views exist.
    #[pyo3(text_signature = "($self)")]
    fn close(&mut self) -> PyResult<()> {
        let views = self.views.get();
        if views > 0 {
            return Err(Error::BufferExported { views }.into());
        }
        // Dropping the region zeroizes, unlocks and unmaps it.
        self.region = None;
        Ok(())
    }

    /// Whether `close()` has run.
    #[getter]
    fn closed(&self) -> bool {
        self.region.is_none()
    }

    /// Usable size in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// Bytes mapped (whole pages).
    #[getter]
    fn mapped_nbytes(&self) -> PyResult<usize> {
        Ok(self.region()?.mapped_len())
    }

    /// The pages are locked in RAM.
    #[getter]
    fn locked(&self) -> PyResult<bool> {
        Ok(self.region()?.protection().locked)
    }

    /// The pages are left out of core dumps.
    #[getter]
    fn dontdump(&self) -> PyResult<bool> {
        Ok(self.region()?.protection().dontdump)
    }

    /// A forked child sees zeros.
    #[getter]
    fn wipeonfork(&self) -> PyResult<bool> {
        Ok(self.region()?.protection().wipeonfork)
    }

    /// Buffer-protocol views (memoryviews, numpy arrays) currently exported.
    #[getter]
    fn views(&self) -> usize {
        self.views.get()
    }

    /// Start address of the mapping (for checks against /proc/self/smaps).
    #[getter]
    fn address(&self) -> PyResult<usize> {
        Ok(self.region()?.as_ptr() as usize)
    }

    fn __len__(&self) -> usize {
        self.nbytes
    }

    fn __repr__(&self) -> String {
        match &self.region {
            None => format!("SecureBuffer(nbytes={}, closed)", self.nbytes),
            Some(r) => {
                let p = r.protection();
                format!(
                    "SecureBuffer(nbytes={}, locked={}, dontdump={}, wipeonfork={}, views={})",
                    self.nbytes,
                    py_bool(p.locked),
                    py_bool(p.dontdump),
                    py_bool(p.wipeonfork),
                    self.views.get()
                )
            }
        }
    }

    /// # Safety
    ///
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: PyRefMut<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("the view pointer is null"));
        }
        let (ptr, len) = {
            let region = slf.region()?;
            (region.as_ptr(), slf.nbytes)
        };
        let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("buffer too large"))?;
        // SAFETY: CPython hands us a valid, writable `Py_buffer`. `obj` takes a strong
        // reference to this object, so the region outlives the view: `close()` refuses
        // while `views > 0`, and the object (and with it the region) cannot be freed while
        // the reference is held. `shape` and `strides` point into the view itself, as the
        // buffer protocol allows for one-dimensional buffers.
        unsafe {
            (*view).obj = ffi::_Py_NewRef(slf.as_ptr());
            (*view).buf = ptr.cast::<c_void>();
            (*view).len = len;
            (*view).readonly = 0;
            (*view).itemsize = 1;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                FORMAT_U8.as_ptr() as *mut c_char
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                std::ptr::addr_of_mut!((*view).len)
            } else {
                std::ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                std::ptr::addr_of_mut!((*view).itemsize)
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        slf.views.set(slf.views.get() + 1);
        Ok(())
    }

    /// # Safety
    ///
    /// Called by CPython once for each view that `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.views.set(self.views.get().saturating_sub(1));
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// `(limit, locked, privileged)`: the soft RLIMIT_MEMLOCK in bytes (None when
/// unlimited), the bytes locked now, and whether CAP_IPC_LOCK lifts the limit.
#[pyfunction]
pub fn memlock_status() -> (Option<u64>, u64, bool) {
    let s = process::memlock_status();
    (s.limit, s.locked, s.privileged)
}

/// Sets RLIMIT_CORE to 0 and PR_SET_DUMPABLE to 0; returns `hardening()` afterwards.
#[pyfunction]
pub fn harden() -> PyResult<(bool, bool)> {
    let h = process::harden()?;
    Ok((h.core_dumps_disabled, h.dumpable))
}

/// `(core_dumps_disabled, dumpable)` as they are now.
#[pyfunction]
pub fn hardening() -> (bool, bool) {
    let h = process::hardening();
    (h.core_dumps_disabled, h.dumpable)
}

/// One hit of `scan_memory`: (secret index, block index, address, mapping name).
type PyHit = (usize, usize, usize, String);
/// What `scan_memory` returns.
type PyScan = (Vec<PyHit>, Vec<usize>, u64, u64, usize);

/// Scans this process's readable memory for 64-byte runs of masked secrets (see
/// `secure::scan`). Returns `(hits, needles per secret, bytes scanned, bytes unreadable,
/// regions)`.
#[pyfunction]
pub fn scan_memory(py: Python<'_>, masked: Vec<&PyAny>, key: &[u8]) -> PyResult<PyScan> {
    scan_with(py, None, masked, key)
}

/// Scans another process's readable memory (`/proc/PID/mem`) the same way as
/// `scan_memory`, allocating nothing in it.
#[pyfunction]
pub fn scan_process(py: Python<'_>, pid: u32, masked: Vec<&PyAny>, key: &[u8]) -> PyResult<PyScan> {
    scan_with(py, Some(pid), masked, key)
}

fn scan_with(
    py: Python<'_>,
    pid: Option<u32>,
    masked: Vec<&PyAny>,
    key: &[u8],
) -> PyResult<PyScan> {
    let mut copies = Vec::with_capacity(masked.len());
    for obj in masked {
        let buf = PyBuffer::<u8>::get(obj)
            .map_err(|_| PyTypeError::new_err("masked secrets must be uint8 buffers"))?;
        copies.push(buf.to_vec(py)?);
    }
    let key = key.to_vec();
    let report = py.allow_threads(|| {
        let slices: Vec<&[u8]> = copies.iter().map(Vec::as_slice).collect();
        match pid {
            None => scan::scan_own_memory(&slices, &key),
            Some(pid) => scan::scan_process(pid, &slices, &key),
        }
    })?;
    let hits = report
        .hits
        .into_iter()
        .map(|h| (h.secret, h.block, h.address, h.mapping))
        .collect();
    Ok((
        hits,
        report.needles,
        report.bytes_scanned,
        report.bytes_unreadable,
        report.regions,
    ))
}

/// The system page size in bytes.
#[pyfunction]
pub fn page_size() -> usize {
    process::page_size()
}
