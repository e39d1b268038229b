//! The k best (score, row) pairs of one query, best first.
//!
//! Order: higher score first; equal scores by smaller id, so results do not depend on
//! the kernel, the thread split or the storage order.

/// One query's running top-k.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// (score, row), sorted best first; at most `k` long.
    items: Vec<(f32, u32)>,
}

impl TopK {
    /// An empty top-k; `k >= 1`.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            items: Vec::with_capacity(k.min(1024) + 1),
        }
    }

    /// Scores below this cannot enter (scores equal to it may, on a smaller id).
    #[inline(always)]
    pub fn threshold(&self) -> f32 {
        if self.items.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.items[self.k - 1].0
        }
    }

    /// Offers `row` with `score`; `ids` maps rows to ids for tie-breaking.
    #[inline(never)]
    pub fn push(&mut self, score: f32, row: u32, ids: &[i64]) {
        let better = |a: (f32, u32), b: (f32, u32)| {
            a.0 > b.0 || (a.0 == b.0 && ids[a.1 as usize] < ids[b.1 as usize])
        };
        let item = (score, row);
        if self.items.len() == self.k {
            match self.items.last() {
                Some(&worst) if better(item, worst) => {
                    self.items.pop();
                }
                _ => return,
            }
        }
        let pos = self.items.partition_point(|&x| better(x, item));
        self.items.insert(pos, item);
    }

    /// Folds another top-k of the same query into this one.
    pub fn merge(&mut self, other: &TopK, ids: &[i64]) {
        for &(s, r) in &other.items {
            self.push(s, r, ids);
        }
    }

    /// The (score, row) pairs, best first.
    pub fn items(&self) -> &[(f32, u32)] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_in_order_with_ties_by_id() {
        let ids = [10, 5, 7, 3];
        let mut t = TopK::new(2);
        t.push(0.5, 0, &ids);
        t.push(0.9, 1, &ids);
        t.push(0.5, 3, &ids); // ties 0.5 with row 0 but has the smaller id
        t.push(0.1, 2, &ids);
        assert_eq!(t.items(), &[(0.9, 1), (0.5, 3)]);
        assert_eq!(t.threshold(), 0.5);
    }

    #[test]
    fn merge_equals_one_pass() {
        let ids: Vec<i64> = (0..8).collect();
        let scores = [0.3, 0.8, 0.1, 0.8, 0.5, 0.7, 0.2, 0.9];
        let mut all = TopK::new(3);
        let mut a = TopK::new(3);
        let mut b = TopK::new(3);
        for (r, &s) in scores.iter().enumerate() {
            all.push(s, r as u32, &ids);
            if r < 4 {
                a.push(s, r as u32, &ids)
            } else {
                b.push(s, r as u32, &ids)
            }
        }
        a.merge(&b, &ids);
        assert_eq!(a.items(), all.items());
    }
}
