//! [`SecureRegion`]: a page-aligned anonymous mapping that is `mlock`ed (never swapped),
//! `MADV_DONTDUMP` (left out of core dumps) and `MADV_WIPEONFORK` (a forked child sees
//! zeros), and that is zeroized with volatile writes on `wipe` and
//! before it is unlocked and unmapped.

use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::secure::process;

/// `MADV_WIPEONFORK` from Linux's `mman-common.h` (kernel 4.14+); the libc crate exports
/// it only from 0.2.15x on, and Debian ships 0.2.139.
#[cfg(target_os = "linux")]
const MADV_WIPEONFORK: libc::c_int = 18;

/// Which protections a region actually has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// `mlock` succeeded: the pages stay in RAM and are never written to swap.
    pub locked: bool,
    /// `MADV_DONTDUMP` succeeded: the pages are left out of core dumps.
    pub dontdump: bool,
    /// `MADV_WIPEONFORK` succeeded: a forked child sees zeros instead of a copy.
    pub wipeonfork: bool,
}

impl Protection {
    /// All three protections hold.
    pub fn complete(&self) -> bool {
        self.locked && self.dontdump && self.wipeonfork
    }
}

/// An owned, zeroized-on-drop mapping of `len` bytes (rounded up to whole pages).
pub struct SecureRegion {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    protection: Protection,
}

// SAFETY: the region exclusively owns its mapping (no other Rust value points into it) and
// every access goes through `&self`/`&mut self`, so moving it to another thread is sound.
unsafe impl Send for SecureRegion {}
// SAFETY: `&SecureRegion` only reads the pointer, length and flags; writes to the bytes need
// `&mut self` or a raw pointer obtained under the caller's own synchronisation.
unsafe impl Sync for SecureRegion {}

