//! Running dlib's shape predictor: the image it samples and the cascade walk, with the
//! same floating-point operations, in the same order, as dlib's
//! `shape_predictor::operator()` (so the integer landmarks are dlib's).
//!
//! Pixel values and shapes are face-derived: the work vectors are zeroized on return.

use std::marker::PhantomData;

use zeroize::Zeroizing;

use super::model::{Cascade, ShapeModel};
use crate::error::{Error, Result};

/// An 8-bit image the predictor reads: grey (1 channel) or colour (3 channels, whose
/// grey value is dlib's integer mean `(c0 + c1 + c2) / 3`), addressed through byte
/// strides that may be negative, so any numpy view can be read in place.
///
/// The bytes are held as a raw pointer, never as a slice: the memory may belong to a
/// numpy array that another thread writes while the predictor reads it.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    data: *const u8,
    len: usize,
    bytes: PhantomData<&'a [u8]>,
    origin: usize,
    height: usize,
    width: usize,
    channels: usize,
    strides: [isize; 3],
}

impl<'a> Image<'a> {
    /// An image whose pixel `(y, x)`, channel `c` is at
    /// `data[origin + y * strides[0] + x * strides[1] + c * strides[2]]`; every such
    /// position must lie inside `data`.
    pub fn new(
        data: &'a [u8],
        origin: usize,
        shape: [usize; 3],
        strides: [isize; 3],
    ) -> Result<Image<'a>> {
        // SAFETY: a slice is readable for its length and outlives `'a`.
        unsafe { Image::from_raw(data.as_ptr(), data.len(), origin, shape, strides) }
    }

    /// As `new`, over `len` bytes at `data`.
    ///
    /// # Safety
    ///
    /// `data..data + len` must stay allocated and readable for `'a`; it may be written
    /// by others meanwhile (a read then sees either value).
    pub unsafe fn from_raw(
        data: *const u8,
        len: usize,
        origin: usize,
        shape: [usize; 3],
        strides: [isize; 3],
    ) -> Result<Image<'a>> {
        let [height, width, channels] = shape;
        if channels != 1 && channels != 3 {
            return Err(Error::Invalid(format!(
                "an image has 1 or 3 channels, got {channels}"
            )));
        }
        if height > 0 && width > 0 {
            let (mut low, mut high) = (origin as i128, origin as i128);
            for (n, s) in shape.iter().zip(strides) {
                let reach = (*n as i128 - 1) * s as i128;
                low += reach.min(0);
                high += reach.max(0);
            }
            if low < 0 || high >= len as i128 {
                return Err(Error::Invalid(
                    "the image's strides reach outside its buffer".to_string(),
                ));
            }
        }
        Ok(Image {
            data,
            len,
            bytes: PhantomData,
            origin,
            height,
            width,
            channels,
            strides,
        })
    }

    /// A C-contiguous `height x width x channels` image.
    pub fn contiguous(
        data: &'a [u8],
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Image<'a>> {
        let expected = height
            .checked_mul(width)
            .and_then(|v| v.checked_mul(channels));
        if expected != Some(data.len()) {
            return Err(Error::Length {
                what: "image bytes",
                expected: expected.unwrap_or(usize::MAX),
                got: data.len(),
            });
        }
        let row = (width * channels) as isize;
        Image::new(
            data,
            0,
            [height, width, channels],
            [row, channels as isize, 1],
        )
    }

    /// dlib's grey value at `(x, y)`, which must be inside the image.
    #[inline(always)]
    fn grey(&self, x: usize, y: usize) -> i16 {
        // In range (checked by `new` for every pixel), so wrapping never wraps.
        let base = (self.origin as isize)
            .wrapping_add((y as isize).wrapping_mul(self.strides[0]))
            .wrapping_add((x as isize).wrapping_mul(self.strides[1]));
        let at = |c: isize| {
            let offset = base.wrapping_add(c.wrapping_mul(self.strides[2])) as usize;
            if offset < self.len {
                // SAFETY: `offset < len`, and `from_raw`'s contract keeps `len` bytes at
                // `data` readable for `'a`; a volatile read, since others may write them.
                u16::from(unsafe { self.data.add(offset).read_volatile() })
            } else {
                0
            }
        };
        if self.channels == 1 {
            at(0) as i16
        } else {
            ((at(0) + at(1) + at(2)) / 3) as i16
        }
    }
}

