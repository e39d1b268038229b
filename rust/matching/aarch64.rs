//! AArch64 NEON kernel: sixteen lanes in four 128-bit registers.

use std::arch::aarch64::*;

use super::kernel::{
    scan, scan_entry, scan_panels, tile_table, Element, Job, Lanes, QueryBlocks, LARGE_PANEL_BYTES,
};
use super::store::{View, LANES};
use super::topk::TopK;

/// Sixteen lanes in four NEON registers.
#[derive(Clone, Copy)]
pub(crate) struct Neon([float32x4_t; 4]);

/// Widens four IEEE halfs (in the low 16 bits of each lane) to f32, exactly: the
/// magnitude is shifted into f32 position and rescaled by 2^112, which also handles
/// subnormals; the sign is put back. Stored values are finite.
#[inline(always)]
unsafe fn halfs_to_f32(h: uint32x4_t) -> float32x4_t {
    // SAFETY: neon is enabled in the calling context (trait contract).
    unsafe {
        let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
        let mag = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7fff)));
        let f = vmulq_f32(
            vreinterpretq_f32_u32(mag),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        );
        vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(f), sign))
    }
}

// SAFETY: only instantiated inside `scan_neon`, compiled with neon and called after
// runtime detection; pointer validity is the caller's contract.
unsafe impl Lanes for Neon {
    const QB: usize = 6;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: neon enabled.
        unsafe { Neon([vdupq_n_f32(0.0); 4]) }
    }

    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 64 bytes; neon enabled.
        unsafe {
            Neon([
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ])
        }
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        // SAFETY: `p` is valid for 32 bytes; neon enabled.
        unsafe {
            let a = vld1q_u16(p);
            let b = vld1q_u16(p.add(8));
            Neon([
                halfs_to_f32(vmovl_u16(vget_low_u16(a))),
                halfs_to_f32(vmovl_u16(vget_high_u16(a))),
                halfs_to_f32(vmovl_u16(vget_low_u16(b))),
                halfs_to_f32(vmovl_u16(vget_high_u16(b))),
            ])
        }
    }

    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        // SAFETY: `p` is valid for 16 bytes; neon enabled.
        unsafe {
            let v = vld1q_s8(p);
            let lo = vmovl_s8(vget_low_s8(v));
            let hi = vmovl_s8(vget_high_s8(v));
            Neon([
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
                vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
                vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))),
            ])
        }
    }

    #[inline(always)]
    unsafe fn fmadd(self, a: Self, x: f32) -> Self {
        // SAFETY: neon enabled.
        unsafe {
            Neon([
                vfmaq_n_f32(self.0[0], a.0[0], x),
                vfmaq_n_f32(self.0[1], a.0[1], x),
                vfmaq_n_f32(self.0[2], a.0[2], x),
                vfmaq_n_f32(self.0[3], a.0[3], x),
            ])
        }
    }

    #[inline(always)]
    unsafe fn mul(self, a: Self) -> Self {
        // SAFETY: neon enabled.
        unsafe {
            Neon([
                vmulq_f32(self.0[0], a.0[0]),
                vmulq_f32(self.0[1], a.0[1]),
                vmulq_f32(self.0[2], a.0[2]),
                vmulq_f32(self.0[3], a.0[3]),
            ])
        }
    }

    #[inline(always)]
    unsafe fn any_ge(self, thr: f32) -> bool {
        // SAFETY: neon enabled.
        unsafe {
            let t = vdupq_n_f32(thr);
            let m = vorrq_u32(
                vorrq_u32(vcgeq_f32(self.0[0], t), vcgeq_f32(self.0[1], t)),
                vorrq_u32(vcgeq_f32(self.0[2], t), vcgeq_f32(self.0[3], t)),
            );
            vmaxvq_u32(m) != 0
        }
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [f32; LANES]) {
        // SAFETY: `out` is 64 writable bytes; neon enabled.
        unsafe {
            let o = out.as_mut_ptr();
            vst1q_f32(o, self.0[0]);
            vst1q_f32(o.add(4), self.0[1]);
            vst1q_f32(o.add(8), self.0[2]);
            vst1q_f32(o.add(12), self.0[3]);
        }
    }

    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {
        // No portable prefetch hint on stable Rust; the hardware prefetcher does it.
    }

    #[inline(always)]
    unsafe fn block<E: Element>(nq: usize, job: &mut Job<'_>) {
        // 32 q registers; a lane set takes four: up to 24 accumulators and the loads.
        // SAFETY: forwarded contract.
        unsafe {
            tile_table!(Neon, E, nq, job, [
                1 => 3, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1,
            ])
        }
    }
}

scan_entry!(scan_neon, Neon, "neon", #[target_feature(enable = "neon")]);
