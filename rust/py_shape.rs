//! Python wrapper of `shape::ShapeModel`: the model comes from `lfr._shape`'s parser of
//! dlib's file; prediction reads the caller's image in place (any strides, never
//! copied) and writes the landmarks into the caller's array.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use zeroize::Zeroizing;

use crate::py_array::{read, write};
use crate::shape::{Cascade, Image, ShapeModel};

/// One cascade as `lfr._shape` hands it over: anchors int64[P], deltas float32[P, 2],
/// split pixel pairs int64[T, S, 2], thresholds float32[T, S], leaves float32[T, L, 2K],
/// depth.
type PyCascade<'a> = (&'a PyAny, &'a PyAny, &'a PyAny, &'a PyAny, &'a PyAny, u32);

/// dlib's shape predictor (see `lfr._shape.ShapePredictor` for the documented API).
#[pyclass(
    name = "ShapeModel",
    module = "lfr._core",
    text_signature = "(initial, cascades)"
)]
pub struct PyShapeModel {
    inner: ShapeModel,
}

#[pymethods]
impl PyShapeModel {
    #[new]
    fn new(py: Python<'_>, initial: &PyAny, cascades: Vec<PyCascade<'_>>) -> PyResult<Self> {
        let (initial, shape) = read::<f32>(py, initial, "initial", "float32", 2)?;
        if shape[1] != 2 {
            return Err(PyValueError::new_err("initial must have shape (K, 2)"));
        }
        let parts = shape[0];
        let mut levels = Vec::with_capacity(cascades.len());
        for (anchors, deltas, splits, thresh, leaves, depth) in cascades {
            let (anchors, _) = read::<i64>(py, anchors, "anchors", "int64", 1)?;
            let (deltas, _) = read::<f32>(py, deltas, "deltas", "float32", 2)?;
            let (splits, _) = read::<i64>(py, splits, "splits", "int64", 3)?;
            let (thresh, _) = read::<f32>(py, thresh, "thresh", "float32", 2)?;
            let (leaves, _) = read::<f32>(py, leaves, "leaves", "float32", 3)?;
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
    #[pyo3(text_signature = "($self, image, rects, out, subpixel)")]
    fn predict(
        &self,
        py: Python<'_>,
        image: &PyAny,
        rects: &PyAny,
        out: &PyAny,
        subpixel: bool,
    ) -> PyResult<()> {
        let (rects, shape) = read::<f64>(py, rects, "rects", "float64", 2)?;
        if shape[1] != 4 {
            return Err(PyValueError::new_err("rects must have shape (n, 4)"));
        }
        let buf = PyBuffer::<u8>::get(image)
            .map_err(|_| PyTypeError::new_err("image must be a uint8 array"))?;
        let (dims, strides) = (buf.shape(), buf.strides());
        let (size, steps) = match (dims, strides) {
            (&[h, w], &[sh, sw]) => ([h, w, 1], [sh, sw, 0]),
            (&[h, w, 3], &[sh, sw, sc]) => ([h, w, 3], [sh, sw, sc]),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "image must have shape (h, w) or (h, w, 3), got {dims:?}"
                )))
            }
        };
        // The bytes the view reaches, relative to its first element.
        let (mut low, mut high) = (0isize, 0isize);
        if buf.item_count() > 0 {
            for (n, s) in size.iter().zip(steps) {
                let reach = (*n as isize - 1) * s;
                low += reach.min(0);
                high += reach.max(0);
            }
        }
        let bytes: &[u8] = if buf.item_count() == 0 {
            &[]
        } else {
            // SAFETY: `buf` holds a buffer export of `image` until this function returns,
            // so the memory stays allocated; the exporter guarantees that every element
            // its shape and strides address lies in that memory, and `low..=high` spans
            // exactly those bytes around the first element. The slice does not outlive
            // `buf`, and the GIL is held throughout, so no Python code writes to the
            // array while it is read.
            unsafe {
                let first = buf.buf_ptr().cast::<u8>().cast_const();
                std::slice::from_raw_parts(first.offset(low), (high - low + 1) as usize)
            }
        };
        let view = Image::new(bytes, low.unsigned_abs(), size, steps)?;
        let mut landmarks = Zeroizing::new(vec![0.0f32; shape[0] * 2 * self.inner.parts()]);
        self.inner
            .predict(&view, &rects, subpixel, &mut landmarks)?;
        write(py, out, "out", &landmarks)
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
