//! The epoch loop: train on mini-batches, evaluate on the validation and test sets, step the
//! schedule, commit a checkpoint, write the metrics, until the last epoch, an interruption or a
//! loss that is no longer a number.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use stride_data::loader::Loader;
use stride_nn::checkpoint::{self, write_atomic};
use stride_nn::module::{Mode, Module, named_parameters};
use stride_nn::optim::Optimizer;
use stride_nn::schedule::Schedule;
use stride_tensor::autograd::{Var, cross_entropy, no_grad};

use crate::config::RunConfig;
use crate::data::RunData;
use crate::error::{Error, Result};
use crate::metrics::{ConfusionMatrix, EpochRecord, Score, to_csv};
use crate::progress::Observer;
use crate::run_dir::{
    BEST_FILE, Best, CHECKPOINT_FILE, CURVES_FILE, Checkpoint, FORMAT, METRICS_FILE, PartialEpoch, commit,
    read_checkpoint, save_weights,
};

/// How [`Trainer::fit`] ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch of the config ran.
    Finished,
    /// The stop flag was raised; a checkpoint of the position was committed.
    Interrupted { position: String },
}

/// A run in progress: the model, its optimiser and schedule, and where it stands.
pub struct Trainer {
    dir: PathBuf,
    config: RunConfig,
    model: Box<dyn Module>,
    optimizer: Box<dyn Optimizer + Send>,
    schedule: Box<dyn Schedule + Send>,
    /// The state as of the last commit; `None` before the first.
    saved: Option<Checkpoint>,
    epochs_done: usize,
    batches_done: usize,
    partial: PartialEpoch,
    history: Vec<EpochRecord>,
    best: Option<Best>,
}

/// The index of the largest score in each row of `[B, classes]` logits.
pub fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks_exact(classes)
        .map(|row| row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best }))
        .collect()
}

/// Mean loss, accuracy and confusion matrix of `model` (in evaluation mode) over `loader`.
pub fn evaluate(model: &mut dyn Module, loader: &Loader, classes: usize) -> Result<(Score, ConfusionMatrix)> {
    let mut matrix = ConfusionMatrix::new(classes);
    let mut loss_sum = 0.0f64;
    for batch in loader.epoch(0) {
        let batch = batch?;
        // No graph: evaluation keeps no activation beyond the layer that needs it.
        let (logits, loss) = no_grad(|| -> Result<(Var, f32)> {
            let logits = model.forward(&Var::constant(batch.images), Mode::Eval)?;
            let loss = cross_entropy(&logits, &batch.labels, 0.0)?.value().item()?;
            Ok((logits, loss))
        })?;
        loss_sum += loss as f64 * batch.labels.len() as f64;
        for (&label, predicted) in batch.labels.iter().zip(predictions(logits.value().data(), classes)) {
            matrix.add(label, predicted);
        }
    }
    let seen = matrix.total().max(1) as f64;
    Ok((Score { loss: loss_sum / seen, accuracy: matrix.accuracy() }, matrix))
}

