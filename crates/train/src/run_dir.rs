//! A run directory (`--out DIR`): everything a run leaves behind, and how it is committed.
//!
//! ```text
//! DIR/checkpoint.json            the commit point: config, progress, optimiser and schedule state
//!                                 files, metrics history, seed (written last, atomically)
//! DIR/weights-e003.safetensors   the model's weights under torchvision-style names; the header
//!                                 holds the run's config, so the file alone is enough for eval
//! DIR/optimizer-e003.safetensors momentum buffers (or Adam moments) by parameter path
//! DIR/best.safetensors           the weights of the epoch with the best validation accuracy
//! DIR/metrics.csv, curves.png    per-epoch metrics and their plot
//! ```
//!
//! Weights and optimiser state go to new files named by their position (`-e003`, or
//! `-e003-b00120` within an epoch); `checkpoint.json` is then replaced atomically to point at
//! them, and only after that are the files it no longer names removed. A crash at any moment
//! leaves a complete, consistent checkpoint: the new one or the previous one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stride_nn::checkpoint::{self, write_atomic};
use stride_nn::module::Module;
use stride_nn::optim::Optimizer;
use stride_nn::schedule::ScheduleState;
use stride_tensor::Tensor;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::metrics::EpochRecord;

pub const CHECKPOINT_FILE: &str = "checkpoint.json";
pub const BEST_FILE: &str = "best.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";
pub const CURVES_FILE: &str = "curves.png";
/// The key of the run's config (JSON) in a weights file's safetensors header.
pub const CONFIG_KEY: &str = "stride.run_config";
/// Bumped when a checkpoint's meaning changes, so that an old reader refuses a new file.
pub const FORMAT: u32 = 1;

/// The running sums of an epoch in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub seconds: f64,
}

/// The best validation (or, without validation, test) accuracy so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub accuracy: f64,
}

/// `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub stride_version: String,
    pub config: RunConfig,
    /// Complete epochs; the next one to run is `epochs_done` (0-based).
    pub epochs_done: usize,
    /// Batches of epoch `epochs_done` already trained (non-zero only after an interruption).
    pub batches_done: usize,
    pub partial: PartialEpoch,
    /// The learning rate of epoch `epochs_done`.
    pub lr: f32,
    pub schedule: ScheduleState,
    pub history: Vec<EpochRecord>,
    pub best: Option<Best>,
    /// File names in the run directory.
    pub weights: String,
    pub optimizer: String,
    /// `epoch` (saved at an epoch's end) or `interrupted`.
    pub reason: String,
}

impl Checkpoint {
    /// Where the run stands, in words: `after epoch 3 of 10`, `in epoch 4 of 10, after batch 120`.
    pub fn position(&self) -> String {
        if self.batches_done == 0 {
            format!("after epoch {} of {}", self.epochs_done, self.config.epochs)
        } else {
            format!(
                "in epoch {} of {}, after batch {}",
                self.epochs_done + 1,
                self.config.epochs,
                self.batches_done
            )
        }
    }
}

