//! Where the matcher keeps vectors: a 64-byte-aligned, zero-initialised byte buffer on
//! the heap (the default) or in a [`SecureRegion`] (locked, left out of core dumps,
//! zeros in a forked child). A buffer never grows in place: [`Backing::grown`] fills a
//! new one and the caller swaps it in, so the old bytes are zeroized when it is dropped
//! and a failed growth leaves the old buffer untouched.

use zeroize::Zeroize;

use crate::error::Result;
use crate::secure::SecureRegion;

/// Which memory the matcher's vectors live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Memory {
    /// Ordinary heap memory (zeroized before it is freed, but swappable and dumpable).
    #[default]
    Heap,
    /// A [`SecureRegion`]: `mlock`ed, `MADV_DONTDUMP` and `MADV_WIPEONFORK`. Without
    /// `allow_unlocked`, a growth that cannot be locked fails with `Error::LockFailed`.
    Secure {
        /// Accept memory whose protections could not all be applied.
        allow_unlocked: bool,
    },
}

/// One cache line; the unit of heap allocation, so heap buffers are 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl Zeroize for Line {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

enum Store {
    /// Heap lines; also the empty buffer of either kind (it holds no bytes).
    Heap(Vec<Line>),
    /// A page-aligned locked mapping whose length is a multiple of 64.
    Secure(SecureRegion),
}

/// A fixed-length, 64-byte-aligned byte buffer; its length is a multiple of 64.
pub struct Backing {
    memory: Memory,
    store: Store,
}

impl Backing {
    /// An empty buffer that grows into `memory`.
    pub fn new(memory: Memory) -> Backing {
        Backing {
            memory,
            store: Store::Heap(Vec::new()),
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Heap(lines) => lines.len() * 64,
            Store::Secure(region) => region.len(),
        }
    }

    /// Whether the buffer holds no bytes.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// First byte (64-byte aligned; dangling but aligned when empty).
    pub fn as_ptr(&self) -> *const u8 {
        match &self.store {
            Store::Heap(lines) => lines.as_ptr().cast(),
            Store::Secure(region) => region.as_ptr(),
        }
    }

    /// The bytes, for reading.
    pub fn bytes(&self) -> &[u8] {
        match &self.store {
            Store::Heap(lines) => {
                // SAFETY: `Line` is `repr(C)` around `[u8; 64]` with no padding, so the
                // Vec's initialised elements are `len * 64` initialised bytes, borrowed
                // through `&self` for the slice's lifetime.
                unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), lines.len() * 64) }
            }
            // SAFETY: the matcher's region is private (never exported to Python), so
            // nothing writes it while `&self` is borrowed.
            Store::Secure(region) => unsafe { region.as_slice() },
        }
    }

    /// The bytes, for writing.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Heap(lines) => {
                let len = lines.len() * 64;
                // SAFETY: as in `bytes`, borrowed mutably through `&mut self`.
                unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), len) }
            }
            // SAFETY: as in `bytes`, borrowed mutably through `&mut self`.
            Store::Secure(region) => unsafe { region.as_mut_slice() },
        }
    }

    /// The buffer as `len / 4` f32 values, for reading.
    pub fn floats(&self) -> &[f32] {
        let bytes = self.bytes();
        // SAFETY: the start is 64-byte aligned (so 4-byte aligned), the length is a
        // multiple of 64 (so of 4), every byte is initialised and every bit pattern is
        // a valid f32; the slice borrows `self` like `bytes` does.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / 4) }
    }

    /// The buffer as `len / 4` f32 values, for writing.
    pub fn floats_mut(&mut self) -> &mut [f32] {
        let bytes = self.bytes_mut();
        let n = bytes.len() / 4;
        // SAFETY: as in `floats`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), n) }
    }

    /// A new buffer of the same kind, `len` bytes (rounded up to a multiple of 64, at
    /// least the current length), holding this buffer's bytes followed by zeros.
    ///
    /// `self` is not changed; assigning the result over it zeroizes and frees the old
    /// bytes. In secure mode this fails (with nothing allocated) where the memory cannot
    /// be locked and `allow_unlocked` is off.
    pub fn grown(&self, len: usize) -> Result<Backing> {
        let old = self.bytes();
        let len = len.max(old.len()).next_multiple_of(64);
        let store = match self.memory {
            _ if len == 0 => Store::Heap(Vec::new()),
            Memory::Heap => {
                let mut lines: Vec<Line> = Vec::with_capacity(len / 64);
                advise_huge_pages(lines.as_mut_ptr().cast(), len);
                lines.extend(old.chunks_exact(64).map(|c| {
                    let mut line = Line([0; 64]);
                    line.0.copy_from_slice(c);
                    line
                }));
                lines.resize(len / 64, Line([0; 64]));
                Store::Heap(lines)
            }
            Memory::Secure { allow_unlocked } => {
                let mut region = SecureRegion::new(len, allow_unlocked)?;
                // SAFETY: the region was just made and is owned here only.
                let fresh = unsafe { region.as_mut_slice() };
                fresh[..old.len()].copy_from_slice(old);
                Store::Secure(region)
            }
        };
        Ok(Backing {
            memory: self.memory,
            store,
        })
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // A `SecureRegion` wipes itself before it is unlocked and unmapped.
        if let Store::Heap(lines) = &mut self.store {
            lines.zeroize();
        }
    }
}

