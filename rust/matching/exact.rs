//! An exact f32 copy of the unit vectors, row-major, for re-ranking the candidates of a
//! quantised scan. Zeroized on removal, growth and drop, like the panels, and kept in
//! the same kind of memory.

use zeroize::Zeroize;

use super::backing::{Backing, Memory};
use crate::error::Result;

/// Unit vectors, one contiguous row each.
pub struct ExactRows {
    dim: usize,
    /// Values in use, at the start of `values`.
    len: usize,
    values: Backing,
}

impl ExactRows {
    /// An empty store of `dim`-dimensional rows, to be kept in `memory`.
    pub fn new(dim: usize, memory: Memory) -> ExactRows {
        ExactRows {
            dim,
            len: 0,
            values: Backing::new(memory),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.len / self.dim
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.values.len()
    }

    /// Room for `extra` more rows, without changing `self`: `None` when there is room
    /// already, else a larger buffer (at least double) holding the current rows, for
    /// [`ExactRows::install`]. Fails where secure memory cannot be had.
    pub fn prepare(&self, extra: usize) -> Result<Option<Backing>> {
        let needed = (self.len + extra * self.dim) * 4;
        if needed <= self.values.len() {
            return Ok(None);
        }
        self.values
            .grown(needed.max(self.values.len() * 2))
            .map(Some)
    }

    /// Switches to the buffer of a `prepare` made since the last change; the old one
    /// is zeroized and freed.
    pub fn install(&mut self, values: Backing) {
        self.values = values;
    }

    /// Appends rows (`n x dim`); `prepare` and `install` must have made room.
    pub fn extend(&mut self, rows: &[f32]) {
        let start = self.len;
        self.values.floats_mut()[start..start + rows.len()].copy_from_slice(rows);
        self.len += rows.len();
    }

    /// Moves the last row into `row` and zeroizes the vacated one.
    pub fn swap_remove(&mut self, row: usize) {
        let d = self.dim;
        let last = self.len / d - 1;
        let values = self.values.floats_mut();
        if row != last {
            values.copy_within(last * d..(last + 1) * d, row * d);
        }
        values[last * d..(last + 1) * d].zeroize();
        self.len = last * d;
    }

    /// Exact score of `query` (unit, `dim` long) against `row`.
    pub fn score(&self, row: usize, query: &[f32]) -> f32 {
        dot(
            &self.values.floats()[row * self.dim..(row + 1) * self.dim],
            query,
        )
    }
}

/// Dot product with eight independent partial sums (vectorised by the compiler).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_keeps_rows_and_scores_exact() {
        let mut r = ExactRows::new(3, Memory::Heap);
        let grown = r.prepare(3).expect("prepare").expect("room");
        r.install(grown);
        assert!(r.prepare(3).expect("prepare").is_none());
        r.extend(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        r.swap_remove(0);
        assert_eq!(r.score(0, &[0.0, 0.0, 1.0]), 1.0);
        assert_eq!(r.score(1, &[0.0, 1.0, 0.0]), 1.0);
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), want);
    }
}
