//! `stride eval`: a trained model's test accuracy and confusion matrix.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use stride_data::datasets::{DatasetName, Discovery, load_split};
use stride_data::loader::{Dataset, Loader};
use stride_train::data::{EVAL_BATCH, eval_pipeline};
use stride_train::evaluate;
use stride_train::run_dir::open_model;

use super::set_threads;

/// Test accuracy and confusion matrix of a trained model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory (the --out of `stride train`) or a weights file stride wrote in it
    checkpoint: PathBuf,
    /// The data set to test on [default: the one the model was trained on]
    #[arg(long)]
    dataset: Option<String>,
    /// A folder holding the data set's IDX files (or a folder of data sets)
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Threads to compute with [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    set_threads(args.threads)?;
    let (config, mut model) = open_model(&args.checkpoint)?;
    model.fold_batch_norm()?;
    let dataset: DatasetName = args.dataset.as_deref().unwrap_or(&config.dataset).parse()?;
    let found = Discovery::standard(args.data.clone()).find_or_download(dataset, None)?;
    let test = Dataset::from_split(load_split(&found.dir, dataset, false)?)?;
    let indices = (0..test.len()).collect();
    let loader = Loader::new(test, indices, EVAL_BATCH, false, false, eval_pipeline(&config)?, 0)?;
    let (score, matrix) = evaluate(model.as_mut(), &loader, config.classes.len())?;
    writeln!(
        out,
        "model: {} trained on {}; test set: {} ({} images)",
        config.model,
        config.dataset,
        dataset,
        matrix.total()
    )?;
    writeln!(out, "test loss {:.4}, accuracy {:.2}%\n", score.loss, 100.0 * score.accuracy)?;
    let names: Vec<&str> = config.classes.iter().map(String::as_str).collect();
    write!(out, "{}", matrix.render(&names))?;
    Ok(())
}
