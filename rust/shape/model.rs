//! dlib's `shape_predictor` as the native core holds it: the mean shape, the weights of
//! the similarity fit to it, and the cascades of regression trees, checked once when
//! built so that prediction can index without failing.

use crate::error::{Error, Result};

/// Deepest tree accepted (dlib's 5- and 68-point models use depth 4).
pub const MAX_DEPTH: u32 = 10;

/// One node of a tree: dlib goes left where `float(p1) - float(p2) > thresh`; for the
/// integer difference of two 8-bit pixels that is `p1 - p2 > floor(thresh)` (clipped to
/// +-256), so no pixel is ever converted to float.
#[derive(Debug, Clone, Copy)]
pub(super) struct Split {
    /// Feature pixels compared (indices into the cascade's pixels).
    pub(super) first: u32,
    pub(super) second: u32,
    /// `floor(thresh)`, clipped.
    pub(super) thresh: i32,
}

/// One cascade level: where its feature pixels sit and the trees that read them.
#[derive(Debug, Clone)]
pub struct Cascade {
    /// Landmark each feature pixel is attached to.
    pub(super) anchors: Vec<usize>,
    /// Offset of each feature pixel from its anchor, `(dx, dy)` interleaved, in
    /// mean-shape coordinates.
    pub(super) deltas: Vec<f32>,
    /// Every split of every tree, tree-major.
    pub(super) splits: Vec<Split>,
    /// Leaf vectors (`2K` values each), tree-major.
    pub(super) leaves: Vec<f32>,
    /// Depth of every tree: `2^depth - 1` splits, `2^depth` leaves.
    pub(super) depth: u32,
    /// Number of trees.
    pub(super) trees: usize,
    /// Values per leaf vector: twice the model's landmarks.
    pub(super) dims: usize,
}

