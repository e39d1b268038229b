//! Python wrappers of `secure`: the `SecureBuffer` class over a `SecureRegion`, the
//! process-hardening functions and the forensic scan.
//!
//! numpy views of a buffer go through a `SecureExport`, a small object whose
//! `__array_interface__` hands numpy the region's address (the abi3 build cannot export
//! the buffer protocol before CPython 3.11). Each export counts as one view from its
//! creation until the last array that uses it is gone (numpy keeps it as the arrays'
//! base), so `close()` can refuse while a view exists; each export holds a reference
//! to the buffer, so garbage collection cannot free the memory under it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::error::Error;
use crate::secure::{process, SecureRegion};

/// Locked, undumpable, wipe-on-fork memory (see `lfr.SecureBuffer`).
#[pyclass(subclass, weakref, name = "SecureBuffer", module = "lfr._core")]
pub struct PySecureBuffer {
    region: Option<SecureRegion>,
    nbytes: usize,
    views: Arc<AtomicUsize>,
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
    #[pyo3(signature = (nbytes, allow_unlocked = false))]
    fn new(py: Python<'_>, nbytes: usize, allow_unlocked: bool) -> PyResult<Self> {
        let region = py.detach(|| SecureRegion::new(nbytes, allow_unlocked))?;
        Ok(PySecureBuffer {
            region: Some(region),
            nbytes,
            views: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Zeroizes the buffer (volatile writes and a compiler fence).
    fn wipe(&mut self) -> PyResult<()> {
        self.region
            .as_mut()
            .ok_or_else(|| PyErr::from(Error::BufferClosed))?
            .wipe();
        Ok(())
    }

    /// Zeroizes, unlocks and unmaps the buffer now; refused while views exist.
    fn close(&mut self) -> PyResult<()> {
        let views = self.views.load(Ordering::SeqCst);
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

    /// Views (exports still used by numpy arrays) that exist now.
    #[getter]
    fn views(&self) -> usize {
        self.views.load(Ordering::SeqCst)
    }

    /// Start address of the mapping (for checks against /proc/self/smaps).
    #[getter]
    fn address(&self) -> PyResult<usize> {
        Ok(self.region()?.as_ptr() as usize)
    }

    /// A new export of the whole buffer for numpy (`numpy.asarray(export)`); it counts
    /// as a view until it and every array made from it are gone.
    fn export(slf: &Bound<'_, Self>) -> PyResult<SecureExport> {
        let this = slf.borrow();
        let address = this.region()?.as_ptr() as usize;
        this.views.fetch_add(1, Ordering::SeqCst);
        Ok(SecureExport {
            owner: slf.clone().unbind(),
            address,
            nbytes: this.nbytes,
            views: Arc::clone(&this.views),
        })
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
                    self.views()
                )
            }
        }
    }
}

/// One export of a `SecureBuffer`'s memory to numpy (see the module comment).
#[pyclass(frozen, name = "SecureExport", module = "lfr._core")]
pub struct SecureExport {
    /// Keeps the buffer, and so the mapping, alive while arrays use this export.
    owner: Py<PySecureBuffer>,
    address: usize,
    nbytes: usize,
    views: Arc<AtomicUsize>,
}

#[pymethods]
impl SecureExport {
    /// numpy's array interface (version 3): writable `uint8[nbytes]` at the buffer's
    /// address.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, [self.nbytes])?)?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (self.address, false))?;
        Ok(d)
    }

    /// The buffer this export views.
    #[getter]
    fn owner(&self, py: Python<'_>) -> Py<PySecureBuffer> {
        self.owner.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        format!("SecureExport(nbytes={})", self.nbytes)
    }

    /// Lets the cycle collector see the buffer it keeps alive, so that a subclass of
    /// SecureBuffer whose `__dict__` holds one of its own exports is still freed. A
    /// cycle through a numpy array is not: numpy arrays are invisible to the collector,
    /// so a buffer that stores a view of itself stays mapped until the process ends.
    /// Never store views of a buffer on the buffer (lfr.SecureBuffer's docstring).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)
    }
}

impl Drop for SecureExport {
    fn drop(&mut self) {
        self.views.fetch_sub(1, Ordering::SeqCst);
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

#[cfg(feature = "forensic-scan")]
pub use scanning::{scan_memory, scan_process};

/// The forensic scan's Python functions (feature `forensic-scan`).
#[cfg(feature = "forensic-scan")]
mod scanning {
    use pyo3::exceptions::{PyException, PyTypeError};
    use pyo3::prelude::*;

    use crate::py_buffer;
    use crate::secure::scan;

    /// One hit of `scan_memory`: (secret index, block index, address, mapping name).
    type PyHit = (usize, usize, usize, String);
    /// What `scan_memory` returns.
    type PyScan = (Vec<PyHit>, Vec<usize>, u64, u64, usize);

    /// Scans this process's readable memory for 64-byte runs of masked secrets (see
    /// `secure::scan`). Returns `(hits, needles per secret, bytes scanned, bytes unreadable,
    /// regions)`.
    #[pyfunction]
    pub fn scan_memory(
        py: Python<'_>,
        masked: Vec<Bound<'_, PyAny>>,
        key: &[u8],
    ) -> PyResult<PyScan> {
        scan_with(py, None, masked, key)
    }

    /// Scans another process's readable memory (`/proc/PID/mem`) the same way as
    /// `scan_memory`, allocating nothing in it.
    #[pyfunction]
    pub fn scan_process(
        py: Python<'_>,
        pid: u32,
        masked: Vec<Bound<'_, PyAny>>,
        key: &[u8],
    ) -> PyResult<PyScan> {
        scan_with(py, Some(pid), masked, key)
    }

    fn scan_with(
        py: Python<'_>,
        pid: Option<u32>,
        masked: Vec<Bound<'_, PyAny>>,
        key: &[u8],
    ) -> PyResult<PyScan> {
        let mut copies = Vec::with_capacity(masked.len());
        for obj in &masked {
            let wrong =
                || PyTypeError::new_err("masked secrets must be C-contiguous uint8 buffers");
            let ndim = py_buffer::borrow::<u8>(obj, false)
                .map_err(|r| r.explain(py, wrong()))?
                .shape()
                .len();
            let (copy, _) =
                py_buffer::read::<u8>(obj, "a masked secret", "uint8", ndim).map_err(|e| {
                    // An interrupt while exporting stays an interrupt.
                    if e.is_instance_of::<PyException>(py) {
                        wrong()
                    } else {
                        e
                    }
                })?;
            copies.push(copy);
        }
        let key = key.to_vec();
        let report = py.detach(|| {
            let slices: Vec<&[u8]> = copies.iter().map(|c| c.as_slice()).collect();
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
}

/// The system page size in bytes.
#[pyfunction]
pub fn page_size() -> usize {
    process::page_size()
}
