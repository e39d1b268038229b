//! This machine's physical limits, measured for the benchmarks' floors: memory read
//! bandwidth and peak arithmetic throughput (f32 FMA, int8 dot products).

use std::hint::black_box;
use std::time::Instant;

/// Best-of-`repeats` read bandwidth in bytes per second, reading a `nbytes` array split
/// across `threads` threads (each summing its part).
pub fn read_bandwidth(nbytes: usize, threads: usize, repeats: usize) -> f64 {
    let threads = threads.max(1);
    let words = (nbytes / 8).max(threads * 64);
    let data: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9))
        .collect();
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        std::thread::scope(|s| {
            for part in data.chunks(chunk) {
                s.spawn(move || black_box(fold_fastest(part)));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best
}

/// `fold` compiled for the widest vectors this CPU has (a read stream is only limited
/// by memory when the core can issue loads fast enough).
fn fold_fastest(part: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has avx512f (checked just above).
            return unsafe { x86::fold512(part) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has avx2 (checked just above).
            return unsafe { x86::fold256(part) };
        }
    }
    fold(part)
}

/// XOR-folds a slice with eight independent lanes (vectorised by the compiler).
#[inline(always)]
fn fold(part: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = part.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] ^= c[i];
        }
    }
    acc.iter().chain(chunks.remainder()).fold(0, |a, &b| a ^ b)
}

/// What `peak_ops` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    /// f32 fused multiply-adds (2 operations each).
    F32Fma,
    /// int8 dot products (VNNI; a multiply and an add per byte pair).
    I8Dot,
}

/// Peak operations per second on `threads` threads, or `None` where this CPU has no
/// SIMD instructions for it that lfr knows how to drive.
pub fn peak_ops(kind: Arith, threads: usize) -> Option<f64> {
    let iters: u64 = 20_000_000;
    let per_thread = ops_per_thread(kind)?;
    let threads = threads.max(1);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(move || per_thread.1(iters));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    Some(per_thread.0 * iters as f64 * threads as f64 / best)
}

/// (operations per iteration, loop) for `kind` on this CPU.
fn ops_per_thread(kind: Arith) -> Option<(f64, fn(u64))> {
    #[cfg(target_arch = "x86_64")]
    {
        match kind {
            Arith::F32Fma if std::arch::is_x86_feature_detected!("avx512f") => {
                return Some((x86::ACCS as f64 * 16.0 * 2.0, x86::fma512_safe));
            }
            Arith::F32Fma
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma") =>
            {
                return Some((x86::ACCS as f64 * 8.0 * 2.0, x86::fma256_safe));
            }
            Arith::I8Dot
                if std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512f") =>
            {
                return Some((x86::ACCS as f64 * 64.0 * 2.0, x86::vnni512_safe));
            }
            _ => {}
        }
    }
    let _ = kind;
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulators: enough to cover FMA latency x throughput.
    pub const ACCS: usize = 12;

    /// How far ahead `fold512` prefetches, in u64 words.
    const PREFETCH_WORDS: usize = 256;

    /// XOR-folds `part` with four 512-bit accumulators (one 256-byte step per loop).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fold512(part: &[u64]) -> u64 {
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut steps = part.chunks_exact(32);
        for step in &mut steps {
            // Software prefetch a few steps ahead: it beats the hardware prefetcher at
            // page boundaries, as the matching kernels do.
            let ahead = step.as_ptr().wrapping_add(PREFETCH_WORDS);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(8).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(24).cast());
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: `step` holds 32 u64; lane group i is its 8 words at 8 * i.
                let v = unsafe { _mm512_loadu_si512(step.as_ptr().add(8 * i).cast()) };
                *a = _mm512_xor_si512(*a, v);
            }
        }
        let mut words = [0u64; 8];
        let all = _mm512_xor_si512(
            _mm512_xor_si512(acc[0], acc[1]),
            _mm512_xor_si512(acc[2], acc[3]),
        );
        // SAFETY: `words` is 64 writable bytes.
        unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), all) };
        words.iter().chain(steps.remainder()).fold(0, |a, &b| a ^ b)
    }

    /// As `fold512`, with 256-bit vectors.
    #[target_feature(enable = "avx2")]
    pub unsafe fn fold256(part: &[u64]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut steps = part.chunks_exact(16);
        for step in &mut steps {
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: `step` holds 16 u64; lane group i is its 4 words at 4 * i.
                let v = unsafe { _mm256_loadu_si256(step.as_ptr().add(4 * i).cast()) };
                *a = _mm256_xor_si256(*a, v);
            }
        }
        let mut words = [0u64; 4];
        let all = _mm256_xor_si256(
            _mm256_xor_si256(acc[0], acc[1]),
            _mm256_xor_si256(acc[2], acc[3]),
        );
        // SAFETY: `words` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), all) };
        words.iter().chain(steps.remainder()).fold(0, |a, &b| a ^ b)
    }

    pub fn fma512_safe(iters: u64) {
        // SAFETY: only selected by `ops_per_thread` after detecting avx512f.
        unsafe { fma512(iters) }
    }

    pub fn fma256_safe(iters: u64) {
        // SAFETY: only selected by `ops_per_thread` after detecting avx2 and fma.
        unsafe { fma256(iters) }
    }

    pub fn vnni512_safe(iters: u64) {
        // SAFETY: only selected by `ops_per_thread` after detecting avx512f, avx512vnni.
        unsafe { vnni512(iters) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn fma512(iters: u64) {
        let a = _mm512_set1_ps(black_box(0.999_999));
        let b = _mm512_set1_ps(black_box(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        black_box(acc);
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256(iters: u64) {
        let a = _mm256_set1_ps(black_box(0.999_999));
        let b = _mm256_set1_ps(black_box(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        black_box(acc);
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni512(iters: u64) {
        let a = _mm512_set1_epi8(black_box(3));
        let b = _mm512_set1_epi8(black_box(-2));
        let mut acc = [_mm512_setzero_si512(); ACCS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        black_box(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_is_positive_and_finite() {
        let bw = read_bandwidth(1 << 20, 2, 2);
        assert!(bw.is_finite() && bw > 0.0);
    }

    #[test]
    fn fold_covers_every_word() {
        for n in [0u64, 11, 32, 77, 1000] {
            let v: Vec<u64> = (1..=n).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
            let want = v.iter().fold(0, |a, b| a ^ b);
            assert_eq!(fold(&v), want);
            assert_eq!(fold_fastest(&v), want);
        }
    }
}