/// Reads `DIR/checkpoint.json`, with an error saying what is wrong and what to do.
pub fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Checkpoint(format!(
                "{} has no {CHECKPOINT_FILE}: it is not a stride run directory (the --out of `stride train`)",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(|e| {
        Error::Checkpoint(format!("{} is not a valid stride checkpoint: {e}", path.display()))
    })?;
    if checkpoint.format != FORMAT {
        return Err(Error::Checkpoint(format!(
            "{} has checkpoint format {}; this stride reads format {FORMAT}",
            path.display(),
            checkpoint.format
        )));
    }
    Ok(checkpoint)
}

/// The metadata stored in a weights file's header.
fn weights_metadata(config: &RunConfig, epoch: usize) -> Result<HashMap<String, String>> {
    let config = serde_json::to_string(config)
        .map_err(|e| Error::Checkpoint(format!("cannot encode the run config: {e}")))?;
    Ok(HashMap::from([
        (CONFIG_KEY.to_string(), config),
        ("stride.epoch".to_string(), epoch.to_string()),
        ("stride.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]))
}

/// Saves the model's weights (with the run's config in the header) to `path` atomically.
pub fn save_weights(model: &mut dyn Module, config: &RunConfig, epoch: usize, path: &Path) -> Result<()> {
    Ok(checkpoint::save(model, path, weights_metadata(config, epoch)?)?)
}

/// Commits a checkpoint: new weights and optimiser files, then `checkpoint.json`, then the
/// removal of the files no checkpoint names any more.
pub fn commit(
    dir: &Path,
    mut checkpoint: Checkpoint,
    model: &mut dyn Module,
    optimizer: &dyn Optimizer,
) -> Result<Checkpoint> {
    let tag = if checkpoint.batches_done == 0 {
        format!("e{:03}", checkpoint.epochs_done)
    } else {
        format!("e{:03}-b{:05}", checkpoint.epochs_done, checkpoint.batches_done)
    };
    checkpoint.weights = format!("weights-{tag}.safetensors");
    checkpoint.optimizer = format!("optimizer-{tag}.safetensors");
    save_weights(model, &checkpoint.config, checkpoint.epochs_done, &dir.join(&checkpoint.weights))?;
    checkpoint::save_tensors(&optimizer.state(), &dir.join(&checkpoint.optimizer), HashMap::new())?;
    let json = serde_json::to_string_pretty(&checkpoint)
        .map_err(|e| Error::Checkpoint(format!("cannot encode the checkpoint: {e}")))?;
    write_atomic(&dir.join(CHECKPOINT_FILE), json.as_bytes())?;
    remove_stale(dir, &checkpoint);
    Ok(checkpoint)
}

/// Removes the weights and optimiser files of earlier checkpoints. Failing to remove one costs
/// only disk space, so errors are ignored.
fn remove_stale(dir: &Path, keep: &Checkpoint) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = (name.starts_with("weights-e") || name.starts_with("optimizer-e"))
            && name.ends_with(".safetensors");
        if ours && name != keep.weights && name != keep.optimizer {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A trained model and the config it was trained with, from a run directory or its
/// `checkpoint.json` (the latest checkpoint), or from a weights file stride wrote
/// (`weights-*.safetensors`, `best.safetensors`).
pub fn open_model(path: &Path) -> Result<(RunConfig, Box<dyn Module>)> {
    let run_dir = match path.parent() {
        Some(parent) if path.file_name().is_some_and(|n| n == CHECKPOINT_FILE) => Some(parent),
        _ => path.is_dir().then_some(path),
    };
    let weights: PathBuf = if let Some(dir) = run_dir {
        let checkpoint = read_checkpoint(dir)?;
        dir.join(checkpoint.weights)
    } else if path.exists() {
        path.to_path_buf()
    } else {
        return Err(Error::Checkpoint(format!(
            "{} does not exist; give a run directory (the --out of `stride train`) or a weights file in it",
            path.display()
        )));
    };
    let (tensors, metadata) = checkpoint::load_tensors(&weights)?;
    model_from_tensors(tensors, &metadata, &weights.display().to_string())
}

/// [`open_model`] for a weights file of `stride train` held in memory (weights embedded in a
/// program); `source` names it in errors.
pub fn model_from_weights(bytes: &[u8], source: &str) -> Result<(RunConfig, Box<dyn Module>)> {
    let (tensors, metadata) = checkpoint::read_tensors(bytes, source)?;
    model_from_tensors(tensors, &metadata, source)
}

/// The zoo network named by the run config in `metadata`, holding `tensors`.
fn model_from_tensors(
    tensors: BTreeMap<String, Tensor>,
    metadata: &HashMap<String, String>,
    source: &str,
) -> Result<(RunConfig, Box<dyn Module>)> {
    let Some(config) = metadata.get(CONFIG_KEY) else {
        return Err(Error::Checkpoint(format!(
            "{source} has no stride run config in its header ({CONFIG_KEY}); it was not written by `stride train`"
        )));
    };
    let config: RunConfig = serde_json::from_str(config)
        .map_err(|e| Error::Checkpoint(format!("{source}: unreadable run config: {e}")))?;
    let mut model = stride_zoo::build(&config.model, config.classes.len(), config.input[0], config.seed)?;
    checkpoint::assign(model.as_mut(), tensors, source)?;
    Ok((config, model))
}
