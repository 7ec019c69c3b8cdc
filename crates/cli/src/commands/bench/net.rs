//! `stride bench net`: whole networks of the zoo, end to end. Inference is what `stride infer`
//! runs (eval mode, batch norm folded into the convolutions, ReLU fused, no autograd); a training
//! step is forward, cross-entropy, backward and an SGD step, as `stride train` takes them, on a
//! fixed batch so that the figure is the engine's and not the data loader's.

use anyhow::{Context, Result, bail};
use stride_nn::module::{Mode, named_parameters};
use stride_nn::optim::{Optimizer, Sgd};
use stride_tensor::Tensor;
use stride_tensor::autograd::{Var, cross_entropy, no_grad};
use stride_zoo::BuildOptions;

use super::{Budget, Timings, time};

/// What one timed call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// One forward pass of a batch on the inference path.
    Inference,
    /// One training step on a batch.
    Train,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Inference => "inference",
            Task::Train => "train",
        }
    }
}

/// What is measured, for one network.
#[derive(Debug, Clone)]
pub struct Case {
    pub model: String,
    pub task: Task,
    pub batch: usize,
    /// `[C, H, W]`.
    pub input: [usize; 3],
    pub classes: usize,
}

/// The timings of one case and the memory the process held.
#[derive(Debug, Clone)]
pub struct NetMeasurement {
    pub case: Case,
    pub threads: usize,
    pub timings: Timings,
    /// Resident memory before the network was built, MiB (`None` where /proc is not there).
    pub start_rss_mib: Option<f64>,
    /// The process's peak resident memory after the timed runs, MiB.
    pub peak_rss_mib: Option<f64>,
}

impl NetMeasurement {
    pub fn images_per_second(&self) -> f64 {
        self.case.batch as f64 / (self.timings.median() / 1e3)
    }

    pub fn json(&self) -> serde_json::Value {
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        serde_json::json!({
            "name": self.case.model,
            "task": self.case.task.name(),
            "batch": self.case.batch,
            "input": self.case.input,
            "classes": self.case.classes,
            "threads": self.threads,
            "median_ms": round(self.timings.median(), 4),
            "min_ms": round(self.timings.min(), 4),
            "max_ms": round(self.timings.max(), 4),
            "images_per_second": round(self.images_per_second(), 2),
            "start_rss_mib": self.start_rss_mib.map(|v| round(v, 1)),
            "peak_rss_mib": self.peak_rss_mib.map(|v| round(v, 1)),
            "engine": "stride",
        })
    }
}

/// A field of /proc/self/status in MiB (`VmRSS`: now, `VmHWM`: the peak so far).
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: f64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// Values in [0, 1) that differ from image to image and pixel to pixel, the same on every run.
fn seeded_images(shape: [usize; 4]) -> Result<Tensor> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    Ok(Tensor::from_fn(shape.to_vec(), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    })?)
}

/// Builds the network, checks one call, then times calls within the budget.
pub fn measure(case: &Case, budget: Budget) -> Result<NetMeasurement> {
    let info = stride_zoo::find(&case.model)?;
    if case.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let start_rss_mib = proc_status_mib("VmRSS");
    let [c, h, w] = case.input;
    let options = BuildOptions { in_channels: c, classes: case.classes, seed: 0 };
    let mut net = info.build(&options)?;
    let shape = [case.batch, c, h, w];
    // The size rule's verdict on this input before anything runs (a too-small input is a shape
    // error, not a failure deep inside the first call).
    net.output_shape(&shape)?;
    let images = Var::constant(seeded_images(shape)?);
    let context = || format!("{} {} at batch {}", case.model, case.task.name(), case.batch);
    let timings = match case.task {
        Task::Inference => {
            net.fold_batch_norm()?;
            let mut run =
                || no_grad(|| net.forward(&images, Mode::Eval)).map(|y| drop(std::hint::black_box(y)));
            run().with_context(context)?;
            timed(budget, run)?
        }
        Task::Train => {
            let labels: Vec<usize> = (0..case.batch).map(|i| i % case.classes.max(1)).collect();
            let mut sgd = Sgd::new(0.01)?.momentum(0.9)?.weight_decay(5e-4)?;
            let mut step = || -> Result<()> {
                let logits = net.forward(&images, Mode::Train)?;
                let loss = cross_entropy(&logits, &labels, 0.0)?;
                if !loss.value().item()?.is_finite() {
                    bail!("the loss is not finite");
                }
                loss.backward()?;
                drop((loss, logits));
                let mut params = named_parameters(net.as_mut());
                let mut refs: Vec<(&str, &mut Var)> =
                    params.iter_mut().map(|(n, v)| (n.as_str(), &mut **v)).collect();
                sgd.step(&mut refs)?;
                Ok(())
            };
            step().with_context(context)?;
            timed(budget, step)?
        }
    };
    Ok(NetMeasurement {
        case: case.clone(),
        threads: rayon::current_num_threads(),
        timings,
        start_rss_mib,
        peak_rss_mib: proc_status_mib("VmHWM"),
    })
}

/// [`time`] for a call that can fail: the first error stops the timing and is returned.
fn timed<E>(budget: Budget, mut call: impl FnMut() -> Result<(), E>) -> Result<Timings>
where
    anyhow::Error: From<E>,
{
    let mut failure = None;
    let timings = time(budget, || {
        if failure.is_none()
            && let Err(e) = call()
        {
            failure = Some(e);
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(timings),
    }
}
