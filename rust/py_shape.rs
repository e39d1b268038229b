//! Python wrapper of `shape::ShapeModel`: the model comes from `lfr._shape`'s parser of
//! dlib's file; prediction reads the caller's image in place (any strides, never
//! copied) and writes the landmarks into the caller's array.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use zeroize::Zeroizing;

use crate::py_buffer::{borrow, read, write};
use crate::shape::{Cascade, Image, ShapeModel};

/// One cascade as `lfr._shape` hands it over: anchors int64[P], deltas float32[P, 2],
/// split pixel pairs int64[T, S, 2], thresholds float32[T, S], leaves float32[T, L, 2K],
/// depth.
type PyCascade<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    u32,
);

/// dlib's shape predictor (see `lfr._shape.ShapePredictor` for the documented API).
#[pyclass(name = "ShapeModel", module = "lfr._core")]
pub struct PyShapeModel {
    inner: ShapeModel,
}

#[pymethods]
impl PyShapeModel {
    #[new]
    fn new(initial: &Bound<'_, PyAny>, cascades: Vec<PyCascade<'_>>) -> PyResult<Self> {
        let (initial, shape) = read::<f32>(initial, "initial", "float32", 2)?;
        if shape[1] != 2 {
            return Err(PyValueError::new_err("initial must have shape (K, 2)"));
        }
        let parts = shape[0];
        let mut levels = Vec::with_capacity(cascades.len());
        for (anchors, deltas, splits, thresh, leaves, depth) in cascades {
            let (anchors, _) = read::<i64>(&anchors, "anchors", "int64", 1)?;
            let (deltas, _) = read::<f32>(&deltas, "deltas", "float32", 2)?;
            let (splits, _) = read::<i64>(&splits, "splits", "int64", 3)?;
            let (thresh, _) = read::<f32>(&thresh, "thresh", "float32", 2)?;
            let (leaves, _) = read::<f32>(&leaves, "leaves", "float32", 3)?;
            levels.push(Cascade::new(
                parts, &anchors, &deltas, &splits, &thresh, &leaves, depth,
            )?);
        }
        Ok(PyShapeModel {
            inner: ShapeModel::new(&initial, levels)?,
        })
    }

    /// Writes the landmarks of the faces in `rects` (float64[n, 4]) on `image`
    /// (uint8[h, w] or [h, w, 3], any strides) into `out` (float32[n, K, 2]).
    fn predict(
        &self,
        image: &Bound<'_, PyAny>,
        rects: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        subpixel: bool,
    ) -> PyResult<()> {
        let (rects, shape) = read::<f64>(rects, "rects", "float64", 2)?;
        if shape[1] != 4 {
            return Err(PyValueError::new_err("rects must have shape (n, 4)"));
        }
        let buf = borrow::<u8>(image, false).map_err(|r| {
            r.explain(
                image.py(),
                PyTypeError::new_err("image must be a uint8 array"),
            )
        })?;
        let (dims, strides) = (buf.shape(), buf.strides());
        let (size, steps) = match (dims.as_slice(), strides.as_slice()) {
            (&[h, w], &[sh, sw]) => ([h, w, 1], [sh, sw, 0]),
            (&[h, w, 3], &[sh, sw, sc]) => ([h, w, 3], [sh, sw, sc]),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "image must have shape (h, w) or (h, w, 3), got {dims:?}"
                )))
            }
        };
        let count = buf.consistent_item_count().ok_or_else(|| {
            PyValueError::new_err("image's buffer is inconsistent (shape, item size, length)")
        })?;
        // The bytes the view reaches, relative to its first element.
        let (mut low, mut high) = (0isize, 0isize);
        if count > 0 {
            for (n, s) in size.iter().zip(steps) {
                let reach = (*n as isize - 1) * s;
                low += reach.min(0);
                high += reach.max(0);
            }
        }
        let view = if count == 0 {
            Image::new(&[], 0, size, steps)?
        } else {
            // SAFETY: `buf` holds a buffer export of `image` until this function returns,
            // so the memory stays allocated; the exporter guarantees that every element
            // its shape and strides address lies in that memory, and `low..=high` spans
            // exactly those bytes around the first element. `Image` reads it through the
            // raw pointer only (other threads may write the array meanwhile) and does not
            // outlive `buf`.
            unsafe {
                Image::from_raw(
                    buf.ptr().cast_const().offset(low),
                    (high - low + 1) as usize,
                    low.unsigned_abs(),
                    size,
                    steps,
                )?
            }
        };
        let mut landmarks = Zeroizing::new(vec![0.0f32; shape[0] * 2 * self.inner.parts()]);
        self.inner
            .predict(&view, &rects, subpixel, &mut landmarks)?;
        write(out, "out", &landmarks)
    }

    /// Number of landmarks.
    #[getter]
    fn parts(&self) -> usize {
        self.inner.parts()
    }

    /// `(trees, depth, feature pixels)` of each cascade.
    #[getter]
    fn cascades(&self) -> Vec<(usize, u32, usize)> {
        self.inner
            .cascades()
            .iter()
            .map(|c| (c.trees(), c.depth(), c.pixels()))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "ShapeModel(parts={}, cascades={})",
            self.inner.parts(),
            self.inner.cascades().len()
        )
    }
}
