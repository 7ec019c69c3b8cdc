//! stride-train: a training run as a practitioner expects it around the library's layers and
//! optimisers: the epoch loop with validation and test metrics, a run directory holding resumable
//! checkpoints (weights, optimiser and schedule state, metrics, seed), a NaN guard, interruption
//! by a flag (Ctrl-C in the CLI), the metrics as CSV and as a plot, and evaluation with a
//! confusion matrix.
//!
//! ```text
//! classify.rs  a trained model on picture files: preprocessing and top-k
//! config.rs    RunConfig (saved in every checkpoint), optimiser and schedule specs
//! data.rs      the run's loaders: validation hold-out, subset, augmentation, normalisation
//! trainer.rs   Trainer::create/resume/fit, evaluate
//! run_dir.rs   the run directory: atomic checkpoint commits, open_model for eval/predict
//! metrics.rs   EpochRecord, CSV, ConfusionMatrix
//! plot.rs      the training curves as PNG
//! progress.rs  Observer: progress bar and epoch lines, or silence
//! ```

pub mod classify;
pub mod config;
pub mod data;
pub mod error;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod trainer;

pub use config::{OptimizerConfig, RunConfig};
pub use error::{Error, Result};
pub use trainer::{Outcome, Trainer, evaluate};

/// The README's Rust examples compile and run as doctests here, the crate that sees every other.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
