//! Which part of the image the decision rests on, by hiding parts of it (Zeiler & Fergus 2013,
//! *Visualizing and understanding convolutional networks*, §4.2).
//!
//! ```text
//! input          [1, C, H, W]   one prepared (normalised) image
//! occluded copy  the input with a patch × patch square set to 0 in every channel: after the
//!                normalisation 0 is the data set's mean, a grey that carries no evidence
//! drop           p(class | input) − p(class | occluded copy), one per patch position
//! map            [H, W]: at each pixel, the mean drop over the positions whose patch covers it
//! ```
//!
//! The patch slides by `stride` from the top-left corner; a last position flush with the right
//! and bottom edges is added where the stride does not land there, so every pixel is covered.
//! The occluded copies run through the network in batches, in evaluation mode and under
//! [`no_grad`]. A large positive drop marks a region the class depends on; a negative drop, one
//! whose removal makes the class more likely.

use image::RgbImage;
use stride_nn::module::{Mode, Module};
use stride_tensor::Tensor;
use stride_tensor::autograd::{Var, no_grad};
use stride_tensor::ops::reduce::softmax;

use crate::colormap::{ColorMap, normalize};
use crate::error::{Error, Result};
use crate::render::{ColourBar, Figure, enlarge, format_value, overlay, resize, side_by_side};

/// How to occlude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occlusion {
    /// The side of the grey square, in input pixels.
    pub patch: usize,
    /// How far the square moves between positions.
    pub stride: usize,
    /// The class whose probability is watched; `None`: the one the network predicts.
    pub class: Option<usize>,
    /// Occluded copies per forward pass.
    pub batch: usize,
}

impl Occlusion {
    /// A patch of about a seventh of the image's shorter side, moved by half a patch: 4 pixels
    /// by 2 on a 28×28 digit, 32 by 16 on a 224×224 photo.
    pub fn for_input(height: usize, width: usize) -> Occlusion {
        let patch = ((height.min(width) as f64 / 7.0).round() as usize).max(1);
        Occlusion { patch, stride: (patch / 2).max(1), class: None, batch: 32 }
    }
}

/// The result: the class, its probability on the whole image, and the drops.
#[derive(Debug, Clone, PartialEq)]
pub struct OcclusionMap {
    pub class: usize,
    /// p(class | input).
    pub probability: f32,
    /// The patch's top rows and left columns, in order.
    pub tops: Vec<usize>,
    pub lefts: Vec<usize>,
    /// `[tops, lefts]`: p(class | input occluded at (top, left)).
    pub occluded: Tensor,
    /// `[H, W]`: the mean drop in probability over the patches covering each pixel.
    pub drop: Tensor,
    pub patch: usize,
    pub stride: usize,
}

/// The patch's offsets along an axis of `length`: `0, stride, 2·stride, …` and `length − patch`.
pub fn positions(length: usize, patch: usize, stride: usize) -> Vec<usize> {
    let last = length - patch;
    let mut offsets: Vec<usize> = (0..=last).step_by(stride).collect();
    if offsets.last() != Some(&last) {
        offsets.push(last);
    }
    offsets
}

/// The probabilities of every class for a batch `[N, C, H, W]`, `[N, classes]`.
fn probabilities(model: &mut dyn Module, batch: Tensor) -> Result<Tensor> {
    let logits = no_grad(|| model.forward(&Var::constant(batch), Mode::Eval))?;
    if logits.value().rank() != 2 {
        return Err(Error::Invalid(format!(
            "the network's output is {}, not class scores [N, classes]",
            logits.value().shape()
        )));
    }
    Ok(softmax(logits.value(), 1)?)
}

/// Checks that `class` is one the network scores.
pub(crate) fn check_class(class: usize, classes: usize) -> Result<()> {
    if class >= classes {
        return Err(Error::Invalid(format!(
            "class {class} is out of range: the network scores {classes} classes (0 to {})",
            classes.saturating_sub(1)
        )));
    }
    Ok(())
}

