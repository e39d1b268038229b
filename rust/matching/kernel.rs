//! The generic scan shared by every instruction set, and the choice of kernel.
//!
//! A kernel is an implementation of [`Lanes`] (16 f32 lanes: one AVX-512 register, two
//! AVX2 registers, four NEON registers or a plain array). The scan below is written once
//! against that trait and inlined into one `#[target_feature]` entry point per
//! instruction set, so the same loop compiles to each ISA's instructions.
//!
//! Blocking: all the queries of one call share one pass over the matrix. Panels are
//! processed in row blocks that stay in L2; inside a row block every query block reads
//! the same panels, and a tile of `NQ` queries x `RP` panels keeps its `NQ * RP`
//! accumulators in registers for the whole dot product. Each score is compared with its
//! query's current k-th best in registers; only the rare winners leave them.

use super::store::{View, LANES};
use super::topk::TopK;
use zeroize::Zeroize;

/// Panels at least this large (f32 from dim 256) are scanned two per tile by one query.
pub(crate) const LARGE_PANEL_BYTES: usize = 16 * 1024;

/// Row block size: panels scanned by all query blocks before moving on (fits in L2).
const ROW_BLOCK_BYTES: usize = 192 * 1024;

/// Sixteen f32 lanes in an instruction set's registers.
///
/// # Safety
/// Implementations may only be used inside a function compiled with the target
/// features their intrinsics need, reached after runtime detection ([`Kernel::available`]).
/// Pointer arguments must be valid for the bytes each method reads or writes.
pub(crate) unsafe trait Lanes: Copy {
    /// Queries per block (the tile height this ISA's registers allow).
    const QB: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// Loads 16 f32.
    unsafe fn load_f32(p: *const f32) -> Self;
    /// Loads 16 IEEE halfs and widens them.
    unsafe fn load_f16(p: *const u16) -> Self;
    /// Loads 16 i8 and converts them.
    unsafe fn load_i8(p: *const i8) -> Self;
    /// `self + a * x` lane-wise (fused where the ISA has it).
    unsafe fn fmadd(self, a: Self, x: f32) -> Self;
    /// `self * a` lane-wise.
    unsafe fn mul(self, a: Self) -> Self;
    /// Whether any lane is `>= thr`.
    unsafe fn any_ge(self, thr: f32) -> bool;
    /// Stores the 16 lanes.
    unsafe fn store(self, out: &mut [f32; LANES]);
    /// Hints that the cache line at `p` will be read soon (never faults; may be a no-op).
    unsafe fn prefetch(p: *const u8);
    /// Scans panels `p0..p1` for one block of `nq <= QB` queries with this ISA's tile
    /// shape (a `match` onto [`scan_panels`] instances).
    unsafe fn block<E: Element>(nq: usize, job: &mut Job<'_>);
}

/// A storage element type: how 16 lanes of one dimension are loaded.
pub(crate) trait Element {
    /// Bytes per dimension step (16 lanes).
    const STEP: usize;
    /// Whether rows carry a scale (i8).
    const SCALED: bool;
    /// Loads the 16 lanes at `p`.
    ///
    /// # Safety
    /// As [`Lanes`]; `p` is valid for `STEP` bytes.
    unsafe fn load<S: Lanes>(p: *const u8) -> S;
}

/// f32 storage.
pub(crate) struct F32;
/// f16 storage.
pub(crate) struct F16;
/// i8 storage with per-row scales.
pub(crate) struct I8;

impl Element for F32 {
    const STEP: usize = LANES * 4;
    const SCALED: bool = false;
    #[inline(always)]
    unsafe fn load<S: Lanes>(p: *const u8) -> S {
        // SAFETY: forwarded contract; panels are 64-byte aligned so `p` is f32-aligned.
        unsafe { S::load_f32(p.cast()) }
    }
}

impl Element for F16 {
    const STEP: usize = LANES * 2;
    const SCALED: bool = false;
    #[inline(always)]
    unsafe fn load<S: Lanes>(p: *const u8) -> S {
        // SAFETY: forwarded contract; `p` is 32-byte aligned within a panel.
        unsafe { S::load_f16(p.cast()) }
    }
}

impl Element for I8 {
    const STEP: usize = LANES;
    const SCALED: bool = true;
    #[inline(always)]
    unsafe fn load<S: Lanes>(p: *const u8) -> S {
        // SAFETY: forwarded contract.
        unsafe { S::load_i8(p.cast()) }
    }
}

/// Queries transposed into blocks: block `i` is `dim x n_i`, query-minor, so a tile
/// broadcasts consecutive floats. Zeroized on drop: the blocks are embeddings.
pub(crate) struct QueryBlocks {
    pub(crate) blocks: Vec<(usize, usize, Vec<f32>)>,
}

impl Drop for QueryBlocks {
    fn drop(&mut self) {
        for (_, _, data) in &mut self.blocks {
            data.zeroize();
        }
    }
}

impl QueryBlocks {
    /// Splits `b` unit queries (`b x dim`, row-major) into blocks of at most `qb`.
    pub(crate) fn new(queries: &[f32], dim: usize, qb: usize) -> QueryBlocks {
        let b = queries.len() / dim;
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < b {
            let n = qb.min(b - start);
            let mut data = vec![0.0f32; dim * n];
            for j in 0..n {
                for t in 0..dim {
                    data[t * n + j] = queries[(start + j) * dim + t];
                }
            }
            blocks.push((start, n, data));
            start += n;
        }
        QueryBlocks { blocks }
    }
}

/// One block's work: a panel range, the block's transposed queries and their top-ks.
pub(crate) struct Job<'a> {
    pub(crate) view: &'a View<'a>,
    pub(crate) qt: &'a [f32],
    pub(crate) p0: usize,
    pub(crate) p1: usize,
    pub(crate) tops: &'a mut [TopK],
    pub(crate) ids: &'a [i64],
}

