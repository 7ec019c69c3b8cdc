//! Learning-rate schedules, stepped once per epoch as in PyTorch: step decay, multi-step,
//! cosine annealing, linear warm-up, and ReduceLROnPlateau — the lecture's "divide the learning
//! rate by 10 when the validation error plateaus".

use std::collections::BTreeMap;

use stride_tensor::{Error, Result};

/// A schedule's progress as named numbers, saved with a checkpoint so that a resumed run
/// continues with the same learning rates (f32 values survive the f64 round trip exactly).
pub type ScheduleState = BTreeMap<String, f64>;

fn counter(state: &ScheduleState, key: &str, schedule: &str) -> Result<usize> {
    match state.get(key) {
        Some(&v) if v >= 0.0 && v.fract() == 0.0 && v < 1e15 => Ok(v as usize),
        Some(&v) => Err(Error::invalid(schedule, format!("saved state {key} = {v} is not a count"))),
        None => Err(Error::invalid(schedule, format!("saved state has no {key}"))),
    }
}

/// A learning rate that changes from epoch to epoch.
pub trait Schedule {
    /// The learning rate for the next epoch, after `epochs_done` epochs; `metric` is the
    /// validation loss (or error) of the epoch just finished, which only the plateau schedule
    /// reads.
    fn step(&mut self, metric: Option<f32>) -> Result<f32>;
    /// The current learning rate.
    fn lr(&self) -> f32;
    /// Everything [`Schedule::step`] has accumulated.
    fn state(&self) -> ScheduleState;
    /// Restores what [`Schedule::state`] returned (from a schedule built with the same settings).
    fn load_state(&mut self, state: &ScheduleState) -> Result<()>;
}

/// The same learning rate throughout.
#[derive(Debug, Clone)]
pub struct Constant {
    pub lr: f32,
}

impl Schedule for Constant {
    fn step(&mut self, _: Option<f32>) -> Result<f32> {
        Ok(self.lr)
    }

    fn lr(&self) -> f32 {
        self.lr
    }

    fn state(&self) -> ScheduleState {
        ScheduleState::new()
    }

    fn load_state(&mut self, _: &ScheduleState) -> Result<()> {
        Ok(())
    }
}

/// `lr = base · γ^⌊epoch / step_size⌋` (`StepLR`); with several milestones, `γ` to the number of
/// milestones passed (`MultiStepLR`).
#[derive(Debug, Clone)]
pub struct StepDecay {
    base: f32,
    gamma: f32,
    milestones: Vec<usize>,
    step_size: Option<usize>,
    epoch: usize,
}

impl StepDecay {
    pub fn every(base: f32, step_size: usize, gamma: f32) -> Result<Self> {
        if step_size == 0 {
            return Err(Error::invalid("step_lr", "step size must be at least 1 epoch"));
        }
        Ok(StepDecay { base, gamma, milestones: Vec::new(), step_size: Some(step_size), epoch: 0 })
    }

    pub fn at(base: f32, mut milestones: Vec<usize>, gamma: f32) -> Self {
        milestones.sort_unstable();
        StepDecay { base, gamma, milestones, step_size: None, epoch: 0 }
    }

    fn at_epoch(&self, epoch: usize) -> f32 {
        let decays = match self.step_size {
            Some(size) => epoch / size,
            None => self.milestones.iter().filter(|&&m| m <= epoch).count(),
        };
        self.base * self.gamma.powi(decays as i32)
    }
}

impl Schedule for StepDecay {
    fn step(&mut self, _: Option<f32>) -> Result<f32> {
        self.epoch += 1;
        Ok(self.lr())
    }

    fn lr(&self) -> f32 {
        self.at_epoch(self.epoch)
    }

    fn state(&self) -> ScheduleState {
        ScheduleState::from([("epoch".to_string(), self.epoch as f64)])
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        self.epoch = counter(state, "epoch", "step_lr")?;
        Ok(())
    }
}

/// `lr = η_min + (base − η_min)·(1 + cos(π·epoch/T))/2` (`CosineAnnealingLR`).
#[derive(Debug, Clone)]
pub struct Cosine {
    base: f32,
    min: f32,
    period: usize,
    epoch: usize,
}

impl Cosine {
    pub fn new(base: f32, period: usize, min: f32) -> Result<Self> {
        if period == 0 {
            return Err(Error::invalid("cosine", "the period T must be at least 1 epoch"));
        }
        Ok(Cosine { base, min, period, epoch: 0 })
    }
}

impl Schedule for Cosine {
    fn step(&mut self, _: Option<f32>) -> Result<f32> {
        self.epoch += 1;
        Ok(self.lr())
    }

    fn lr(&self) -> f32 {
        let phase = std::f64::consts::PI * self.epoch as f64 / self.period as f64;
        (self.min as f64 + (self.base - self.min) as f64 * (1.0 + phase.cos()) / 2.0) as f32
    }