/// Asks the kernel to back a large, not yet touched allocation with transparent huge
/// pages: a scan then streams through 2 MiB pages, which the hardware prefetcher
/// follows and the TLB covers (4 KiB pages cost up to a third of the bandwidth here).
/// Only advice: nothing changes where the system does not offer it.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(4096);
        let end = (ptr as usize + len) & !4095;
        if end > start && end - start >= HUGE {
            // SAFETY: the range lies inside one live allocation of the caller's, and
            // MADV_HUGEPAGE only changes how the kernel backs it, not its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::process::page_size;

    fn filled(memory: Memory, len: usize) -> Backing {
        let mut b = Backing::new(memory).grown(len).expect("grow");
        for (i, byte) in b.bytes_mut().iter_mut().enumerate() {
            *byte = (i % 251) as u8 + 1;
        }
        b
    }

    #[test]
    fn empty_buffer_holds_nothing() {
        for memory in [
            Memory::Heap,
            Memory::Secure {
                allow_unlocked: true,
            },
        ] {
            let b = Backing::new(memory);
            assert!(b.is_empty());
            assert!(b.bytes().is_empty());
            assert!(b.floats().is_empty());
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(b.grown(0).expect("grow").is_empty());
        }
    }

    #[test]
    fn growth_keeps_content_aligns_and_zero_fills() {
        for memory in [
            Memory::Heap,
            Memory::Secure {
                allow_unlocked: true,
            },
        ] {
            let mut b = filled(memory, 100);
            assert_eq!(b.len(), 128);
            for len in [129usize, 5000, 3 << 20] {
                let before = b.bytes().to_vec();
                let grown = b.grown(len).expect("grow");
                assert_eq!(grown.len(), len.next_multiple_of(64));
                assert_eq!(grown.as_ptr() as usize % 64, 0);
                assert_eq!(&grown.bytes()[..before.len()], &before[..]);
                assert!(grown.bytes()[before.len()..].iter().all(|&x| x == 0));
                assert_eq!(b.bytes(), &before[..], "the source is left unchanged");
                b = grown;
            }
            assert!(b.grown(10).expect("grow").len() == b.len(), "never shrinks");
        }
    }

    #[test]
    fn secure_growth_uses_a_locked_region() {
        let b = filled(
            Memory::Secure {
                allow_unlocked: true,
            },
            10_000,
        );
        let Store::Secure(region) = &b.store else {
            panic!("a secure buffer must live in a SecureRegion");
        };
        assert_eq!(region.as_ptr() as usize % page_size(), 0);
        #[cfg(target_os = "linux")]
        {
            assert!(region.protection().dontdump);
            assert!(region.protection().wipeonfork);
        }
        let heap = filled(Memory::Heap, 10_000);
        assert!(matches!(heap.store, Store::Heap(_)));
        assert_eq!(b.bytes(), heap.bytes());
    }

    #[test]
    fn floats_view_the_same_bytes() {
        for memory in [
            Memory::Heap,
            Memory::Secure {
                allow_unlocked: true,
            },
        ] {
            let mut b = Backing::new(memory).grown(64).expect("grow");
            b.floats_mut()[3] = 1.5;
            assert_eq!(b.floats().len(), 16);
            assert_eq!(&b.bytes()[12..16], &1.5f32.to_ne_bytes());
        }
    }
}
