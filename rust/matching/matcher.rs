//! The matcher: ids, the matrix, a lock, and the search that splits work across threads.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{OnceLock, PoisonError, RwLock};

use super::backing::Memory;
use super::exact::ExactRows;
use super::helper::Helper;
use super::kernel::{Element, Kernel, QueryBlocks, F16, F32, I8};
use super::store::{normalize, Dtype, Panels, View};
use super::topk::TopK;
use crate::error::{Error, Result};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of matrix traffic per thread below which a search is not split: waking a
/// parked thread costs tens of microseconds, more than it saves on smaller scans.
const PARALLEL_MIN_BYTES: usize = 512 << 10;

/// Extra candidates a quantised scan keeps per query for exact re-ranking. Measured on
/// LFW face descriptors (whose cosines cluster near 0.85, so near-ties are common):
/// 32 makes the top-1 identical to f32 on every query. Where the candidates cannot be
/// proven to hold the exact top-k, the query is re-scored exactly over every row.
const RERANK_MARGIN: usize = 32;

/// Search output: `b x k` ids (-1 where empty) and scores (-inf where empty), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Ids, best first per query.
    pub ids: Vec<i64>,
    /// Cosine similarities, matching `ids`.
    pub scores: Vec<f32>,
}

struct State {
    panels: Panels,
    /// Exact copies for re-ranking (quantised dtypes with re-ranking on).
    exact: Option<ExactRows>,
    /// Largest distance between a row and its quantised copy (0 for f32): a bound on
    /// how far any quantised score is from the exact one.
    max_error: f64,
    ids: Vec<i64>,
    rows: HashMap<i64, u32>,
}

/// Exact cosine-similarity search over a set of unit vectors.
///
/// Searches take a read lock and may run concurrently; `add` and `remove` take the
/// write lock and change nothing unless they succeed completely.
pub struct Matcher {
    dim: usize,
    dtype: Dtype,
    kernel: Kernel,
    threads: usize,
    memory: Memory,
    pool: OnceLock<Option<rayon::ThreadPool>>,
    helper: OnceLock<Option<Helper>>,
    state: RwLock<State>,
}

