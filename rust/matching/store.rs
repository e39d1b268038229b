//! The watchlist matrix: rows of L2-normalised vectors, stored in panels of 16 rows.
//!
//! Layout: panel `p` holds rows `16p .. 16p+16`, dimension-major. For each dimension `t`
//! the 16 rows' values are contiguous (one 64-byte vector of f32, 32 bytes of f16 or 16
//! bytes of i8), so a SIMD kernel loads the values of 16 rows with one instruction and
//! never needs a horizontal sum. Panels start on 64-byte boundaries; unused lanes of the
//! last panel are zero. Every byte that held a vector is zeroized before it is freed;
//! with [`Memory::Secure`] the bytes also live in locked, undumpable memory.

use zeroize::Zeroize;

use super::backing::{Backing, Memory};
use crate::error::Result;

/// Rows per panel (the lane count every kernel works with).
pub const LANES: usize = 16;

/// Storage precision of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats: exact.
    F32,
    /// IEEE half precision, rounded to nearest even.
    F16,
    /// 8-bit integers with a per-row scale: `q = rint(x / max|x| * 127)` and
    /// scale `1 / ||q||`, so `scale * q` is the unit vector nearest to `x`'s direction.
    I8,
}

impl Dtype {
    /// Parses `"f32" | "f16" | "i8"`.
    pub fn parse(name: &str) -> Option<Dtype> {
        match name {
            "f32" => Some(Dtype::F32),
            "f16" => Some(Dtype::F16),
            "i8" => Some(Dtype::I8),
            _ => None,
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::I8 => "i8",
        }
    }

    /// Bytes per stored element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::I8 => 1,
        }
    }
}

/// A read-only view of the matrix for the kernels.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// First byte of panel 0 (64-byte aligned).
    pub base: *const u8,
    /// Bytes from one panel to the next (a multiple of 64).
    pub panel_stride: usize,
    /// Vector dimension.
    pub dim: usize,
    /// Rows in use; lanes at or beyond it are padding.
    pub rows: usize,
    /// Per-row scales (i8 only; empty otherwise), `16 * panels` long.
    pub scales: &'a [f32],
}

// SAFETY: a View is a shared borrow of `Panels` (the raw pointer comes from `&self` and
// the lifetime ties the view to it); nothing writes through it.
unsafe impl Send for View<'_> {}
// SAFETY: as above, the data is only read while the view lives.
unsafe impl Sync for View<'_> {}

impl View<'_> {
    /// Number of panels that hold at least one row.
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(LANES)
    }
}

/// The matrix itself.
pub struct Panels {
    dtype: Dtype,
    dim: usize,
    rows: usize,
    panel_stride: usize,
    /// Whole panels; `lines.len()` is a multiple of `panel_stride`.
    lines: Backing,
    /// Per-row scales, 16 per panel of `lines` (i8 only; empty otherwise).
    scales: Backing,
}

/// Larger buffers made by [`Panels::prepare`], holding the current rows.
pub struct Growth {
    lines: Backing,
    scales: Backing,
}

impl Panels {
    /// An empty matrix of vectors with `dim` components, to be kept in `memory`.
    pub fn new(dim: usize, dtype: Dtype, memory: Memory) -> Panels {
        let panel_bytes = dim * LANES * dtype.size();
        Panels {
            dtype,
            dim,
            rows: 0,
            panel_stride: panel_bytes.div_ceil(64) * 64,
            lines: Backing::new(memory),
            scales: Backing::new(memory),
        }
    }

    /// Number of rows stored.
    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes held for vectors (panels plus scales), for reporting.
    pub fn nbytes(&self) -> usize {
        self.lines.len() + self.scales.len()
    }

    /// The kernels' view.
    pub fn view(&self) -> View<'_> {
        View {
            base: self.lines.as_ptr(),
            panel_stride: self.panel_stride,
            dim: self.dim,
            rows: self.rows,
            scales: self.scales.floats(),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.lines.bytes_mut()
    }

    /// Room for `extra` more rows, without changing `self`: `None` when there is room
    /// already, else larger buffers (at least double) holding the current rows, for
    /// [`Panels::install`]. Fails where secure memory cannot be had.
    pub fn prepare(&self, extra: usize) -> Result<Option<Growth>> {
        let have = self.lines.len() / self.panel_stride;
        let needed = (self.rows + extra).div_ceil(LANES);
        if needed <= have {
            return Ok(None);
        }
        let panels = needed.max(have * 2);
        let lines = self.lines.grown(panels * self.panel_stride)?;
        let scales = match self.dtype {
            Dtype::I8 => self.scales.grown(panels * LANES * 4)?,
            Dtype::F32 | Dtype::F16 => self.scales.grown(0)?,
        };
        Ok(Some(Growth { lines, scales }))
    }

    /// Switches to the buffers of a `prepare` made since the last change; the old
    /// ones are zeroized and freed.
    pub fn install(&mut self, growth: Growth) {
        self.lines = growth.lines;
        self.scales = growth.scales;
    }