impl Trainer {
    /// A new run in `dir` (created if needed). Refuses a directory that already holds a run, so
    /// that no earlier work is overwritten.
    pub fn create(config: RunConfig, dir: &Path) -> Result<Self> {
        config.check()?;
        if dir.join(CHECKPOINT_FILE).exists() {
            let existing = read_checkpoint(dir).map(|c| format!(" ({})", c.position())).unwrap_or_default();
            return Err(Error::Invalid(format!(
                "{} already holds a run{existing}; continue it with --resume {0} or choose another --out",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let model = stride_zoo::build(&config.model, config.classes.len(), config.input[0], config.seed)?;
        if let Err(e) = model.output_shape(&[1, config.input[0], config.input[1], config.input[2]]) {
            return Err(Error::Invalid(format!(
                "{} does not take {}×{}×{} images: {e}",
                config.model, config.input[0], config.input[1], config.input[2]
            )));
        }
        Ok(Trainer {
            dir: dir.to_path_buf(),
            optimizer: config.optimizer.build()?,
            schedule: config.build_schedule()?,
            model,
            config,
            saved: None,
            epochs_done: 0,
            batches_done: 0,
            partial: PartialEpoch::default(),
            history: Vec::new(),
            best: None,
        })
    }

    /// The run saved in `dir`, at its last checkpoint. `epochs` extends (or shortens) the run;
    /// everything else comes from the checkpoint.
    pub fn resume(dir: &Path, epochs: Option<usize>) -> Result<Self> {
        let mut saved = read_checkpoint(dir)?;
        if let Some(epochs) = epochs {
            if epochs == 0 || epochs < saved.epochs_done {
                let done = saved.epochs_done.max(1);
                return Err(Error::Invalid(format!(
                    "the run in {} has trained {done} epoch{}; --epochs must be at least {done}",
                    dir.display(),
                    if done == 1 { "" } else { "s" }
                )));
            }
            saved.config.epochs = epochs;
        }
        let config = saved.config.clone();
        config.check()?;
        let mut model = stride_zoo::build(&config.model, config.classes.len(), config.input[0], config.seed)?;
        checkpoint::load(model.as_mut(), &dir.join(&saved.weights))?;
        let mut optimizer = config.optimizer.build()?;
        let (state, _) = checkpoint::load_tensors(&dir.join(&saved.optimizer))?;
        optimizer.load_state(state)?;
        let mut schedule = config.build_schedule()?;
        schedule.load_state(&saved.schedule)?;
        Ok(Trainer {
            dir: dir.to_path_buf(),
            model,
            optimizer,
            schedule,
            epochs_done: saved.epochs_done,
            batches_done: saved.batches_done,
            partial: saved.partial,
            history: saved.history.clone(),
            best: saved.best,
            config,
            saved: Some(saved),
        })
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn model(&mut self) -> &mut dyn Module {
        self.model.as_mut()
    }

    /// The finished epochs' records.
    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }

    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Trains until the config's last epoch, committing a checkpoint after each. When `stop`
    /// becomes true (Ctrl-C), commits the current position and returns `Interrupted`. A
    /// non-finite loss returns [`Error::Diverged`] and leaves the last commit as it was.
    pub fn fit(&mut self, data: &RunData, observer: &mut dyn Observer, stop: &AtomicBool) -> Result<Outcome> {
        let classes = self.config.classes.len();
        let batches = data.train.batches_per_epoch();
        if self.batches_done > batches {
            return Err(Error::Checkpoint(format!(
                "the checkpoint is at batch {} of an epoch, but this data has {batches} batches per epoch",
                self.batches_done
            )));
        }
        while self.epochs_done < self.config.epochs {
            let epoch = self.epochs_done;
            let lr = self.schedule.lr();
            self.optimizer.set_learning_rate(lr);
            observer.epoch_started(epoch + 1, self.config.epochs, batches, self.batches_done);
            // Seconds already spent on this epoch before an interruption, plus this stretch.
            let earlier = if self.partial.seconds.is_finite() { self.partial.seconds.max(0.0) } else { 0.0 };
            let images_before = self.partial.seen;
            let resumed_at = Instant::now();
            for batch in data.train.epoch_from(epoch as u64, self.batches_done) {
                if stop.load(Ordering::SeqCst) {
                    self.partial.seconds = earlier + resumed_at.elapsed().as_secs_f64();
                    self.commit("interrupted")?;
                    return Ok(Outcome::Interrupted { position: self.position() });
                }
                let batch = batch?;
                let logits = self.model.forward(&Var::constant(batch.images), Mode::Train)?;
                let loss = cross_entropy(&logits, &batch.labels, 0.0)?;
                let value = loss.value().item()?;
                if !value.is_finite() {
                    return Err(self.diverged(value, epoch, lr));
                }
                loss.backward()?;
                let correct = predictions(logits.value().data(), classes)
                    .iter()
                    .zip(&batch.labels)
                    .filter(|(p, l)| p == l)
                    .count();
                drop((loss, logits));
                let mut params = named_parameters(self.model.as_mut());
                let mut refs: Vec<(&str, &mut Var)> =
                    params.iter_mut().map(|(n, v)| (n.as_str(), &mut **v)).collect();
                self.optimizer.step(&mut refs)?;
                self.batches_done += 1;
                let n = batch.labels.len() as u64;
                self.partial.loss_sum += value as f64 * n as f64;
                self.partial.correct += correct as u64;
                self.partial.seen += n;
                let rate = (self.partial.seen - images_before) as f64 / resumed_at.elapsed().as_secs_f64();
                observer.batch_finished(self.running(), rate);
            }
            let seconds = earlier + resumed_at.elapsed().as_secs_f64();
            let train = self.running();
            let images = self.partial.seen as f64;
            observer.evaluating();
            let validation = match &data.validation {
                Some(loader) => Some(evaluate(self.model.as_mut(), loader, classes)?.0),
                None => None,
            };
            let test = Some(evaluate(self.model.as_mut(), &data.test, classes)?.0);
            let record = EpochRecord {
                epoch: epoch + 1,
                lr,
                train,
                validation,
                test,
                seconds,
                images_per_second: images / seconds.max(1e-9),
            };
            // The plateau schedule reads the validation loss, or the training loss without one.
            let metric = validation.unwrap_or(train).loss as f32;
            self.schedule.step(Some(metric))?;
            self.history.push(record.clone());
            self.epochs_done += 1;
            self.batches_done = 0;
            self.partial = PartialEpoch::default();
            let judged = validation.or(test).map(|s| s.accuracy).unwrap_or(train.accuracy);
            let improved = self.best.is_none_or(|b| judged > b.accuracy);
            if improved {
                self.best = Some(Best { epoch: epoch + 1, accuracy: judged });
                save_weights(self.model.as_mut(), &self.config, epoch + 1, &self.dir.join(BEST_FILE))?;
            }
            self.commit("epoch")?;
            self.write_metrics(observer)?;
            observer.epoch_finished(&record);
        }
        Ok(Outcome::Finished)
    }

    fn running(&self) -> Score {
        let seen = self.partial.seen.max(1) as f64;
        Score { loss: self.partial.loss_sum / seen, accuracy: self.partial.correct as f64 / seen }
    }

    fn position(&self) -> String {
        self.saved.as_ref().map(Checkpoint::position).unwrap_or_default()
    }

    fn commit(&mut self, reason: &str) -> Result<()> {
        let checkpoint = Checkpoint {
            format: FORMAT,
            stride_version: env!("CARGO_PKG_VERSION").to_string(),
            config: self.config.clone(),
            epochs_done: self.epochs_done,
            batches_done: self.batches_done,
            partial: self.partial,
            lr: self.schedule.lr(),
            schedule: self.schedule.state(),
            history: self.history.clone(),
            best: self.best,
            weights: String::new(),
            optimizer: String::new(),
            reason: reason.to_string(),
        };
        self.saved = Some(commit(&self.dir, checkpoint, self.model.as_mut(), self.optimizer.as_ref())?);
        Ok(())
    }

    fn diverged(&self, loss: f32, epoch: usize, lr: f32) -> Error {
        let kept = match &self.saved {
            Some(saved) => {
                format!("The last good checkpoint ({}) is kept in {}.", saved.position(), self.dir.display())
            }
            None => "No checkpoint had been written yet.".to_string(),
        };
        Error::Diverged { loss, epoch: epoch + 1, batch: self.batches_done + 1, lr, kept }
    }

    /// `metrics.csv` and `curves.png`. A plot that cannot be drawn is a note, not a failure.
    fn write_metrics(&self, observer: &mut dyn Observer) -> Result<()> {
        write_atomic(&self.dir.join(METRICS_FILE), to_csv(&self.history).as_bytes())?;
        let title = format!("{} on {}", self.config.model, self.config.dataset);
        if let Err(e) = crate::plot::plot_curves(&self.history, &title, &self.dir.join(CURVES_FILE)) {
            observer.note(&format!("warning: the training curves were not drawn: {e}"));
        }
        Ok(())
    }
}