impl Matcher {
    /// A matcher for `dim`-dimensional vectors.
    ///
    /// `threads` defaults to the number of cores; `kernel` to the best available.
    /// With `rerank`, f16 and i8 matchers also keep an exact f32 copy of each vector
    /// and re-score the best candidates of the quantised scan with it, so ids and
    /// scores equal an f32 matcher's; without it they hold only the quantised matrix.
    /// `memory` says where every copy of the vectors lives: with [`Memory::Secure`],
    /// an `add` that needs more memory than can be locked fails and changes nothing.
    pub fn new(
        dim: usize,
        dtype: Dtype,
        threads: Option<usize>,
        kernel: Option<Kernel>,
        rerank: bool,
        memory: Memory,
    ) -> Result<Matcher> {
        if dim == 0 || dim > 65_536 {
            return Err(Error::Invalid(format!(
                "dim must be in 1..=65536, got {dim}"
            )));
        }
        let threads = match threads {
            Some(0) => return Err(Error::Invalid("threads must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let kernel = kernel.unwrap_or_else(Kernel::best);
        if !kernel.available() {
            return Err(Error::KernelUnavailable {
                kernel: kernel.name(),
            });
        }
        let rerank = rerank && dtype != Dtype::F32;
        Ok(Matcher {
            dim,
            dtype,
            kernel,
            threads,
            memory,
            pool: OnceLock::new(),
            helper: OnceLock::new(),
            state: RwLock::new(State {
                panels: Panels::new(dim, dtype, memory),
                exact: rerank.then(|| ExactRows::new(dim, memory)),
                max_error: 0.0,
                ids: Vec::new(),
                rows: HashMap::new(),
            }),
        })
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Storage precision.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The kernel searches use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Most threads one search uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Where the vectors live.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// Whether quantised scans are re-ranked exactly.
    pub fn rerank(&self) -> bool {
        self.read().exact.is_some()
    }

    // A panic while a lock was held cannot leave the state half-changed (mutations are
    // validated first), so a poisoned lock is still consistent.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `id` is an entry.
    pub fn contains(&self, id: i64) -> bool {
        self.read().rows.contains_key(&id)
    }

    /// Bytes of vector storage held.
    pub fn nbytes(&self) -> usize {
        let state = self.read();
        state.panels.nbytes() + state.exact.as_ref().map_or(0, ExactRows::nbytes)
    }

    /// Adds `ids.len()` vectors (`vectors` is `n x dim`, row-major), normalised.
    pub fn add(&self, ids: &[i64], vectors: &[f32]) -> Result<()> {
        let units = unit_rows(vectors, self.dim, ids.len(), "vector")?;
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if id == -1 {
                return Err(Error::ReservedId);
            }
            if !seen.insert(id) {
                return Err(Error::DuplicateId {
                    id,
                    already_present: false,
                });
            }
        }
        let mut state = self.write();
        if let Some(&id) = ids.iter().find(|id| state.rows.contains_key(id)) {
            return Err(Error::DuplicateId {
                id,
                already_present: true,
            });
        }
        if state.ids.len() + ids.len() > u32::MAX as usize {
            return Err(Error::Invalid(
                "a matcher holds at most 2^32 - 1 entries".into(),
            ));
        }
        // Every buffer that must grow is made before any is switched, so a refused
        // (secure) allocation leaves the matcher as it was.
        let panels = state.panels.prepare(ids.len())?;
        let exact = match &state.exact {
            Some(exact) => exact.prepare(ids.len())?,
            None => None,
        };
        if let Some(grown) = panels {
            state.panels.install(grown);
        }
        if let Some(rows) = state.exact.as_mut() {
            if let Some(grown) = exact {
                rows.install(grown);
            }
            rows.extend(&units);
        }
        for (&id, unit) in ids.iter().zip(units.chunks_exact(self.dim)) {
            let row = state.ids.len() as u32;
            let error = state.panels.push(unit);
            state.max_error = state.max_error.max(error);
            state.ids.push(id);
            state.rows.insert(id, row);
        }
        Ok(())
    }

    /// Removes entries; if any id is unknown (or repeated), nothing is removed.
    pub fn remove(&self, ids: &[i64]) -> Result<()> {
        let mut state = self.write();
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !state.rows.contains_key(&id) {
                return Err(Error::UnknownId { id });
            }
            if !seen.insert(id) {
                return Err(Error::DuplicateId {
                    id,
                    already_present: false,
                });
            }
        }
        for &id in ids {
            let Some(row) = state.rows.remove(&id) else {
                continue;
            };
            let row = row as usize;
            state.panels.swap_remove(row);
            if let Some(exact) = state.exact.as_mut() {
                exact.swap_remove(row);
            }
            state.ids.swap_remove(row);
            if row < state.ids.len() {
                let moved = state.ids[row];
                state.rows.insert(moved, row as u32);
            }
        }
        if state.ids.is_empty() {
            state.max_error = 0.0;
        }
        Ok(())
    }

    /// The `k` best entries for each of the `queries` (`b x dim`, row-major).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<SearchResult> {
        if k == 0 {
            return Err(Error::Invalid("k must be at least 1".into()));
        }
        if !queries.len().is_multiple_of(self.dim) {
            return Err(Error::Dim {
                expected: self.dim,
                got: queries.len(),
            });
        }
        let b = queries.len() / self.dim;
        let units = unit_rows(queries, self.dim, b, "query")?;
        let blocks = QueryBlocks::new(&units, self.dim, self.kernel.query_block());
        let state = self.read();
        let view = state.panels.view();
        let tops = match &state.exact {
            Some(exact) => {
                let wide = self.scan_split(&view, &blocks, b, k + RERANK_MARGIN, &state.ids);
                // f32 rounding in both sums, generously, on top of the quantisation.
                let slack = state.max_error as f32 * 1.001 + 4.0 * self.dim as f32 * f32::EPSILON;
                let rerank = Rerank {
                    exact,
                    k,
                    ids: &state.ids,
                    slack,
                };
                wide.iter()
                    .zip(units.chunks_exact(self.dim))
                    .map(|(cands, query)| rerank.query(cands, query))
                    .collect()
            }
            None => self.scan_split(&view, &blocks, b, k, &state.ids),
        };
        let mut out = SearchResult {
            ids: vec![-1; b * k],
            scores: vec![f32::NEG_INFINITY; b * k],
        };
        for (qi, top) in tops.iter().enumerate() {
            for (j, &(score, row)) in top.items().iter().enumerate() {
                out.ids[qi * k + j] = state.ids[row as usize];
                out.scores[qi * k + j] = score;
            }
        }
        // The calling thread's kernels and re-ranking left query values in vector
        // registers and in the frames below this one: wipe them before returning.
        crate::secure::stack::scrub();
        Ok(out)
    }

    fn scan_split(
        &self,
        view: &View<'_>,
        blocks: &QueryBlocks,
        b: usize,
        k: usize,
        ids: &[i64],
    ) -> Vec<TopK> {
        let panels = view.panels();
        let traffic = panels * view.panel_stride * blocks.blocks.len();
        let useful = (traffic / PARALLEL_MIN_BYTES).clamp(1, panels.max(1));
        let nthreads = self.threads.min(useful);
        if nthreads < 2 {
            return self.scan_range(view, blocks, 0..panels, b, k, ids);
        }
        let chunk = panels.div_ceil(nthreads);
        let range = |i: usize| (i * chunk).min(panels)..((i + 1) * chunk).min(panels);
        let mut parts: Vec<Vec<TopK>> = vec![Vec::new(); nthreads];
        let helper = if nthreads == 2 { self.helper() } else { None };
        if let Some(helper) = helper {
            // Two-way splits (the common case on small machines) go to a helper that
            // spins between searches, so a stream of frames pays no wake-up.
            let (first, rest) = parts.split_at_mut(1);
            helper.run_pair(
                || first[0] = self.scan_range(view, blocks, range(0), b, k, ids),
                || rest[0] = self.scan_on_worker(view, blocks, range(1), b, k, ids),
            );
        } else if let Some(pool) = self.pool() {
            // The calling thread scans the first range itself while the pool's threads
            // wake up for the others.
            pool.in_place_scope(|scope| {
                let (first, rest) = parts.split_at_mut(1);
                for (i, slot) in rest.iter_mut().enumerate() {
                    let r = range(i + 1);
                    scope.spawn(move |_| *slot = self.scan_on_worker(view, blocks, r, b, k, ids));
                }
                first[0] = self.scan_range(view, blocks, range(0), b, k, ids);
            });
        } else {
            return self.scan_range(view, blocks, 0..panels, b, k, ids);
        }
        let mut parts = parts.into_iter();
        let mut tops = parts.next().unwrap_or_default();
        for part in parts {
            for (t, p) in tops.iter_mut().zip(&part) {
                t.merge(p, ids);
            }
        }
        tops
    }

    fn helper(&self) -> Option<&Helper> {
        self.helper.get_or_init(Helper::start).as_ref()
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        self.pool
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.threads - 1)
                    .thread_name(|i| format!("lfr-match-{i}"))
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// [`Self::scan_range`] on a pool or helper thread, which then goes idle: the
    /// query values its kernels left in registers and stack frames are wiped first.
    fn scan_on_worker(
        &self,
        view: &View<'_>,
        blocks: &QueryBlocks,
        range: Range<usize>,
        b: usize,
        k: usize,
        ids: &[i64],
    ) -> Vec<TopK> {
        let tops = self.scan_range(view, blocks, range, b, k, ids);
        crate::secure::stack::scrub();
        tops
    }

    fn scan_range(
        &self,
        view: &View<'_>,
        blocks: &QueryBlocks,
        range: Range<usize>,
        b: usize,
        k: usize,
        ids: &[i64],
    ) -> Vec<TopK> {
        let mut tops = vec![TopK::new(k); b];
        match self.dtype {
            Dtype::F32 => self.dispatch::<F32>(view, blocks, range, &mut tops, ids),
            Dtype::F16 => self.dispatch::<F16>(view, blocks, range, &mut tops, ids),
            Dtype::I8 => self.dispatch::<I8>(view, blocks, range, &mut tops, ids),
        }
        tops
    }

    fn dispatch<E: Element>(
        &self,
        view: &View<'_>,
        blocks: &QueryBlocks,
        range: Range<usize>,
        tops: &mut [TopK],
        ids: &[i64],
    ) {
        let (p0, p1) = (range.start, range.end);
        // SAFETY: `new` refused kernels that `Kernel::available` denies, so the CPU has
        // the target features of the function called; `p1 <= view.panels()` and `tops`
        // holds one top-k per query, as each scan function requires.
        unsafe {
            match self.kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => super::x86::scan_avx512::<E>(view, blocks, p0, p1, tops, ids),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => super::x86::scan_avx2::<E>(view, blocks, p0, p1, tops, ids),
                #[cfg(target_arch = "aarch64")]
                Kernel::Neon => super::aarch64::scan_neon::<E>(view, blocks, p0, p1, tops, ids),
                _ => super::scalar::scan_scalar::<E>(view, blocks, p0, p1, tops, ids),
            }
        }
    }
}