    /// `prepare` and `install` in one step.
    #[cfg(test)]
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        if let Some(growth) = self.prepare(extra)? {
            self.install(growth);
        }
        Ok(())
    }

    fn offset(&self, row: usize, t: usize) -> usize {
        let esize = self.dtype.size();
        (row / LANES) * self.panel_stride + (t * LANES + row % LANES) * esize
    }

    /// Appends one unit vector (`dim` finite values). Call `reserve` first.
    ///
    /// Returns the Euclidean distance between the vector and what is stored for it
    /// (0 for f32): no score against a unit query is off by more than that.
    pub fn push(&mut self, unit: &[f32]) -> f64 {
        let row = self.rows;
        self.rows += 1;
        self.write_row(row, unit)
    }

    fn write_row(&mut self, row: usize, unit: &[f32]) -> f64 {
        let offsets: Vec<usize> = (0..self.dim).map(|t| self.offset(row, t)).collect();
        let distance = |stored: &mut dyn Iterator<Item = f32>| {
            unit.iter()
                .zip(stored)
                .map(|(&x, y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        match self.dtype {
            Dtype::F32 => {
                let bytes = self.bytes_mut();
                for (&o, &x) in offsets.iter().zip(unit) {
                    bytes[o..o + 4].copy_from_slice(&x.to_ne_bytes());
                }
                0.0
            }
            Dtype::F16 => {
                let mut halves: Vec<u16> = unit
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_bits())
                    .collect();
                let bytes = self.bytes_mut();
                for (&o, h) in offsets.iter().zip(&halves) {
                    bytes[o..o + 2].copy_from_slice(&h.to_ne_bytes());
                }
                let error = distance(&mut halves.iter().map(|&h| half::f16::from_bits(h).to_f32()));
                halves.zeroize();
                error
            }
            Dtype::I8 => {
                let (mut codes, scale) = quantize_i8(unit);
                let bytes = self.bytes_mut();
                for (&o, &q) in offsets.iter().zip(&codes) {
                    bytes[o] = q.to_ne_bytes()[0];
                }
                self.scales.floats_mut()[row] = scale;
                let error = distance(&mut codes.iter().map(|&q| f32::from(q) * scale));
                codes.zeroize();
                error
            }
        }
    }

    /// Moves the last row into `row` (swap-remove) and zeroizes the last row's bytes.
    pub fn swap_remove(&mut self, row: usize) {
        let last = self.rows - 1;
        let esize = self.dtype.size();
        let pairs: Vec<(usize, usize)> = (0..self.dim)
            .map(|t| (self.offset(last, t), self.offset(row, t)))
            .collect();
        let bytes = self.bytes_mut();
        for &(src, dst) in &pairs {
            if src != dst {
                bytes.copy_within(src..src + esize, dst);
            }
            bytes[src..src + esize].zeroize();
        }
        if self.dtype == Dtype::I8 {
            let scales = self.scales.floats_mut();
            scales[row] = scales[last];
            scales[last].zeroize();
        }
        self.rows = last;
    }
}

/// The i8 code of a unit vector and the scale that maps it back to unit length.
pub fn quantize_i8(unit: &[f32]) -> (Vec<i8>, f32) {
    let max = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let codes: Vec<i8> = unit
        .iter()
        .map(|&x| (x / max * 127.0).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    let norm = codes
        .iter()
        .map(|&q| f64::from(q) * f64::from(q))
        .sum::<f64>()
        .sqrt();
    (codes, (1.0 / norm) as f32)
}

/// Normalises `v` to unit length (norm computed in f64, so large values cannot overflow).
/// Returns `None` for a zero vector; the caller checks finiteness first.
pub fn normalize(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return None;
    }
    Some(v.iter().map(|&x| (f64::from(x) / norm) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_are_aligned_and_padded() {
        let mut p = Panels::new(5, Dtype::I8, Memory::Heap);
        p.reserve(17).expect("reserve");
        for i in 0..17 {
            let mut v = vec![0.0f32; 5];
            v[i % 5] = 1.0;
            p.push(&v);
        }
        let view = p.view();
        assert_eq!(view.base as usize % 64, 0);
        assert_eq!(view.panel_stride % 64, 0);
        assert_eq!(view.panels(), 2);
    }

    #[test]
    fn swap_remove_zeroizes_the_vacated_row() {
        let mut p = Panels::new(4, Dtype::F32, Memory::Heap);
        p.reserve(2).expect("reserve");
        p.push(&[1.0, 0.0, 0.0, 0.0]);
        p.push(&[0.0, 1.0, 0.0, 0.0]);
        p.swap_remove(0);
        assert_eq!(p.rows(), 1);
        let bytes = p.bytes_mut().to_vec();
        let one = 1.0f32.to_ne_bytes();
        // Row 0 now holds the old row 1 (component 1), lane 1 is all zeros.
        assert_eq!(&bytes[LANES * 4..LANES * 4 + 4], &one);
        assert!(bytes[4..8].iter().all(|&b| b == 0));
        assert!(bytes[LANES * 4 + 4..LANES * 4 + 8].iter().all(|&b| b == 0));
    }

    #[test]
    fn i8_scale_restores_unit_length() {
        let u = normalize(&[0.3, -0.2, 0.9, 0.1]).expect("non-zero");
        let (q, s) = quantize_i8(&u);
        let n: f32 = q.iter().map(|&c| (f32::from(c) * s).powi(2)).sum();
        assert!((n - 1.0).abs() < 1e-6);
        assert_eq!(q.iter().map(|c| c.unsigned_abs()).max(), Some(127));
    }

    #[test]
    fn zero_vector_is_refused() {
        assert!(normalize(&[0.0, 0.0]).is_none());
        assert!(normalize(&[1e30, 1e30]).is_some());
    }
}