/// Slides the patch over `input` `[1, C, H, W]` and measures the drop in the class's probability.
pub fn occlusion(model: &mut dyn Module, input: &Tensor, settings: &Occlusion) -> Result<OcclusionMap> {
    let [c, h, w] = match *input.dims() {
        [1, c, h, w] => [c, h, w],
        _ => {
            return Err(Error::Invalid(format!(
                "occlusion takes one image [1, C, H, W], got {}",
                input.shape()
            )));
        }
    };
    let Occlusion { patch, stride, class, batch } = *settings;
    if patch == 0 || stride == 0 || batch == 0 {
        return Err(Error::Invalid(format!(
            "the patch, its stride and the batch must be at least 1, got patch {patch}, stride {stride}, batch {batch}"
        )));
    }
    if patch > h || patch > w {
        return Err(Error::Invalid(format!(
            "the {patch}×{patch} patch is larger than the {w}×{h} image the network sees; give a patch of at most {}",
            h.min(w)
        )));
    }
    let reference = probabilities(model, input.clone())?;
    let classes = reference.dims()[1];
    let class = match class {
        Some(k) => {
            check_class(k, classes)?;
            k
        }
        None => argmax(reference.data()),
    };
    let probability = reference.data()[class];

    let (tops, lefts) = (positions(h, patch, stride), positions(w, patch, stride));
    let spots: Vec<(usize, usize)> = tops.iter().flat_map(|&t| lefts.iter().map(move |&l| (t, l))).collect();
    let image = input.data();
    let plane = h * w;
    let mut occluded = Vec::with_capacity(spots.len());
    for chunk in spots.chunks(batch) {
        let mut data = Vec::with_capacity(chunk.len() * c * plane);
        for &(top, left) in chunk {
            let start = data.len();
            data.extend_from_slice(image);
            for ch in 0..c {
                for y in top..top + patch {
                    let row = start + ch * plane + y * w;
                    data[row + left..row + left + patch].fill(0.0);
                }
            }
        }
        let p = probabilities(model, Tensor::new(vec![chunk.len(), c, h, w], data)?)?;
        occluded.extend(p.data().chunks_exact(classes).map(|row| row[class]));
    }

    let mut sum = vec![0f64; plane];
    let mut count = vec![0u32; plane];
    for (&(top, left), &p) in spots.iter().zip(&occluded) {
        for y in top..top + patch {
            for x in left..left + patch {
                sum[y * w + x] += (probability - p) as f64;
                count[y * w + x] += 1;
            }
        }
    }
    let drop = sum.iter().zip(&count).map(|(&s, &n)| (s / n.max(1) as f64) as f32).collect();
    Ok(OcclusionMap {
        class,
        probability,
        occluded: Tensor::new(vec![tops.len(), lefts.len()], occluded)?,
        tops,
        lefts,
        drop: Tensor::new(vec![h, w], drop)?,
        patch,
        stride,
    })
}

/// The index of the largest value (the first of equals).
pub(crate) fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// The map as a picture: the image as the network sees it beside the drop drawn over it (red:
/// the probability falls when this part is hidden, blue: it rises), with a colour scale.
/// `picture` is the input as an image ([`crate::render::input_picture`]); `class_name` names the
/// class.
pub fn render_occlusion(picture: &RgbImage, map: &OcclusionMap, class_name: &str) -> Result<RgbImage> {
    let [h, w] = match *map.drop.dims() {
        [h, w] => [h, w],
        _ => return Err(Error::Invalid(format!("an occlusion map is [H, W], got {}", map.drop.shape()))),
    };
    if picture.dimensions() != (w as u32, h as u32) {
        return Err(Error::Invalid(format!(
            "the picture is {}×{} but the occlusion map is {w}×{h}",
            picture.width(),
            picture.height()
        )));
    }
    let largest = map.drop.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    // Symmetric about 0, so white always means "no change".
    let bound = if largest > 0.0 { largest } else { 1.0 };
    let shown = enlarge(picture, 280);
    let heat = normalize(map.drop.data(), -bound, bound);
    let heat_picture = overlay(picture, &heat, ColorMap::Diverging, 0.65);
    let (sw, sh) = shown.dimensions();
    let body = side_by_side(&[
        ("input, as the network sees it", shown.clone()),
        ("drop in probability, drawn over the input", resize(&heat_picture, sw, sh)),
    ])?;
    let figure = Figure {
        title: format!("Occlusion: {class_name} (class {}), p = {:.3}", map.class, map.probability),
        lines: vec![
            format!(
                "a grey {0}×{0} patch (the data's mean) slid over the image with stride {1}: {2} positions",
                map.patch,
                map.stride,
                map.tops.len() * map.lefts.len()
            ),
            "red: hiding this part lowers p, so the class rests on it; blue: hiding it raises p".into(),
            format!(
                "at each pixel, the mean over the patches covering it: largest drop {}, largest rise {}",
                format_value(map.drop.data().iter().copied().fold(0f32, f32::max)),
                format_value(-map.drop.data().iter().copied().fold(0f32, f32::min))
            ),
        ],
        body,
        bar: Some(ColourBar {
            map: ColorMap::Diverging,
            low: -bound,
            high: bound,
            label: format!(
                "p({class_name}) on the whole image − p with the pixel hidden (mean over patches)"
            ),
            end_words: None,
        }),
    };
    figure.render()
}

#[cfg(test)]
mod tests {
    use stride_nn::layers::{Flatten, Linear};
    use stride_nn::module::Sequential;