impl ShapeModel {
    /// Landmarks of the faces in `rects` (`n * 4` values: dlib rectangles `left, top,
    /// right, bottom` with inclusive right and bottom corners) into `out`
    /// (`n * K * 2` values, `(x, y)` per landmark): rounded half up to whole pixels as
    /// dlib's `full_object_detection` holds them, unless `subpixel`.
    pub fn predict(
        &self,
        image: &Image<'_>,
        rects: &[f64],
        subpixel: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let dims = self.initial.len();
        let faces = rects.len() / 4;
        if !rects.len().is_multiple_of(4) {
            return Err(Error::Length {
                what: "rectangle values (4 per face)",
                expected: faces * 4 + 4,
                got: rects.len(),
            });
        }
        if out.len() != faces * dims {
            return Err(Error::Length {
                what: "landmark values",
                expected: faces * dims,
                got: out.len(),
            });
        }
        let most = |f: fn(&Cascade) -> usize| self.cascades.iter().map(f).max().unwrap_or(0);
        let mut shape = Zeroizing::new(vec![0.0f32; dims]);
        let mut pixels = Zeroizing::new(vec![0i16; most(|c| c.anchors.len())]);
        let mut leaves = Zeroizing::new(vec![0u32; most(|c| c.trees)]);
        for (rect, dest) in rects.chunks_exact(4).zip(out.chunks_exact_mut(dims)) {
            self.fit(image, rect, &mut shape, &mut pixels, &mut leaves);
            let scale = [rect[2] - rect[0], rect[3] - rect[1]];
            for (j, (v, d)) in shape.iter().zip(dest.iter_mut()).enumerate() {
                let p = f64::from(*v) * scale[j % 2] + rect[j % 2];
                *d = if subpixel { p } else { (p + 0.5).floor() } as f32;
            }
        }
        Ok(())
    }

    /// Runs every cascade for one face: `shape` ends in rectangle-normalised
    /// coordinates.
    fn fit(
        &self,
        image: &Image<'_>,
        rect: &[f64],
        shape: &mut [f32],
        pixels: &mut [i16],
        leaves: &mut [u32],
    ) {
        shape.copy_from_slice(&self.initial);
        let scale = [rect[2] - rect[0], rect[3] - rect[1]];
        let (width, height) = (image.width as f64, image.height as f64);
        for cascade in &self.cascades {
            // The similarity from the mean shape, in float64, then float32 as dlib
            // holds it.
            let (mut a, mut b) = (0.0f64, 0.0f64);
            for (v, (wa, wb)) in shape.iter().zip(&self.weights) {
                a += f64::from(*v) * wa;
                b += f64::from(*v) * wb;
            }
            let (a, b) = (a as f32, b as f32);
            // Feature pixels: tform * delta + anchor in float32, then through the
            // rectangle in float64, rounded half up (floor(v + 0.5): for the
            // non-negative values kept, the integer conversion); 0 outside the image
            // (NaN included).
            for ((value, &anchor), d) in pixels
                .iter_mut()
                .zip(&cascade.anchors)
                .zip(cascade.deltas.chunks_exact(2))
            {
                let px = a * d[0] + -b * d[1] + shape[2 * anchor];
                let py = b * d[0] + a * d[1] + shape[2 * anchor + 1];
                let x = f64::from(px) * scale[0] + rect[0] + 0.5;
                let y = f64::from(py) * scale[1] + rect[1] + 0.5;
                let inside = x >= 0.0 && x < width && y >= 0.0 && y < height;
                *value = if inside {
                    image.grey(x as usize, y as usize)
                } else {
                    0
                };
            }
            // Every tree: node i goes to 2i + 1 (left) or 2i + 2. The leaves (the
            // model's bulk, mostly outside the caches) are fetched ahead while the
            // walks go on, then added to the shape tree after tree, in float32.
            let nodes = cascade.nodes();
            let dims = shape.len();
            for (tree, leaf) in leaves.iter_mut().take(cascade.trees).enumerate() {
                let splits = &cascade.splits[tree * nodes..(tree + 1) * nodes];
                let mut node = 0usize;
                for _ in 0..cascade.depth {
                    let split = splits[node];
                    let diff = i32::from(pixels[split.first as usize])
                        - i32::from(pixels[split.second as usize]);
                    // node < 2^depth - 1 <= 1023: no overflow.
                    node = 2 * node + 2 - usize::from(diff > split.thresh);
                }
                let index = tree * (nodes + 1) + node - nodes;
                prefetch(&cascade.leaves[index * dims..(index + 1) * dims]);
                *leaf = index as u32;
            }
            for &leaf in leaves.iter().take(cascade.trees) {
                let start = leaf as usize * dims;
                for (s, v) in shape.iter_mut().zip(&cascade.leaves[start..start + dims]) {
                    *s += v;
                }
            }
        }
    }
}

/// Asks the CPU to bring the cache lines holding `values` (one or two for a leaf)
/// closer, without waiting for them.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = values.as_ptr().cast::<i8>();
        let last = values.as_ptr().wrapping_add(values.len().saturating_sub(1));
        // SAFETY: SSE is part of x86_64, and a prefetch never faults or reads into the
        // program: it is only a hint to the cache, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}
