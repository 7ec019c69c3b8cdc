//! `stride train`: a training run from the command line, with the lecture's recipe as defaults
//! (SGD with momentum 0.9, weight decay, the learning rate divided by 10 when the validation
//! loss plateaus), checkpoints every epoch and on Ctrl-C, and `--resume`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use stride_data::datasets::{DatasetName, Discovery};
use stride_train::data::{dataset_defaults, prepare};
use stride_train::progress::Console;
use stride_train::run_dir::{BEST_FILE, CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE};
use stride_train::{OptimizerConfig, Outcome, RunConfig, Trainer};

use super::{Interrupted, set_threads};

const LONG_ABOUT: &str = "\
Train a network of the model zoo on MNIST or Fashion-MNIST.

The data set is looked for in --data, then $STRIDE_DATA, then the user's cache folder, then
/usr/share/datasets/<name> (Debian's `apt-get install dataset-fashion-mnist`), and otherwise
downloaded from its official source with its SHA-256 checked.

Every epoch ends with validation and test metrics and a checkpoint in --out: the weights as
safetensors under torchvision-style names, the optimiser and schedule state, the metrics
(metrics.csv, curves.png) and the seed. Ctrl-C saves the position within the epoch and stops;
`stride train --resume DIR` continues, and reaches the same weights as an uninterrupted run.
A loss that becomes NaN or infinite stops the run and keeps the last good checkpoint.

Schedules: constant, step:E1,E2,… (÷10 after those epochs), cosine, plateau[:P] (÷10 when
the validation loss has not improved for more than P epochs), warmup:W,SCHEDULE.";

/// Train a network (LeNet-5 on Fashion-MNIST by default), with checkpoints and metrics.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// The model, from the zoo (`stride models` lists them)
    model: Option<String>,
    /// mnist or fashion-mnist [default: fashion-mnist]
    #[arg(long)]
    dataset: Option<String>,
    /// A folder holding the data set's IDX files (or a folder of data sets)
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Passes over the training data [default: 20]; with --resume, the new total
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per mini-batch [default: 128]
    #[arg(long)]
    batch_size: Option<usize>,
    /// sgd, adam or adamw [default: sgd]
    #[arg(long)]
    optimizer: Option<String>,
    /// Initial learning rate [default: 0.05 for lenet5, 0.1 for the deeper networks]
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    momentum: Option<f32>,
    /// L2 weight decay [default: 5e-4 for lenet5, 1e-4 for the deeper networks]
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule [default: plateau:2]
    #[arg(long)]
    schedule: Option<String>,
    /// Seeds the initial weights, the split, the shuffling and the augmentation [default: 42]
    #[arg(long)]
    seed: Option<u64>,
    /// Training images held out for validation [default: 5000]
    #[arg(long)]
    validation: Option<usize>,
    /// Train on only this many images (quick experiments)
    #[arg(long, value_name = "N")]
    train_subset: Option<usize>,
    /// No random crop or flip
    #[arg(long)]
    no_augment: bool,
    /// Threads to compute with [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// The run directory [default: runs/MODEL-DATASET]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run saved in DIR
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// No progress bar (the epoch lines are still printed)
    #[arg(long)]
    quiet: bool,
}

