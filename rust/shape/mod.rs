//! dlib's 5-point (or any) `shape_predictor`, run natively: the model ([`model`],
//! parsed from dlib's file by `lfr._shape` and checked here) and the prediction
//! ([`predict`]), landmark for landmark equal to dlib's.

pub mod model;
pub mod predict;

pub use model::{Cascade, ShapeModel};
pub use predict::Image;

#[cfg(test)]
mod tests;