/// Scans panels `p0..p1` for every query, row block by row block.
///
/// # Safety
/// As [`Lanes`]; `p1 <= view.panels()` and `tops.len()` equals the number of queries.
#[inline(always)]
pub(crate) unsafe fn scan<S: Lanes, E: Element>(
    view: &View<'_>,
    queries: &QueryBlocks,
    p0: usize,
    p1: usize,
    tops: &mut [TopK],
    ids: &[i64],
) {
    let rb = (ROW_BLOCK_BYTES / view.panel_stride).max(1);
    let mut p = p0;
    while p < p1 {
        let pe = (p + rb).min(p1);
        for (start, n, qt) in &queries.blocks {
            let mut job = Job {
                view,
                qt,
                p0: p,
                p1: pe,
                tops: &mut tops[*start..*start + *n],
                ids,
            };
            // SAFETY: forwarded contract; `n <= S::QB` by construction of the blocks.
            unsafe { S::block::<E>(*n, &mut job) };
        }
        p = pe;
    }
}

/// Scans a panel range for `NQ` queries, `RP` panels per tile.
///
/// # Safety
/// As [`scan`], with `job.tops.len() == NQ` and `job.qt.len() == NQ * dim`.
#[inline(always)]
pub(crate) unsafe fn scan_panels<S: Lanes, E: Element, const NQ: usize, const RP: usize>(
    job: &mut Job<'_>,
) {
    let mut p = job.p0;
    while p + RP <= job.p1 {
        // SAFETY: panels p..p+RP exist (p + RP <= p1 <= panels).
        unsafe { tile::<S, E, NQ, RP>(job, p) };
        p += RP;
    }
    while p < job.p1 {
        // SAFETY: panel p exists.
        unsafe { tile::<S, E, NQ, 1>(job, p) };
        p += 1;
    }
}

/// Scores panels `p..p + RP` against the block's `NQ` queries and offers the winners.
///
/// # Safety
/// As [`scan_panels`], with panels `p..p + RP` inside the matrix.
#[inline(always)]
unsafe fn tile<S: Lanes, E: Element, const NQ: usize, const RP: usize>(
    job: &mut Job<'_>,
    p: usize,
) {
    let view = job.view;
    // SAFETY: the ISA's features are enabled in the calling context (trait contract).
    let zero = unsafe { S::zero() };
    let mut acc = [[zero; RP]; NQ];
    // Pointers advance by addition only: no overflow-checked index arithmetic in the
    // hot loop (it would keep the accumulators from staying in registers).
    let mut rows: [*const u8; RP] = std::array::from_fn(|r| {
        // SAFETY: panel p + r lies inside the matrix (caller's contract), so its first
        // byte is inside the allocation `view.base` points into.
        unsafe { view.base.add((p + r) * view.panel_stride) }
    });
    let mut q = job.qt.as_ptr();
    // The next tile's panels, at the same offset, are prefetched one tile ahead, once
    // per cache line consumed (hardware prefetchers stop at page boundaries, which
    // halved DRAM throughput).
    let ahead = RP * view.panel_stride;
    let line_steps = (64 / E::STEP).max(1);
    for t in 0..view.dim {
        if t % line_steps == 0 {
            for row in &rows {
                // SAFETY: a prefetch never faults; `wrapping_add` keeps the address
                // computation defined past the end of the matrix.
                unsafe { S::prefetch(row.wrapping_add(ahead)) };
            }
        }
        let v: [S; RP] = std::array::from_fn(|r| {
            // SAFETY: `rows[r]` points at dimension t of panel p + r, which holds
            // `STEP` bytes (t < dim).
            unsafe { E::load::<S>(rows[r]) }
        });
        for (j, accj) in acc.iter_mut().enumerate() {
            // SAFETY: `q` points at dimension t of `qt`, which holds `NQ` floats per
            // dimension (caller's contract), and j < NQ.
            let x = unsafe { *q.add(j) };
            for (a, &vr) in accj.iter_mut().zip(&v) {
                // SAFETY: register arithmetic; the ISA is enabled (trait contract).
                *a = unsafe { a.fmadd(vr, x) };
            }
        }
        for row in rows.iter_mut() {
            // SAFETY: one step further stays inside the panel, or one past its last
            // dimension after the final step (never dereferenced).
            *row = unsafe { row.add(E::STEP) };
        }
        // SAFETY: as above, within `qt` or one past its end after the final step.
        q = unsafe { q.add(NQ) };
    }
    let scales: [Option<S>; RP] = std::array::from_fn(|r| {
        E::SCALED.then(|| {
            // SAFETY: scaled storage holds 16 scales per panel, and panel p + r exists.
            unsafe { S::load_f32(view.scales.as_ptr().add((p + r) * LANES)) }
        })
    });
    // Constant trip counts (not `zip` with the runtime-length `tops`): the loops unroll
    // fully, so the accumulators never leave registers.
    #[allow(clippy::needless_range_loop)]
    for j in 0..NQ {
        let top = &mut job.tops[j];
        for r in 0..RP {
            let s = match scales[r] {
                // SAFETY: register arithmetic; the ISA is enabled (trait contract).
                Some(sc) => unsafe { acc[j][r].mul(sc) },
                None => acc[j][r],
            };
            // SAFETY: register comparison; the ISA is enabled (trait contract).
            if unsafe { s.any_ge(top.threshold()) } {
                let mut out = [0.0f32; LANES];
                // SAFETY: `out` is 16 writable floats; the ISA is enabled.
                unsafe { s.store(&mut out) };
                offer(&out, p + r, view.rows, top, job.ids);
            }
        }
    }
}