impl Args {
    /// The options given that differ from the saved run's settings, which a resumed run keeps:
    /// `--lr 0.1 (the run has 0.05)`. Repeating the original command with `--resume` is fine.
    fn conflicts_with(&self, saved: &RunConfig) -> Vec<String> {
        fn differs<T: PartialEq + std::fmt::Display>(
            name: &str,
            given: Option<T>,
            saved: T,
        ) -> Option<String> {
            given.filter(|g| *g != saved).map(|g| format!("{name} {g} (the run has {saved})"))
        }
        let o = &saved.optimizer;
        [
            differs("MODEL", self.model.as_deref(), saved.model.as_str()),
            differs("--dataset", self.dataset.as_deref(), saved.dataset.as_str()),
            differs("--batch-size", self.batch_size, saved.batch_size),
            differs("--optimizer", self.optimizer.as_deref(), o.kind.as_str()),
            differs("--lr", self.lr, o.lr),
            differs("--momentum", self.momentum, o.momentum),
            differs("--weight-decay", self.weight_decay, o.weight_decay),
            differs("--schedule", self.schedule.as_deref(), saved.schedule.as_str()),
            differs("--seed", self.seed, saved.seed),
            differs("--validation", self.validation, saved.validation),
            differs("--train-subset", self.train_subset, saved.train_subset.unwrap_or(0)),
            differs("--no-augment", self.no_augment.then_some(true), !saved.augment),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn config(&self) -> Result<RunConfig> {
        let model = self.model.clone().unwrap_or_else(|| "lenet5".to_string());
        let info = stride_zoo::find(&model)?;
        let dataset: DatasetName = self.dataset.as_deref().unwrap_or("fashion-mnist").parse()?;
        let (mean, std, classes) = dataset_defaults(dataset);
        // The lecture's bag of tricks for the deep networks (He et al.: lr 0.1, weight decay 1e-4,
        // batch norm after every convolution, which is what lets them take that rate); LeNet-5,
        // without batch norm, trains best a step lower (BENCHMARKS.md).
        let (lr, weight_decay) = if model == "lenet5" { (0.05, 5e-4) } else { (0.1, 1e-4) };
        let mut optimizer = OptimizerConfig::sgd(
            self.lr.unwrap_or(lr),
            self.momentum.unwrap_or(0.9),
            self.weight_decay.unwrap_or(weight_decay),
        );
        if let Some(kind) = &self.optimizer {
            optimizer.kind = kind.clone();
        }
        Ok(RunConfig {
            model,
            dataset: dataset.as_str().to_string(),
            classes,
            input: [1, 28, 28],
            mean,
            std,
            epochs: self.epochs.unwrap_or(20),
            batch_size: self.batch_size.unwrap_or(128),
            optimizer,
            schedule: self.schedule.clone().unwrap_or_else(|| "plateau:2".to_string()),
            seed: self.seed.unwrap_or(42),
            validation: self.validation.unwrap_or(5000),
            train_subset: self.train_subset,
            augment: !self.no_augment && info.input[1] == 28,
        })
    }
}

/// Raised by the first Ctrl-C; a second one ends the process at once.
fn install_interrupt() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without waiting for the checkpoint");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint after this batch (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    set_threads(args.threads)?;
    let (mut trainer, dir) = match &args.resume {
        Some(dir) => {
            let trainer = Trainer::resume(dir, args.epochs)?;
            let conflicts = args.conflicts_with(trainer.config());
            if !conflicts.is_empty() {
                bail!(
                    "{} cannot change when resuming: the run keeps the settings saved in {}; \
                     only --epochs, --data, --threads and --quiet apply",
                    conflicts.join(", "),
                    dir.join(CHECKPOINT_FILE).display()
                );
            }
            (trainer, dir.clone())
        }
        None => {
            let config = args.config()?;
            let dir = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("{}-{}", config.model, config.dataset))
            });
            (Trainer::create(config, &dir)?, dir)
        }
    };
    let config = trainer.config().clone();
    let dataset: DatasetName = config.dataset.parse()?;
    let found = Discovery::standard(args.data.clone()).find_or_download(dataset, None)?;
    writeln!(out, "data: {} from {} ({})", dataset, found.dir.display(), found.place)?;
    let data = prepare(&config, &found.dir)?;
    let model = trainer.model();
    let parameters = stride_nn::module::parameter_count(model);
    writeln!(
        out,
        "model: {} ({parameters} parameters), {} training / {} validation images, batch {}, {} threads",
        config.model,
        data.train.example_count(),
        config.validation,
        config.batch_size,
        rayon::current_num_threads()
    )?;
    writeln!(
        out,
        "optimiser: {} lr {} momentum {} weight decay {}, schedule {}, seed {}",
        config.optimizer.kind,
        config.optimizer.lr,
        config.optimizer.momentum,
        config.optimizer.weight_decay,
        config.schedule,
        config.seed
    )?;
    if args.resume.is_some() {
        writeln!(
            out,
            "resuming {} at epoch {} of {}",
            dir.display(),
            trainer.epochs_done() + 1,
            config.epochs
        )?;
    }
    out.flush()?;
    let stop = install_interrupt()?;
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let mut console = Console::new(&mut *out, show_bar);
    let outcome = trainer.fit(&data, &mut console, &stop)?;
    drop(console);
    match outcome {
        Outcome::Finished => {
            let best = trainer.history().iter().max_by(|a, b| {
                let acc = |r: &stride_train::metrics::EpochRecord| {
                    r.validation.or(r.test).map_or(0.0, |s| s.accuracy)
                };
                acc(a).total_cmp(&acc(b))
            });
            if let Some(last) = trainer.history().last()
                && let Some(test) = last.test
            {
                writeln!(out, "test accuracy after {} epochs: {:.2}%", last.epoch, 100.0 * test.accuracy)?;
            }
            if let Some(best) = best {
                writeln!(out, "best validation epoch: {} ({})", best.epoch, dir.join(BEST_FILE).display())?;
            }
            writeln!(
                out,
                "run saved in {}: {CHECKPOINT_FILE}, {METRICS_FILE}, {CURVES_FILE}; evaluate with `stride eval {}`",
                dir.display(),
                dir.display()
            )?;
            Ok(())
        }
        Outcome::Interrupted { position } => {
            writeln!(
                out,
                "interrupted {position}: checkpoint saved in {}; continue with `stride train --resume {}`",
                dir.display(),
                dir.display()
            )?;
            out.flush()?;
            Err(Interrupted.into())
        }
    }
}
