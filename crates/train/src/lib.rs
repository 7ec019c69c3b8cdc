//! stride-train: a training run as a practitioner expects it around the library's layers and
//! optimisers: the epoch loop with validation and test metrics, a run directory holding resumable
//! checkpoints (weights, optimiser and schedule state, metrics, seed), a NaN guard, interruption
//! by a flag (Ctrl-C in the CLI), the metrics as CSV and as a plot, and evaluation with a
//! confusion matrix.

pub mod error;
pub mod metrics;

pub use error::{Error, Result};
