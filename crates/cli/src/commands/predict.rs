//! `stride predict`: the top classes of a network for picture files: a model trained by
//! `stride train` (its run directory or weights file), or a zoo network with weights from
//! elsewhere (`--model resnet50 --weights resnet50.safetensors`), with ImageNet preprocessing.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use stride_data::image_io::load_image_center_crop;
use stride_nn::checkpoint::load;
use stride_tensor::Tensor;
use stride_train::RunConfig;
use stride_train::classify::{Invert, Prediction, prepare_image, top_k};
use stride_train::run_dir::open_model;
use stride_zoo::{BuildOptions, IMAGENET_MEAN, IMAGENET_STD, imagenet_classes};

const LONG_ABOUT: &str = "\
Top-k classes with probabilities for PNG/JPEG pictures of any size.

With a model trained by `stride train` (`stride predict RUN_DIR IMAGE...`), each picture is
converted to what the model was trained on: resized to its input size, turned grey for a
one-channel model, normalised with the training data's statistics; MNIST-style data are light on
black, so a picture with a light background is inverted (see --invert).

With a zoo network and weights trained elsewhere (`stride predict --model resnet50 --weights
resnet50.safetensors IMAGE...`, weights by torchvision name, see the README), each picture gets
ImageNet's preprocessing: the shorter side resized to 256, the central 224×224 cut out (for the
model's own input size s: resize round(s/0.875), crop s), normalised with ImageNet's mean and
standard deviation; a 1000-class network's classes are printed by their ImageNet names.";

/// Top-k classes with probabilities for PNG/JPEG pictures of any size.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// A run directory or weights file of `stride train`, then the pictures; with --model, only
    /// the pictures
    #[arg(required = true, value_name = "CHECKPOINT IMAGE")]
    inputs: Vec<PathBuf>,
    /// A zoo network (`stride models`), used with --weights instead of a checkpoint
    #[arg(long, requires = "weights")]
    model: Option<String>,
    /// The network's weights by torchvision name (safetensors), with --model
    #[arg(long, value_name = "FILE", requires = "model")]
    weights: Option<PathBuf>,
    /// How many classes to show per picture
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// auto: invert pictures whose border is mostly light; yes; no (checkpoints of `stride train`)
    #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
    invert: String,
}

fn print(out: &mut impl Write, path: &std::path::Path, note: &str, predictions: &[Prediction]) -> Result<()> {
    writeln!(out, "{}{note}", path.display())?;
    for p in predictions {
        writeln!(out, "  {:>6.2}%  {} ({})", 100.0 * p.probability, p.name, p.class)?;
    }
    Ok(())
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    match (&args.model, &args.weights) {
        (Some(model), Some(weights)) => predict_zoo(args, model, weights, out),
        _ => predict_checkpoint(args, out),
    }
}

fn predict_checkpoint(args: &Args, out: &mut impl Write) -> Result<()> {
    let [checkpoint, images @ ..] = args.inputs.as_slice() else { bail!("give a checkpoint and pictures") };
    if images.is_empty() {
        bail!("no pictures given: `stride predict CHECKPOINT IMAGE...`");
    }
    let (config, mut model) = open_model(checkpoint)?;
    model.fold_batch_norm()?;
    let invert = match args.invert.as_str() {
        "yes" => Invert::Always,
        "no" => Invert::Never,
        _ => Invert::Auto,
    };
    for path in images {
        let (input, inverted) = prepare_image(&config, path, invert)?;
        let predictions = top_k(model.as_mut(), &config, input, args.top)?;
        print(out, path, if inverted { " (inverted: light background)" } else { "" }, &predictions)?;
    }
    Ok(())
}

fn predict_zoo(args: &Args, name: &str, weights: &std::path::Path, out: &mut impl Write) -> Result<()> {
    let info = stride_zoo::find(name)?;
    let [channels, crop, width] = info.input;
    if channels != 3 || crop != width {
        bail!(
            "{name} takes {channels}×{crop}×{width} images; ImageNet preprocessing needs square colour input"
        );
    }
    let mut model = info.build(&BuildOptions { in_channels: 3, classes: info.classes, seed: 0 })?;
    load(model.as_mut(), weights)?;
    model.fold_batch_norm()?;
    let classes: Vec<String> = if info.classes == 1000 {
        imagenet_classes().into_iter().map(str::to_string).collect()
    } else {
        (0..info.classes).map(|c| c.to_string()).collect()
    };
    // Only the classes and the input matter to `top_k`; the rest describes no training run.
    let config = RunConfig {
        model: name.to_string(),
        dataset: "imagenet".into(),
        classes,
        input: info.input,
        mean: IMAGENET_MEAN.to_vec(),
        std: IMAGENET_STD.to_vec(),
        epochs: 1,
        batch_size: 1,
        optimizer: stride_train::OptimizerConfig::sgd(0.1, 0.0, 0.0),
        schedule: "constant".into(),
        seed: 0,
        validation: 0,
        train_subset: None,
        augment: false,
    };
    let resize = (crop as f64 / 0.875).round() as usize;
    for path in &args.inputs {
        let image = load_image_center_crop(path, resize, crop)?;
        let plane = crop * crop;
        let mut data = image.into_data();
        for (c, values) in data.chunks_exact_mut(plane).enumerate() {
            for v in values {
                *v = (*v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        let input = Tensor::new(vec![1, 3, crop, crop], data)?;
        let predictions = top_k(model.as_mut(), &config, input, args.top)?;
        print(out, path, "", &predictions)?;
    }
    Ok(())
}
