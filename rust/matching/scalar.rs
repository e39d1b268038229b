//! The portable reference kernel: plain loops over 16-lane arrays.
//!
//! It defines the results the SIMD kernels are tested against, and runs wherever no
//! SIMD kernel is available.

use super::kernel::{
    scan, scan_entry, scan_panels, tile_table, Element, Job, Lanes, QueryBlocks, LARGE_PANEL_BYTES,
};
use super::store::{View, LANES};
use super::topk::TopK;

/// Sixteen lanes in an array.
#[derive(Clone, Copy)]
pub(crate) struct Scalar([f32; LANES]);

// SAFETY: no target features are needed; pointer validity is the caller's contract.
unsafe impl Lanes for Scalar {
    const QB: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Scalar([0.0; LANES])
    }

    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 16 f32 reads (trait contract); may be unaligned.
        Scalar(std::array::from_fn(|i| unsafe {
            p.add(i).read_unaligned()
        }))
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Scalar(std::array::from_fn(|i| {
            // SAFETY: `p` is valid for 16 u16 reads (trait contract).
            let bits = unsafe { p.add(i).read_unaligned() };
            half::f16::from_bits(bits).to_f32()
        }))
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        Scalar(std::array::from_fn(|i| {
            // SAFETY: `p` is valid for 16 i8 reads (trait contract).
            f32::from(unsafe { p.add(i).read() })
        }))
    }

    #[inline(always)]
    unsafe fn fmadd(self, a: Self, x: f32) -> Self {
        Scalar(std::array::from_fn(|i| self.0[i] + a.0[i] * x))
    }

    #[inline(always)]
    unsafe fn mul(self, a: Self) -> Self {
        Scalar(std::array::from_fn(|i| self.0[i] * a.0[i]))
    }

    #[inline(always)]
    unsafe fn any_ge(self, thr: f32) -> bool {
        self.0.iter().any(|&s| s >= thr)
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [f32; LANES]) {
        *out = self.0;
    }

    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {
        // No portable prefetch hint on stable Rust; the hardware prefetcher does it.
    }

    #[inline(always)]
    unsafe fn block<E: Element>(nq: usize, job: &mut Job<'_>) {
        // SAFETY: forwarded contract.
        unsafe { tile_table!(Scalar, E, nq, job, [1 => 2, 2 => 1, 3 => 1, 4 => 1]) }
    }
}

scan_entry!(scan_scalar, Scalar, "");
