//! A trained model applied to picture files: the preprocessing its training data had (size,
//! channels, background polarity, normalisation), then the top classes with probabilities.

use std::path::Path;

use stride_data::image_io::load_image_for_model;
use stride_nn::module::{Mode, Module};
use stride_tensor::Tensor;
use stride_tensor::autograd::{Var, no_grad};
use stride_tensor::ops::reduce::softmax;

use crate::config::RunConfig;
use crate::error::{Error, Result};

/// Whether to turn a picture into a negative first. MNIST and Fashion-MNIST show light objects
/// on a black background; a photo or a drawing usually shows a dark object on a light one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invert {
    /// Invert when the picture's border is mostly light.
    Auto,
    Always,
    Never,
}

/// One class with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub name: String,
    pub probability: f32,
}

/// The mean of the outermost ring of pixels of a `[C, H, W]` image.
fn border_mean(image: &Tensor) -> f32 {
    let [c, h, w] = [image.dims()[0], image.dims()[1], image.dims()[2]];
    let data = image.data();
    let (mut sum, mut count) = (0.0f32, 0usize);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                if y == 0 || x == 0 || y + 1 == h || x + 1 == w {
                    sum += data[(ch * h + y) * w + x];
                    count += 1;
                }
            }
        }
    }
    sum / count.max(1) as f32
}

/// Reads `path` as the run's input `[1, C, H, W]`, normalised; also says whether it was inverted.
pub fn prepare_image(config: &RunConfig, path: &Path, invert: Invert) -> Result<(Tensor, bool)> {
    check_normalisation(config)?;
    let [c, h, w] = config.input;
    prepare_picture(config, load_image_for_model(path, c, h, w)?, invert)
}

/// [`prepare_image`] for a picture already read and resized to the run's input (an upload):
/// `image` is `[C, H, W]` in [0, 1] (`stride_data::image_io::picture_for_model`).
pub fn prepare_picture(config: &RunConfig, image: Tensor, invert: Invert) -> Result<(Tensor, bool)> {
    check_normalisation(config)?;
    let [c, h, w] = config.input;
    if image.dims() != config.input {
        return Err(Error::Invalid(format!(
            "the picture is {} but the model takes [{c}, {h}, {w}]",
            image.shape()
        )));
    }
    let inverted = match invert {
        Invert::Always => true,
        Invert::Never => false,
        Invert::Auto => border_mean(&image) > 0.5,
    };
    let plane = h * w;
    let mut data = image.into_data();
    for (ch, values) in data.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (config.mean[ch % config.mean.len()], config.std[ch % config.std.len()]);
        for v in values {
            let pixel = if inverted { 1.0 - *v } else { *v };
            *v = (pixel - mean) / std;
        }
    }
    Ok((Tensor::new(vec![1, c, h, w], data)?, inverted))
}

/// The normalisation must give one mean and one non-zero std per input channel (or one for all).
fn check_normalisation(config: &RunConfig) -> Result<()> {
    let c = config.input[0];
    let per_channel = |values: &[f32]| values.len() == c || values.len() == 1;
    if !per_channel(&config.mean) || !per_channel(&config.std) || config.std.contains(&0.0) {
        return Err(Error::Invalid(format!(
            "the model's normalisation (mean {:?}, std {:?}) does not fit its {c} input channels",
            config.mean, config.std
        )));
    }
    Ok(())
}

/// The `k` most probable classes for one prepared input, most probable first.
pub fn top_k(model: &mut dyn Module, config: &RunConfig, input: Tensor, k: usize) -> Result<Vec<Prediction>> {
    if k == 0 {
        return Err(Error::Invalid("--top must be at least 1".into()));
    }
    let logits = no_grad(|| model.forward(&Var::constant(input), Mode::Eval))?;
    let probabilities = softmax(logits.value(), 1)?;
    let mut ranked: Vec<(usize, f32)> = probabilities.data().iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(ranked
        .into_iter()
        .take(k)
        .map(|(class, probability)| Prediction {
            class,
            name: config.classes.get(class).cloned().unwrap_or_else(|| class.to_string()),
            probability,
        })
        .collect())
}