impl SecureRegion {
    /// Maps, locks and protects `len` bytes (`len >= 1`).
    ///
    /// With `allow_unprotected == false` (the default everywhere above this layer) the call
    /// fails closed: if the memory cannot be locked, or a protection is refused by the
    /// kernel, nothing is returned. With `true`, whatever could be applied is applied and
    /// [`SecureRegion::protection`] tells what is missing.
    pub fn new(len: usize, allow_unprotected: bool) -> Result<SecureRegion> {
        if len == 0 {
            return Err(Error::Invalid("nbytes must be at least 1".into()));
        }
        let page = process::page_size();
        let map_len = len
            .checked_add(page - 1)
            .map(|n| n / page * page)
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| Error::Invalid(format!("nbytes {len} is too large")))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no
        // existing memory is affected. The result is checked against MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(Error::Os {
                what: "mmap",
                errno: process::errno(),
            });
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or(Error::Os {
            what: "mmap",
            errno: 0,
        })?;
        let mut region = SecureRegion {
            ptr,
            len,
            map_len,
            protection: Protection {
                locked: false,
                dontdump: false,
                wipeonfork: false,
            },
        };
        // Advice first, so that a locked page is never also a dumpable one.
        region.protection.dontdump = region.advise(dontdump_advice());
        region.protection.wipeonfork = region.advise(wipeonfork_advice());
        // SAFETY: `ptr..ptr + map_len` is the mapping created above.
        let locked = unsafe { libc::mlock(raw, map_len) } == 0;
        let lock_errno = process::errno();
        region.protection.locked = locked;
        if !allow_unprotected {
            if !locked {
                let status = process::memlock_status();
                // Dropping `region` unmaps it; nothing was written yet.
                return Err(Error::LockFailed {
                    requested: map_len as u64,
                    limit: status.limit,
                    locked: status.locked,
                    errno: lock_errno,
                });
            }
            if !region.protection.complete() {
                return Err(Error::Unprotected {
                    dontdump: region.protection.dontdump,
                    wipeonfork: region.protection.wipeonfork,
                });
            }
        }
        Ok(region)
    }

    fn advise(&self, advice: Option<libc::c_int>) -> bool {
        match advice {
            // SAFETY: the range is this region's own mapping; advice changes no contents.
            Some(a) => unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.map_len, a) == 0 },
            None => false,
        }
    }

    /// Usable bytes (as requested).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region holds at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes mapped (whole pages).
    pub fn mapped_len(&self) -> usize {
        self.map_len
    }

    /// The protections that hold.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Start of the usable bytes (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, for reading.
    ///
    /// # Safety
    ///
    /// Nothing else (a numpy view of an exported buffer, another thread) may write the
    /// region while the slice lives. The matcher's private storage qualifies; a
    /// `SecureBuffer` handed to Python does not, and is never read through this.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is readable for `map_len >= len` bytes and lives as long as
        // `self`; mappings start zero-filled, so every byte is initialised; the caller
        // rules out writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, for writing.
    ///
    /// # Safety
    ///
    /// As for `as_slice`: nothing else may read or write the region meanwhile.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only Rust reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Zeroizes every byte that can have been written, with volatile stores followed by a
    /// compiler fence, eight bytes at a time.
    pub fn wipe(&mut self) {
        let words = self.len.div_ceil(8);
        let base = self.ptr.as_ptr().cast::<u64>();
        for i in 0..words {
            // SAFETY: the mapping is page-aligned (so 8-byte aligned) and `words * 8 <=
            // map_len` because `map_len` is `len` rounded up to a page, a multiple of 8.
            // Views exported to foreign code may alias these bytes, so no Rust reference
            // is made over them: volatile stores through the raw pointer, which cannot be
            // elided or merged; a concurrent foreign write can only race on the values.
            unsafe { base.add(i).write_volatile(0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SecureRegion {
    fn drop(&mut self) {
        self.wipe();
        let raw = self.ptr.as_ptr().cast::<libc::c_void>();
        // SAFETY: unlocking and unmapping this region's own mapping, which no reference
        // outlives (`&mut self` in drop). Failures cannot be reported from drop; the pages
        // are already zeroized either way.
        unsafe {
            if self.protection.locked {
                libc::munlock(raw, self.map_len);
            }
            libc::munmap(raw, self.map_len);
        }
    }
}

#[cfg(target_os = "linux")]
fn dontdump_advice() -> Option<libc::c_int> {
    Some(libc::MADV_DONTDUMP)
}

#[cfg(target_os = "linux")]
fn wipeonfork_advice() -> Option<libc::c_int> {
    Some(MADV_WIPEONFORK)
}

#[cfg(not(target_os = "linux"))]
fn dontdump_advice() -> Option<libc::c_int> {
    None
}

#[cfg(not(target_os = "linux"))]
fn wipeonfork_advice() -> Option<libc::c_int> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_region_is_zeroed_aligned_and_protected() {
        let r = SecureRegion::new(5000, true).unwrap();
        assert_eq!(r.len(), 5000);
        assert_eq!(r.mapped_len() % process::page_size(), 0);
        assert!(r.mapped_len() >= 5000);
        assert_eq!(r.as_ptr() as usize % process::page_size(), 0);
        // SAFETY: the region is owned by this test only.
        assert!(unsafe { r.as_slice() }.iter().all(|&b| b == 0));
        #[cfg(target_os = "linux")]
        {
            assert!(r.protection().dontdump);
            assert!(r.protection().wipeonfork);
        }
    }

    #[test]
    fn wipe_zeroes_every_written_byte() {
        for len in [1usize, 7, 8, 9, 4095, 4096, 4097, 150 * 150 * 3] {
            let mut r = SecureRegion::new(len, true).unwrap();
            // SAFETY: the region is owned by this test only.
            unsafe { r.as_mut_slice() }.fill(0xA5);
            r.wipe();
            // SAFETY: as above.
            assert!(unsafe { r.as_slice() }.iter().all(|&b| b == 0), "len {len}");
        }
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(matches!(SecureRegion::new(0, true), Err(Error::Invalid(_))));
    }

    #[test]
    fn absurd_length_is_refused() {
        assert!(SecureRegion::new(usize::MAX - 10, true).is_err());
    }
}