/// Exact re-ranking of a quantised scan's candidates.
struct Rerank<'a> {
    exact: &'a ExactRows,
    k: usize,
    ids: &'a [i64],
    /// Most a quantised score can differ from the exact one.
    slack: f32,
}

impl Rerank<'_> {
    /// Re-scores one query's candidates exactly and keeps the best `k`; falls back to
    /// an exact scan of every row when a row outside the candidates might beat them.
    fn query(&self, cands: &TopK, query: &[f32]) -> TopK {
        let mut top = TopK::new(self.k);
        for &(_, row) in cands.items() {
            top.push(self.exact.score(row as usize, query), row, self.ids);
        }
        // Rows left out scored at most `lowest` quantised, so at most
        // `lowest + slack` exactly; every row is a candidate when fewer came back.
        let complete = cands.items().len() < self.k + RERANK_MARGIN
            || match (cands.items().last(), top.items().get(self.k - 1)) {
                (Some(&(lowest, _)), Some(&(kth, _))) => lowest + self.slack < kth,
                _ => false,
            };
        if complete {
            return top;
        }
        let mut top = TopK::new(self.k);
        for row in 0..self.exact.rows() {
            let score = self.exact.score(row, query);
            if score >= top.threshold() {
                top.push(score, row as u32, self.ids);
            }
        }
        top
    }
}