    use super::*;

    /// Two classes on a 6×6 image: class 0 scores 10 × pixel (2, 3), class 1 scores 0.
    fn one_pixel_net() -> Sequential {
        let mut weight = vec![0f32; 2 * 36];
        weight[2 * 6 + 3] = 10.0;
        let fc = Linear::from_parts(Tensor::new(vec![2, 36], weight).unwrap(), None).unwrap();
        Sequential::new(vec![Box::new(Flatten::default()), Box::new(fc)])
    }

    fn lit_pixel() -> Tensor {
        Tensor::from_fn([1, 1, 6, 6], |i| if (i[2], i[3]) == (2, 3) { 1.0 } else { 0.0 }).unwrap()
    }

    #[test]
    fn positions_cover_both_edges() {
        assert_eq!(positions(6, 2, 2), [0, 2, 4]);
        assert_eq!(positions(6, 4, 3), [0, 2]);
        assert_eq!(positions(6, 6, 1), [0]);
        assert_eq!(positions(28, 4, 2).len(), 13);
        assert_eq!(Occlusion::for_input(28, 28), Occlusion { patch: 4, stride: 2, class: None, batch: 32 });
        assert_eq!(Occlusion::for_input(224, 224).patch, 32);
    }

    /// Only the patches that cover the one pixel the class looks at change its probability, from
    /// σ(10) to σ(0) = 0.5.
    #[test]
    fn only_the_patch_over_the_evidence_matters() {
        let settings = Occlusion { patch: 2, stride: 2, class: None, batch: 4 };
        let map = occlusion(&mut one_pixel_net(), &lit_pixel(), &settings).unwrap();
        let p = 1.0 / (1.0 + (-10f32).exp());
        assert_eq!(map.class, 0);
        assert!((map.probability - p).abs() < 1e-6);
        assert_eq!((map.tops.clone(), map.lefts.clone()), (vec![0, 2, 4], vec![0, 2, 4]));
        for (i, &q) in map.occluded.data().iter().enumerate() {
            let expected = if i == 4 { 0.5 } else { map.probability };
            assert!((q - expected).abs() < 1e-6, "position {i}: {q}");
        }
        for y in 0..6 {
            for x in 0..6 {
                let d = map.drop.data()[y * 6 + x];
                let expected = if (2..4).contains(&y) && (2..4).contains(&x) { p - 0.5 } else { 0.0 };
                assert!((d - expected).abs() < 1e-6, "({y}, {x}): {d}");
            }
        }

        // Overlapping patches (3×3 moved by 1): pixel (2, 3) is under 9 of them, pixel (0, 0)
        // under one that does not cover (2, 3); class 1's probability rises where class 0's falls.
        let settings = Occlusion { patch: 3, stride: 1, class: Some(1), batch: 5 };
        let map = occlusion(&mut one_pixel_net(), &lit_pixel(), &settings).unwrap();
        assert_eq!(map.class, 1);
        assert_eq!(map.occluded.dims(), &[4, 4]);
        assert!((map.drop.data()[2 * 6 + 3] - ((1.0 - p) - 0.5)).abs() < 1e-6);
        assert_eq!(map.drop.data()[0], 0.0);
    }

    #[test]
    fn settings_that_do_not_fit_are_errors() {
        let run = |patch, stride, class| {
            let settings = Occlusion { patch, stride, class, batch: 8 };
            occlusion(&mut one_pixel_net(), &lit_pixel(), &settings).unwrap_err().to_string()
        };
        assert_eq!(
            run(7, 1, None),
            "the 7×7 patch is larger than the 6×6 image the network sees; give a patch of at most 6"
        );
        assert_eq!(
            run(0, 1, None),
            "the patch, its stride and the batch must be at least 1, got patch 0, stride 1, batch 8"
        );
        assert_eq!(run(2, 2, Some(2)), "class 2 is out of range: the network scores 2 classes (0 to 1)");
    }

    #[test]
    fn the_picture_shows_the_image_and_the_map() {
        let settings = Occlusion { patch: 2, stride: 1, class: None, batch: 64 };
        let map = occlusion(&mut one_pixel_net(), &lit_pixel(), &settings).unwrap();
        let picture = crate::render::input_picture(&lit_pixel(), &[], &[]).unwrap();
        let image = render_occlusion(&picture, &map, "zero").unwrap();
        assert!(image.width() > 2 * 282 && image.height() > 282, "{:?}", image.dimensions());
        // The darkest red of the scale marks the lit pixel's neighbourhood.
        assert!(image.pixels().any(|p| p[0] > 150 && p[1] < 80 && p[2] < 80));
        assert!(render_occlusion(&RgbImage::new(5, 5), &map, "zero").is_err());
    }
}
