//! `stride predict`: the top classes of a trained model for picture files.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use stride_nn::module::Module;
use stride_train::classify::{Invert, prepare_image, top_k};
use stride_train::run_dir::open_model;

/// Top-k classes with probabilities for PNG/JPEG pictures of any size.
///
/// Each picture is converted to what the model was trained on: resized to its input size, turned
/// grey for a one-channel model, normalised with the training data's statistics; MNIST-style data
/// are light on black, so a picture with a light background is inverted (see --invert).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory (the --out of `stride train`) or a weights file stride wrote in it
    checkpoint: PathBuf,
    /// PNG or JPEG files
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per picture
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// auto: invert pictures whose border is mostly light; yes; no
    #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
    invert: String,
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let (config, mut model) = open_model(&args.checkpoint)?;
    let invert = match args.invert.as_str() {
        "yes" => Invert::Always,
        "no" => Invert::Never,
        _ => Invert::Auto,
    };
    for path in &args.images {
        let (input, inverted) = prepare_image(&config, path, invert)?;
        let predictions = top_k(model.as_mut() as &mut dyn Module, &config, input, args.top)?;
        let note = if inverted { " (inverted: light background)" } else { "" };
        writeln!(out, "{}{note}", path.display())?;
        for p in predictions {
            writeln!(out, "  {:>6.2}%  {} ({})", 100.0 * p.probability, p.name, p.class)?;
        }
    }
    Ok(())
}
