//! What defines a training run: the model, the data, the optimiser and its schedule, the seed.
//! Saved in every checkpoint, so that a resumed run rebuilds exactly the same pieces.

use serde::{Deserialize, Serialize};
use stride_nn::optim::{Adam, Optimizer, Sgd};
use stride_nn::schedule::{Constant, Cosine, ReduceOnPlateau, Schedule, StepDecay, Warmup};

use crate::error::{Error, Result};

/// The optimiser and its hyper-parameters, as `torch.optim` names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// `sgd`, `adam` or `adamw`.
    pub kind: String,
    pub lr: f32,
    /// SGD only.
    pub momentum: f32,
    /// SGD only.
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl OptimizerConfig {
    /// The lecture's recipe: SGD with momentum 0.9 and weight decay.
    pub fn sgd(lr: f32, momentum: f32, weight_decay: f32) -> Self {
        OptimizerConfig { kind: "sgd".into(), lr, momentum, nesterov: false, weight_decay }
    }

    pub fn build(&self) -> Result<Box<dyn Optimizer + Send>> {
        Ok(match self.kind.as_str() {
            "sgd" => Box::new(
                Sgd::new(self.lr)?
                    .momentum(self.momentum)?
                    .nesterov(self.nesterov)?
                    .weight_decay(self.weight_decay)?,
            ),
            "adam" => Box::new(Adam::new(self.lr)?.weight_decay(self.weight_decay)?),
            "adamw" => Box::new(Adam::adamw(self.lr)?.weight_decay(self.weight_decay)?),
            other => {
                return Err(Error::Invalid(format!(
                    "unknown optimiser {other:?}; choose sgd, adam or adamw"
                )));
            }
        })
    }
}

/// A learning-rate schedule, written as on the command line:
///
/// | spec | schedule |
/// |---|---|
/// | `constant` | the same rate throughout |
/// | `step:E1,E2,…` | divided by 10 after epochs E1, E2, … (`MultiStepLR`, γ = 0.1) |
/// | `cosine` | cosine annealing to 0 over the run (`CosineAnnealingLR`, T = epochs) |
/// | `plateau[:P]` | divided by 10 when the validation loss has not improved for more than P epochs (default 2) |
/// | `warmup:W,S` | linear warm-up over W epochs, then schedule S (`warmup:2,cosine`) |
pub fn parse_schedule(spec: &str, lr: f32, epochs: usize) -> Result<Box<dyn Schedule + Send>> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "schedule {spec:?}: {why}; use constant, step:E1,E2,…, cosine, plateau[:PATIENCE] or warmup:W,SCHEDULE"
        ))
    };
    let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
    let count = |text: &str| {
        text.trim().parse::<usize>().map_err(|_| bad(&format!("{text:?} is not a number of epochs")))
    };
    Ok(match name {
        "constant" if args.is_empty() => Box::new(Constant { lr }),
        "step" => {
            let milestones = args.split(',').map(count).collect::<Result<Vec<_>>>()?;
            if milestones.is_empty() || milestones.contains(&0) {
                return Err(bad("milestones must be epochs from 1 on"));
            }
            Box::new(StepDecay::at(lr, milestones, 0.1))
        }
        "cosine" if args.is_empty() => Box::new(Cosine::new(lr, epochs.max(1), 0.0)?),
        "plateau" => {
            let patience = if args.is_empty() { 2 } else { count(args)? };
            Box::new(ReduceOnPlateau::new(lr).patience(patience))
        }
        "warmup" => {
            let (warm, then) = args.split_once(',').ok_or_else(|| bad("warmup needs W,SCHEDULE"))?;
            let warm = count(warm)?;
            let then = parse_schedule(then, lr, epochs.saturating_sub(warm))?;
            Box::new(Warmup::new(lr, 0.1, warm, Some(then))?)
        }
        _ => return Err(bad("unknown schedule")),
    })
}

/// Everything that defines a run. Two runs with equal configurations and seeds compute the same
/// weights, whatever the thread count and however often they were interrupted and resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// A name from the model zoo (`lenet5`).
    pub model: String,
    /// `mnist` or `fashion-mnist`.
    pub dataset: String,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// The network's input `[C, H, W]`.
    pub input: [usize; 3],
    /// Per-channel normalisation applied to pixels in [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// See [`parse_schedule`].
    pub schedule: String,
    pub seed: u64,
    /// Training images held out for validation (0: none; the schedule then reads the training
    /// loss).
    pub validation: usize,
    /// Use only the first this many training images (after the validation split); `None`: all.
    pub train_subset: Option<usize>,
    /// Fashion-MNIST: random horizontal flip; MNIST: random crop with padding 2.
    pub augment: bool,
}

impl RunConfig {
    /// Rejects settings no run could use, before any work.
    pub fn check(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("--epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("--batch-size must be at least 1".to_string())
        } else if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            Some(format!("--lr must be a positive number, got {}", self.optimizer.lr))
        } else if self.train_subset == Some(0) {
            Some("--train-subset must be at least 1 image".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::Invalid(problem));
        }
        self.optimizer.build()?;
        parse_schedule(&self.schedule, self.optimizer.lr, self.epochs)?;
        Ok(())
    }

    pub fn build_schedule(&self) -> Result<Box<dyn Schedule + Send>> {
        parse_schedule(&self.schedule, self.optimizer.lr, self.epochs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(spec: &str, metrics: &[f32]) -> Vec<f32> {
        let mut s = parse_schedule(spec, 0.1, 4).unwrap();
        let mut out = vec![s.lr()];
        out.extend(metrics.iter().map(|&m| s.step(Some(m)).unwrap()));
        out
    }

    #[test]
    fn schedules_parse_as_documented() {
        let flat = [1.0, 1.0, 1.0, 1.0];
        assert_eq!(lrs("constant", &flat), [0.1; 5]);
        let step = lrs("step:1,3", &flat);
        assert!((step[1] - 0.01).abs() < 1e-7 && (step[3] - 0.001).abs() < 1e-7, "{step:?}");
        assert!(lrs("cosine", &flat)[4].abs() < 1e-7);
        let plateau = lrs("plateau:1", &flat);
        // Best at epoch 1, no improvement in epochs 2 and 3: more than 1 bad epoch, so ÷10 after 3.
        assert!(plateau[2] == 0.1 && (plateau[3] - 0.01).abs() < 1e-7, "{plateau:?}");
        let warm = lrs("warmup:2,constant", &flat);
        assert!(warm[0] < 0.1 && warm[2] == 0.1, "{warm:?}");
    }

    #[test]
    fn bad_schedules_say_what_is_accepted() {
        for spec in ["linear", "step:", "step:0", "step:a", "plateau:x", "warmup:2", "cosine:3"] {
            let err = parse_schedule(spec, 0.1, 4).err().unwrap().to_string();
            assert!(err.contains("use constant, step:E1,E2,…"), "{spec}: {err}");
        }
    }
}