    fn state(&self) -> ScheduleState {
        ScheduleState::from([("epoch".to_string(), self.epoch as f64)])
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        self.epoch = counter(state, "epoch", "cosine")?;
        Ok(())
    }
}

/// Linear warm-up from `start_factor · base` to `base` over `epochs` (`LinearLR`), then hands
/// over to another schedule, if any.
pub struct Warmup {
    base: f32,
    start_factor: f32,
    epochs: usize,
    epoch: usize,
    then: Option<Box<dyn Schedule + Send>>,
}

impl Warmup {
    pub fn new(
        base: f32,
        start_factor: f32,
        epochs: usize,
        then: Option<Box<dyn Schedule + Send>>,
    ) -> Result<Self> {
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(Error::invalid(
                "warmup",
                format!("start factor must be in (0, 1], got {start_factor}"),
            ));
        }
        Ok(Warmup { base, start_factor, epochs: epochs.max(1), epoch: 0, then })
    }
}

impl Schedule for Warmup {
    fn step(&mut self, metric: Option<f32>) -> Result<f32> {
        self.epoch += 1;
        if self.epoch > self.epochs
            && let Some(next) = self.then.as_mut()
        {
            next.step(metric)?;
        }
        Ok(self.lr())
    }

    fn lr(&self) -> f32 {
        if self.epoch >= self.epochs {
            return self.then.as_ref().map_or(self.base, |next| next.lr());
        }
        let progress = self.epoch as f32 / self.epochs as f32;
        self.base * (self.start_factor + (1.0 - self.start_factor) * progress)
    }

    fn state(&self) -> ScheduleState {
        let mut state = ScheduleState::from([("epoch".to_string(), self.epoch as f64)]);
        if let Some(next) = &self.then {
            state.extend(next.state().into_iter().map(|(k, v)| (format!("then.{k}"), v)));
        }
        state
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        self.epoch = counter(state, "epoch", "warmup")?;
        if let Some(next) = self.then.as_mut() {
            let inner: ScheduleState = state
                .iter()
                .filter_map(|(k, &v)| k.strip_prefix("then.").map(|k| (k.to_string(), v)))
                .collect();
            next.load_state(&inner)?;
        }
        Ok(())
    }
}

/// `ReduceLROnPlateau` in `min` mode with a relative threshold: when the metric has not improved
/// on its best by more than `threshold` for more than `patience` epochs, multiply the rate by
/// `factor` (0.1: "divide by 10"), then wait `cooldown` epochs before counting again.
#[derive(Debug, Clone)]
pub struct ReduceOnPlateau {
    lr: f32,
    pub factor: f32,
    pub patience: usize,
    pub threshold: f32,
    pub cooldown: usize,
    pub min_lr: f32,
    best: Option<f32>,
    bad_epochs: usize,
    cooldown_left: usize,
}

impl ReduceOnPlateau {
    /// PyTorch's defaults: factor 0.1, patience 10, threshold 1e-4, no cooldown, no minimum.
    pub fn new(lr: f32) -> Self {
        ReduceOnPlateau {
            lr,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            best: None,
            bad_epochs: 0,
            cooldown_left: 0,
        }
    }

    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    pub fn factor(mut self, factor: f32) -> Result<Self> {
        if !(factor > 0.0 && factor < 1.0) {
            return Err(Error::invalid(
                "reduce_on_plateau",
                format!("factor must be in (0, 1), got {factor}"),
            ));
        }
        self.factor = factor;
        Ok(self)
    }
}

impl Schedule for ReduceOnPlateau {
    fn step(&mut self, metric: Option<f32>) -> Result<f32> {
        let Some(metric) = metric else {
            return Err(Error::invalid("reduce_on_plateau", "needs the validation metric of every epoch"));
        };
        if metric.is_nan() {
            return Err(Error::invalid("reduce_on_plateau", "the validation metric is NaN"));
        }
        match self.best {
            Some(best) if metric >= best * (1.0 - self.threshold) => self.bad_epochs += 1,
            _ => {
                self.best = Some(metric);
                self.bad_epochs = 0;
            }
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_epochs = 0;
        }
        if self.bad_epochs > self.patience {
            self.lr = (self.lr * self.factor).max(self.min_lr);
            self.cooldown_left = self.cooldown;
            self.bad_epochs = 0;
        }
        Ok(self.lr)
    }

    fn lr(&self) -> f32 {
        self.lr
    }

