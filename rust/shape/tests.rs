//! Hand-made models whose landmarks can be worked out on paper.

use super::*;

/// Two landmarks at (0.25, 0.5) and (0.75, 0.5).
const INITIAL: [f32; 4] = [0.25, 0.5, 0.75, 0.5];

/// One depth-1 cascade over two feature pixels placed at the landmarks: where pixel 0
/// is brighter than pixel 1 by more than 10, every coordinate moves by +0.1 (left
/// leaf), otherwise by -0.1.
fn one_split() -> ShapeModel {
    let cascade = Cascade::new(
        2,
        &[0, 1],
        &[0.0; 4],
        &[0, 1],
        &[10.5],
        &[0.1, 0.1, 0.1, 0.1, -0.1, -0.1, -0.1, -0.1],
        1,
    )
    .expect("a valid cascade");
    ShapeModel::new(&INITIAL, vec![cascade]).expect("a valid model")
}

fn predict(model: &ShapeModel, image: &Image<'_>, rect: [f64; 4], subpixel: bool) -> Vec<f32> {
    let mut out = vec![0.0; 4];
    model
        .predict(image, &rect, subpixel, &mut out)
        .expect("prediction");
    out
}

#[test]
fn split_goes_left_only_above_the_floored_threshold() {
    let model = one_split();
    // Rectangle (0, 0)-(40, 40): the landmarks sample pixels (10, 20) and (30, 20).
    for (p0, p1, shift) in [
        (30u8, 19u8, 0.1f64),
        (30, 20, -0.1),
        (0, 0, -0.1),
        (255, 0, 0.1),
    ] {
        let mut data = vec![0u8; 40 * 40];
        data[20 * 40 + 10] = p0;
        data[20 * 40 + 30] = p1;
        let image = Image::contiguous(&data, 40, 40, 1).expect("image");
        let got = predict(&model, &image, [0.0, 0.0, 40.0, 40.0], true);
        let expected: Vec<f32> = INITIAL
            .iter()
            .map(|&v| (f64::from(v + shift as f32) * 40.0) as f32)
            .collect();
        assert_eq!(got, expected, "pixels {p0}, {p1}");
    }
}

#[test]
fn colour_reads_the_integer_mean_and_strides_equal_copies() {
    let model = one_split();
    let (h, w) = (30usize, 50usize);
    let mut colour = vec![0u8; h * w * 3];
    for (i, v) in colour.iter_mut().enumerate() {
        *v = (i * 37 % 251) as u8;
    }
    let grey: Vec<u8> = colour
        .chunks_exact(3)
        .map(|p| ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8)
        .collect();
    let colour_image = Image::contiguous(&colour, h, w, 3).expect("image");
    let grey_image = Image::contiguous(&grey, h, w, 1).expect("image");
    // The same grey image, flipped upside down: the last row first, negative row stride.
    let mut flipped = grey.clone();
    for (dst, src) in flipped.chunks_exact_mut(w).zip(grey.chunks_exact(w).rev()) {
        dst.copy_from_slice(src);
    }
    let view = Image::new(&flipped, (h - 1) * w, [h, w, 1], [-(w as isize), 1, 1]).expect("view");
    for rect in [
        [0.0, 0.0, 29.0, 29.0],
        [10.0, 3.0, 49.0, 25.0],
        [-20.0, -5.0, 10.0, 20.0],
    ] {
        let expected = predict(&model, &grey_image, rect, false);
        assert_eq!(predict(&model, &colour_image, rect, false), expected);
        assert_eq!(predict(&model, &view, rect, false), expected);
    }
}

#[test]
fn outside_pixels_read_zero() {
    let model = one_split();
    let data = vec![200u8; 10 * 10];
    let image = Image::contiguous(&data, 10, 10, 1).expect("image");
    // Landmark 0 inside (200), landmark 1 far outside (0): left, +0.1.
    let got = predict(&model, &image, [0.0, 0.0, 20.0, 10.0], true);
    assert!((got[0] - 7.0).abs() < 1e-5, "{got:?}");
}

#[test]
fn models_and_images_are_checked() {
    let leaves = [0.0f32; 8];
    assert!(Cascade::new(2, &[0, 2], &[0.0; 4], &[0, 1], &[0.0], &leaves, 1).is_err());
    assert!(Cascade::new(2, &[0, 1], &[0.0; 4], &[0, 2], &[0.0], &leaves, 1).is_err());
    assert!(Cascade::new(2, &[0, 1], &[0.0; 4], &[0, 1], &[f32::NAN], &leaves, 1).is_err());
    assert!(Cascade::new(2, &[0, 1], &[0.0; 4], &[0, 1], &[0.0], &leaves[..7], 1).is_err());
    assert!(Cascade::new(2, &[0, 1], &[0.0; 3], &[0, 1], &[0.0], &leaves, 1).is_err());
    assert!(Cascade::new(2, &[0, 1], &[0.0; 4], &[], &[], &leaves[..4], 11).is_err());
    let three = Cascade::new(3, &[0], &[0.0; 2], &[], &[], &[0.0; 6], 0).expect("depth 0");
    assert_eq!((three.trees(), three.nodes(), three.pixels()), (1, 0, 1));
    assert!(ShapeModel::new(&INITIAL, vec![three]).is_err());
    assert!(ShapeModel::new(&[0.5, 0.5, 0.5, 0.5], vec![]).is_err());
    let data = [0u8; 12];
    assert!(Image::contiguous(&data, 2, 2, 2).is_err());
    assert!(Image::contiguous(&data, 2, 3, 1).is_err());
    assert!(Image::new(&data, 0, [2, 2, 3], [7, 3, 1]).is_err());
    assert!(Image::new(&data, 0, [2, 2, 1], [-2, 1, 1]).is_err());
    let model = one_split();
    let image = Image::contiguous(&data, 2, 2, 3).expect("image");
    assert!(model.predict(&image, &[0.0; 3], false, &mut []).is_err());
    assert!(model
        .predict(&image, &[0.0; 4], false, &mut [0.0; 3])
        .is_err());
}
