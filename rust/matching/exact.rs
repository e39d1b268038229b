//! An exact f32 copy of the unit vectors, row-major, for re-ranking the candidates of a
//! quantised scan. Zeroized on removal, growth and drop, like the panels.

use zeroize::Zeroize;

/// Unit vectors, one contiguous row each.
pub struct ExactRows {
    dim: usize,
    values: Vec<f32>,
}

impl ExactRows {
    /// An empty store of `dim`-dimensional rows.
    pub fn new(dim: usize) -> ExactRows {
        ExactRows {
            dim,
            values: Vec::new(),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Bytes held.
    pub fn nbytes(&self) -> usize {
        self.values.capacity() * 4
    }

    /// Appends rows (`n x dim`), growing through a zeroized copy.
    pub fn extend(&mut self, rows: &[f32]) {
        if self.values.len() + rows.len() > self.values.capacity() {
            let target = (self.values.len() + rows.len()).max(self.values.capacity() * 2);
            let mut grown: Vec<f32> = Vec::with_capacity(target);
            super::store::advise_huge_pages(grown.as_mut_ptr().cast(), target * 4);
            grown.extend_from_slice(&self.values);
            self.values.zeroize();
            self.values = grown;
        }
        self.values.extend_from_slice(rows);
    }

    /// Moves the last row into `row` and zeroizes the vacated one.
    pub fn swap_remove(&mut self, row: usize) {
        let d = self.dim;
        let last = self.values.len() / d - 1;
        if row != last {
            self.values.copy_within(last * d..(last + 1) * d, row * d);
        }
        self.values[last * d..].zeroize();
        self.values.truncate(last * d);
    }

    /// Exact score of `query` (unit, `dim` long) against `row`.
    pub fn score(&self, row: usize, query: &[f32]) -> f32 {
        dot(&self.values[row * self.dim..(row + 1) * self.dim], query)
    }
}

impl Drop for ExactRows {
    fn drop(&mut self) {
        self.values.zeroize();
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
        let mut r = ExactRows::new(3);
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