/// Checks `n` rows of `dim` values and returns them normalised.
fn unit_rows(
    values: &[f32],
    dim: usize,
    n: usize,
    what: &'static str,
) -> Result<Zeroizing<Vec<f32>>> {
    if values.len() != n * dim {
        return Err(Error::Length {
            what: "values for the given number of rows and dim",
            expected: n * dim,
            got: values.len(),
        });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(values.len()));
    for (index, row) in values.chunks_exact(dim).enumerate() {
        if !row.iter().all(|x| x.is_finite()) {
            return Err(Error::NonFinite { what, index });
        }
        match normalize(row) {
            Some(mut unit) => {
                out.extend_from_slice(&unit);
                unit.zeroize();
            }
            None => return Err(Error::Zero { what, index }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    fn brute(db: &[Vec<f32>], q: &[f32]) -> Vec<(f32, usize)> {
        let qn = normalize(q).expect("non-zero");
        let mut s: Vec<(f32, usize)> = db
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let vn = normalize(v).expect("non-zero");
                (vn.iter().zip(&qn).map(|(a, b)| a * b).sum(), i)
            })
            .collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        s
    }

    #[test]
    fn every_kernel_and_size_matches_brute_force() {
        let mut seed = 7;
        for dim in [1usize, 3, 16, 37, 128] {
            let db: Vec<Vec<f32>> = (0..101)
                .map(|_| (0..dim).map(|_| lcg(&mut seed) + 0.01).collect())
                .collect();
            let queries: Vec<f32> = (0..11 * dim).map(|_| lcg(&mut seed) + 0.01).collect();
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                for threads in [1, 3] {
                    let m = Matcher::new(
                        dim,
                        Dtype::F32,
                        Some(threads),
                        Some(kernel),
                        true,
                        Memory::Heap,
                    )
                    .expect("matcher");
                    let ids: Vec<i64> = (0..db.len() as i64).map(|i| i * 10).collect();
                    m.add(&ids, &db.concat()).expect("add");
                    let r = m.search(&queries, 3).expect("search");
                    for (qi, q) in queries.chunks(dim).enumerate() {
                        let want = brute(&db, q);
                        for (j, w) in want.iter().take(3).enumerate() {
                            let got = r.scores[qi * 3 + j];
                            assert!((got - w.0).abs() < 1e-5, "{kernel:?} dim {dim}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn failed_calls_change_nothing() {
        let m = Matcher::new(2, Dtype::F32, Some(1), None, true, Memory::Heap).expect("matcher");
        m.add(&[1, 2], &[1.0, 0.0, 0.0, 1.0]).expect("add");
        assert!(m.add(&[3, 4], &[1.0, 0.0, f32::NAN, 1.0]).is_err());
        assert!(m.add(&[3, 1], &[1.0, 0.0, 1.0, 1.0]).is_err());
        assert!(m.add(&[3, 3], &[1.0, 0.0, 1.0, 1.0]).is_err());
        assert!(m.add(&[3], &[0.0, 0.0]).is_err());
        assert_eq!(m.remove(&[2, 9]), Err(Error::UnknownId { id: 9 }));
        assert_eq!(m.len(), 2);
        let r = m.search(&[0.0, 1.0], 3).expect("search");
        assert_eq!(r.ids, vec![2, 1, -1]);
        assert_eq!(r.scores[2], f32::NEG_INFINITY);
    }

    #[test]
    fn secure_memory_gives_the_same_results() {
        let mut seed = 11;
        let dim = 37;
        for dtype in [Dtype::F32, Dtype::F16, Dtype::I8] {
            let secure = Memory::Secure {
                allow_unlocked: true,
            };
            let make = |memory| Matcher::new(dim, dtype, Some(1), None, true, memory);
            let (heap, locked) = (
                make(Memory::Heap).expect("heap"),
                make(secure).expect("secure"),
            );
            assert_eq!(locked.memory(), secure);
            for batch in [1usize, 20, 70] {
                let start = heap.len() as i64;
                let ids: Vec<i64> = (start..start + batch as i64).collect();
                let vecs: Vec<f32> = (0..batch * dim).map(|_| lcg(&mut seed) + 0.01).collect();
                heap.add(&ids, &vecs).expect("add");
                locked.add(&ids, &vecs).expect("add");
            }
            heap.remove(&[0, 5, 90]).expect("remove");
            locked.remove(&[0, 5, 90]).expect("remove");
            assert_eq!(heap.nbytes(), locked.nbytes());
            let queries: Vec<f32> = (0..9 * dim).map(|_| lcg(&mut seed)).collect();
            assert_eq!(
                heap.search(&queries, 5).expect("search"),
                locked.search(&queries, 5).expect("search"),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn remove_keeps_the_rest_findable() {
        let m = Matcher::new(2, Dtype::I8, Some(1), None, false, Memory::Heap).expect("matcher");
        let n = 40;
        let vecs: Vec<f32> = (0..n)
            .flat_map(|i| {
                let a = i as f32 * 0.07;
                [a.cos(), a.sin()]
            })
            .collect();
        let ids: Vec<i64> = (0..n as i64).collect();
        m.add(&ids, &vecs).expect("add");
        m.remove(&[0, 17, 39]).expect("remove");
        assert_eq!(m.len(), n - 3);
        for i in [1usize, 16, 18, 38] {
            let r = m.search(&vecs[2 * i..2 * i + 2], 1).expect("search");
            assert_eq!(r.ids[0], i as i64);
        }
        assert!(!m.contains(17));
    }
}
