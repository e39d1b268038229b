//! x86-64 kernels: AVX2 + FMA + F16C (two 8-lane registers) and AVX-512F (one register).

use std::arch::x86_64::*;

use super::kernel::{
    scan, scan_entry, scan_panels, tile_table, Element, Job, Lanes, QueryBlocks, LARGE_PANEL_BYTES,
};
use super::store::{View, LANES};
use super::topk::TopK;

/// Sixteen lanes in one AVX-512 register.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

// SAFETY: only instantiated inside `scan_avx512`, compiled with avx512f and called after
// runtime detection (`Kernel::available`); pointer validity is the caller's contract.
unsafe impl Lanes for Avx512 {
    const QB: usize = 8;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_f32(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 64 bytes; avx512f enabled.
        Avx512(unsafe { _mm512_loadu_ps(p) })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_f16(p: *const u16) -> Self {
        // SAFETY: `p` is valid for 32 bytes; avx512f includes vcvtph2ps on zmm.
        Avx512(unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_i8(p: *const i8) -> Self {
        // SAFETY: `p` is valid for 16 bytes; avx512f enabled.
        Avx512(unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) })
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fmadd(self, a: Self, x: f32) -> Self {
        Avx512(_mm512_fmadd_ps(a.0, _mm512_set1_ps(x), self.0))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul(self, a: Self) -> Self {
        Avx512(_mm512_mul_ps(self.0, a.0))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn any_ge(self, thr: f32) -> bool {
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_set1_ps(thr)) != 0
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(self, out: &mut [f32; LANES]) {
        // SAFETY: `out` is 64 writable bytes; avx512f enabled.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self.0) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<E: Element>(nq: usize, job: &mut Job<'_>) {
        // 32 zmm registers: up to 24 accumulators, the panel loads and one broadcast.
        // SAFETY: forwarded contract.
        unsafe {
            tile_table!(Avx512, E, nq, job, [
                1 => 4, 2 => 8, 3 => 6, 4 => 6, 5 => 4, 6 => 4, 7 => 3, 8 => 3,
            ])
        }
    }
}

/// Sixteen lanes in two AVX2 registers.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256, __m256);

// SAFETY: only instantiated inside `scan_avx2`, compiled with avx2, fma and f16c and
// called after runtime detection; pointer validity is the caller's contract.
unsafe impl Lanes for Avx2 {
    const QB: usize = 6;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps(), _mm256_setzero_ps())
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f32(p: *const f32) -> Self {
        // SAFETY: `p` is valid for 64 bytes; avx enabled.
        unsafe { Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const u16) -> Self {
        // SAFETY: `p` is valid for 32 bytes; f16c enabled.
        unsafe {
            Avx2(
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast())),
            )
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_i8(p: *const i8) -> Self {
        // SAFETY: `p` is valid for 16 bytes; avx2 enabled.
        unsafe {
            let lo = _mm_loadl_epi64(p.cast());
            let hi = _mm_loadl_epi64(p.add(8).cast());
            Avx2(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
            )
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fmadd(self, a: Self, x: f32) -> Self {
        let xv = _mm256_set1_ps(x);
        Avx2(
            _mm256_fmadd_ps(a.0, xv, self.0),
            _mm256_fmadd_ps(a.1, xv, self.1),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mul(self, a: Self) -> Self {
        Avx2(_mm256_mul_ps(self.0, a.0), _mm256_mul_ps(self.1, a.1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn any_ge(self, thr: f32) -> bool {
        let t = _mm256_set1_ps(thr);
        let m = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(self.0, t),
            _mm256_cmp_ps::<_CMP_GE_OQ>(self.1, t),
        );
        _mm256_movemask_ps(m) != 0
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn store(self, out: &mut [f32; LANES]) {
        // SAFETY: `out` is 64 writable bytes; avx enabled.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), self.0);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), self.1);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<E: Element>(nq: usize, job: &mut Job<'_>) {
        // 16 ymm registers: up to 12 accumulators (2 per lane set), loads, a broadcast.
        // SAFETY: forwarded contract.
        unsafe {
            tile_table!(Avx2, E, nq, job, [
                1 => 4, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1,
            ])
        }
    }
}

scan_entry!(scan_avx512, Avx512, "avx512f", #[target_feature(enable = "avx512f")]);
scan_entry!(
    scan_avx2,
    Avx2,
    "avx2,fma,f16c",
    #[target_feature(enable = "avx2,fma,f16c")]
);