    fn state(&self) -> ScheduleState {
        let mut state = ScheduleState::from([
            ("lr".to_string(), self.lr as f64),
            ("bad_epochs".to_string(), self.bad_epochs as f64),
            ("cooldown_left".to_string(), self.cooldown_left as f64),
        ]);
        if let Some(best) = self.best {
            state.insert("best".to_string(), best as f64);
        }
        state
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        const WHAT: &str = "reduce_on_plateau";
        let lr = state.get("lr").copied().filter(|lr| lr.is_finite() && *lr >= 0.0);
        let Some(lr) = lr else {
            return Err(Error::invalid(WHAT, "saved state has no valid lr"));
        };
        self.lr = lr as f32;
        self.bad_epochs = counter(state, "bad_epochs", WHAT)?;
        self.cooldown_left = counter(state, "cooldown_left", WHAT)?;
        self.best = state.get("best").map(|&b| b as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The learning rate after each of 8 epochs, against PyTorch 2.15's schedulers on an SGD
    /// with lr 0.1.
    fn run(schedule: &mut dyn Schedule, metrics: Option<&[f32]>) -> Vec<f32> {
        (0..8).map(|e| schedule.step(metrics.map(|m| m[e])).unwrap()).collect()
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn schedules_match_pytorch() {
        // StepLR(o, 3, 0.1)
        assert_close(
            &run(&mut StepDecay::every(0.1, 3, 0.1).unwrap(), None),
            &[0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001],
        );
        // MultiStepLR(o, [2, 5], 0.5)
        assert_close(
            &run(&mut StepDecay::at(0.1, vec![5, 2], 0.5), None),
            &[0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025],
        );
        // CosineAnnealingLR(o, 6, 0.001)
        assert_close(
            &run(&mut Cosine::new(0.1, 6, 0.001).unwrap(), None),
            &[0.09336826, 0.07525, 0.0505, 0.02575, 0.00763174, 0.001, 0.00763174, 0.02575],
        );
        // LinearLR(o, 0.25, 1.0, 4)
        assert_close(
            &run(&mut Warmup::new(0.1, 0.25, 4, None).unwrap(), None),
            &[0.04375, 0.0625, 0.08125, 0.1, 0.1, 0.1, 0.1, 0.1],
        );
        // ReduceLROnPlateau(o, 'min', 0.1, patience=1)
        let metrics = [1.0, 0.9, 0.9, 0.9, 0.95, 0.5, 0.5, 0.5];
        assert_close(
            &run(&mut ReduceOnPlateau::new(0.1).patience(1), Some(&metrics)),
            &[0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001],
        );
    }

    #[test]
    fn warmup_hands_over_to_the_next_schedule() {
        let cosine = Cosine::new(0.1, 4, 0.0).unwrap();
        let mut s = Warmup::new(0.1, 0.5, 2, Some(Box::new(cosine))).unwrap();
        let lrs: Vec<f32> = (0..4).map(|_| s.step(None).unwrap()).collect();
        assert_close(&lrs, &[0.075, 0.1, 0.085_355_34, 0.05]);
    }

    /// Stepping 3 epochs, saving, restoring into a fresh schedule and stepping on gives the rates
    /// of an uninterrupted run.
    #[test]
    fn state_round_trip_continues_identically() {
        type Make = fn() -> Box<dyn Schedule>;
        let makers: [Make; 5] = [
            || Box::new(Constant { lr: 0.1 }),
            || Box::new(StepDecay::every(0.1, 2, 0.1).unwrap()),
            || Box::new(Cosine::new(0.1, 5, 0.0).unwrap()),
            || Box::new(Warmup::new(0.1, 0.5, 2, Some(Box::new(StepDecay::at(0.1, vec![3], 0.1)))).unwrap()),
            || Box::new(ReduceOnPlateau::new(0.1).patience(0)),
        ];
        let metrics = [1.0, 0.9, 0.95, 0.96, 0.5, 0.7, 0.8];
        for make in makers {
            let mut whole = make();
            let want: Vec<f32> = metrics.iter().map(|&m| whole.step(Some(m)).unwrap()).collect();
            let mut first = make();
            for &m in &metrics[..3] {
                first.step(Some(m)).unwrap();
            }
            let mut resumed = make();
            resumed.load_state(&first.state()).unwrap();
            assert_eq!(resumed.lr(), want[2]);
            let got: Vec<f32> = metrics[3..].iter().map(|&m| resumed.step(Some(m)).unwrap()).collect();
            assert_eq!(got, want[3..]);
        }
        let bad = ScheduleState::from([("epoch".to_string(), 1.5)]);
        assert_eq!(
            Cosine::new(0.1, 5, 0.0).unwrap().load_state(&bad).unwrap_err().to_string(),
            "cosine: invalid argument: saved state epoch = 1.5 is not a count"
        );
    }

    #[test]
    fn errors() {
        assert!(StepDecay::every(0.1, 0, 0.1).is_err());
        assert!(Cosine::new(0.1, 0, 0.0).is_err());
        assert_eq!(
            ReduceOnPlateau::new(0.1).step(None).unwrap_err().to_string(),
            "reduce_on_plateau: invalid argument: needs the validation metric of every epoch"
        );
        assert!(ReduceOnPlateau::new(0.1).step(Some(f32::NAN)).is_err());
        assert!(ReduceOnPlateau::new(0.1).factor(1.0).is_err());
    }
}