impl Cascade {
    /// Checks and lays out one level.
    ///
    /// `anchors[P]`, `deltas[P * 2]`, `splits[T * S * 2]` (pixel index pairs),
    /// `thresh[T * S]`, `leaves[T * L * 2K]` with `S = 2^depth - 1`, `L = 2^depth`,
    /// for a model of `parts` = K landmarks.
    pub fn new(
        parts: usize,
        anchors: &[i64],
        deltas: &[f32],
        splits: &[i64],
        thresh: &[f32],
        leaves: &[f32],
        depth: u32,
    ) -> Result<Cascade> {
        if parts == 0 {
            return Err(invalid("a model needs at least one landmark".to_string()));
        }
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "tree depth {depth} is over the limit of {MAX_DEPTH}"
            )));
        }
        let pixels = anchors.len();
        let nodes = (1usize << depth) - 1;
        let dims = 2 * parts;
        length("deltas", deltas.len(), 2 * pixels)?;
        let trees = match nodes {
            0 => leaves.len() / dims.max(1),
            _ => thresh.len() / nodes,
        };
        length("split thresholds", thresh.len(), trees * nodes)?;
        length("split pixel pairs", splits.len(), 2 * trees * nodes)?;
        length("leaf values", leaves.len(), trees * (nodes + 1) * dims)?;
        if trees == 0 {
            return Err(invalid("a cascade has no trees".to_string()));
        }
        let anchors = anchors
            .iter()
            .map(|&a| index(a, parts, "anchor landmark").map(|v| v as usize))
            .collect::<Result<Vec<_>>>()?;
        if !deltas
            .iter()
            .chain(leaves)
            .chain(thresh)
            .all(|v| v.is_finite())
        {
            return Err(invalid(
                "a delta, threshold or leaf value is not finite".to_string(),
            ));
        }
        let splits = splits
            .chunks_exact(2)
            .zip(thresh)
            .map(|(p, &t)| {
                Ok(Split {
                    first: index(p[0], pixels, "split pixel")?,
                    second: index(p[1], pixels, "split pixel")?,
                    // Exact: the clipped floor is an integer in [-256, 256].
                    thresh: t.floor().clamp(-256.0, 256.0) as i32,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Cascade {
            anchors,
            deltas: deltas.to_vec(),
            splits,
            leaves: leaves.to_vec(),
            depth,
            trees,
            dims,
        })
    }

    /// Number of trees.
    pub fn trees(&self) -> usize {
        self.trees
    }

    /// Splits per tree.
    pub fn nodes(&self) -> usize {
        (1usize << self.depth) - 1
    }

    /// Depth of every tree.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Number of feature pixels.
    pub fn pixels(&self) -> usize {
        self.anchors.len()
    }
}

/// A whole predictor: mean shape, similarity weights and cascades.
#[derive(Debug, Clone)]
pub struct ShapeModel {
    /// Mean shape `(x, y)` interleaved, rectangle-normalised.
    pub(super) initial: Vec<f32>,
    /// `weights[j] = (wa, wb)`: `a = sum_j shape[j] * wa`, `b = sum_j shape[j] * wb`
    /// give dlib's least-squares similarity from the mean shape to `shape`
    /// (`[[a, -b], [b, a]]`).
    pub(super) weights: Vec<(f64, f64)>,
    pub(super) cascades: Vec<Cascade>,
}

impl ShapeModel {
    /// A model of `initial.len() / 2` landmarks.
    pub fn new(initial: &[f32], cascades: Vec<Cascade>) -> Result<ShapeModel> {
        if initial.len() < 2 || !initial.len().is_multiple_of(2) {
            return Err(invalid(format!(
                "the initial shape has {} values, expected 2 per landmark",
                initial.len()
            )));
        }
        let parts = initial.len() / 2;
        if cascades.is_empty() {
            return Err(invalid("the model has no cascades".to_string()));
        }
        for c in &cascades {
            // Cascade::new checked anchors and leaves against its own landmark count.
            length("landmarks of a cascade", c.dims / 2, parts)?;
        }
        Ok(ShapeModel {
            initial: initial.to_vec(),
            weights: similarity_weights(initial)?,
            cascades,
        })
    }

    /// Number of landmarks.
    pub fn parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// The cascades, in order.
    pub fn cascades(&self) -> &[Cascade] {
        &self.cascades
    }
}

/// dlib's `find_tform_between_shapes(reference, shape)` is a least-squares similarity
/// (Umeyama); for 2-D points its matrix is `[[a, -b], [b, a]]` with
/// `a = sum(s_k . r_k) / var`, `b = sum(r_k x s_k) / var` over the reference points
/// `r_k` centred on their mean (`var = sum |r_k|^2`). The shape's own mean drops out
/// because the centred reference sums to zero.
fn similarity_weights(reference: &[f32]) -> Result<Vec<(f64, f64)>> {
    let parts = reference.len() / 2;
    let mean = |axis: usize| {
        reference
            .iter()
            .skip(axis)
            .step_by(2)
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / parts as f64
    };
    let (mx, my) = (mean(0), mean(1));
    let centred: Vec<(f64, f64)> = reference
        .chunks_exact(2)
        .map(|p| (f64::from(p[0]) - mx, f64::from(p[1]) - my))
        .collect();
    let var: f64 = centred.iter().map(|(x, y)| x * x + y * y).sum();
    if !(var > 0.0 && var.is_finite()) {
        return Err(invalid(
            "the initial shape's points coincide or are not finite".to_string(),
        ));
    }
    let mut weights = Vec::with_capacity(2 * parts);
    for (rx, ry) in centred {
        let (rx, ry) = (rx / var, ry / var);
        weights.push((rx, -ry)); // x_k: a += x_k rx_k, b -= x_k ry_k
        weights.push((ry, rx)); // y_k: a += y_k ry_k, b += y_k rx_k
    }
    Ok(weights)
}

fn invalid(msg: String) -> Error {
    Error::Invalid(format!("shape predictor: {msg}"))
}

fn length(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(invalid(format!("{what}: expected {expected}, got {got}")))
    }
}

fn index(value: i64, bound: usize, what: &str) -> Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|&v| (v as usize) < bound)
        .ok_or_else(|| invalid(format!("{what} {value} is out of range (0..{bound})")))
}