/// Hands a panel's scores that passed the threshold test to the top-k (cold path).
#[cold]
#[inline(never)]
fn offer(scores: &[f32; LANES], panel: usize, rows: usize, top: &mut TopK, ids: &[i64]) {
    for (lane, &s) in scores.iter().enumerate() {
        let row = panel * LANES + lane;
        if row < rows && s >= top.threshold() {
            top.push(s, row as u32, ids);
        }
    }
}

/// Expands to a `match nq { n => scan_panels::<S, E, n, rp> }` over an ISA's tile table.
macro_rules! tile_table {
    ($S:ty, $E:ty, $nq:expr, $job:expr, [$($n:literal => $rp:literal),+ $(,)?]) => {
        match $nq {
            // One query streaming large panels: two panels per tile keep the prefetch
            // distance (one tile) short enough to stay in L2.
            1 if $job.view.panel_stride >= LARGE_PANEL_BYTES => {
                scan_panels::<$S, $E, 1, 2>($job)
            }
            $($n => scan_panels::<$S, $E, $n, $rp>($job),)+
            _ => {
                // Not reached: blocks never exceed QB. Kept correct anyway.
                let tops = std::mem::take(&mut $job.tops);
                for (j, top) in tops.iter_mut().enumerate() {
                    let dim = $job.view.dim;
                    let qt = zeroize::Zeroizing::new(
                        (0..dim).map(|t| $job.qt[t * $nq + j]).collect::<Vec<f32>>(),
                    );
                    let mut one = Job {
                        view: $job.view,
                        qt: &qt,
                        p0: $job.p0,
                        p1: $job.p1,
                        tops: std::slice::from_mut(top),
                        ids: $job.ids,
                    };
                    scan_panels::<$S, $E, 1, 1>(&mut one);
                }
            }
        }
    };
}
pub(crate) use tile_table;

/// Defines an instruction set's entry point: [`scan`] instantiated for `$lanes` inside
/// a function compiled with the target features `$features` ("" for none).
macro_rules! scan_entry {
    ($name:ident, $lanes:ty, $features:literal $(, #[$attr:meta])*) => {
        #[doc = concat!("Scans panels `p0..p1` with `", stringify!($lanes), "` lanes.")]
        ///
        /// # Safety
        #[doc = concat!("The CPU has [", $features, "]; `p1 <= view.panels()`; ")]
        /// `tops.len()` is the number of queries.
        $(#[$attr])*
        pub(crate) unsafe fn $name<E: Element>(
            view: &View<'_>,
            queries: &QueryBlocks,
            p0: usize,
            p1: usize,
            tops: &mut [TopK],
            ids: &[i64],
        ) {
            // SAFETY: this function is compiled with the target features the lanes
            // need; the ranges are the caller's contract.
            unsafe { scan::<$lanes, E>(view, queries, p0, p1, tops, ids) }
        }
    };
}
pub(crate) use scan_entry;

/// The instruction set a matcher's kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable reference (plain loops), always available.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
    /// AArch64 NEON.
    Neon,
}

impl Kernel {
    /// Every kernel, best last.
    pub const ALL: [Kernel; 4] = [Kernel::Scalar, Kernel::Neon, Kernel::Avx2, Kernel::Avx512];

    /// The name used by the Python API.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Parses a name from [`Kernel::name`].
    pub fn parse(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this CPU (and build) can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest available kernel.
    pub fn best() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Queries per block for this kernel.
    pub(crate) fn query_block(self) -> usize {
        match self {
            Kernel::Scalar => <super::scalar::Scalar as Lanes>::QB,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => <super::x86::Avx2 as Lanes>::QB,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => <super::x86::Avx512 as Lanes>::QB,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => <super::aarch64::Neon as Lanes>::QB,
            #[allow(unreachable_patterns)]
            _ => 1,
        }
    }
}
