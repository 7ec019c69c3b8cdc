//! `stride bench net`: whole networks of the zoo, end to end. Inference is what `stride infer`
//! runs (eval mode, batch norm folded into the convolutions, ReLU fused, no autograd); a training
//! step is forward, cross-entropy, backward and an SGD step, as `stride train` takes them, on a
//! fixed batch so that the figure is the engine's and not the data loader's.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::time::Instant;

use stride_nn::module::{Mode, Module, named_parameters, summarize};
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
    /// Where an inference call's time goes, layer by layer (`--profile`).
    pub layers: Option<Vec<LayerTime>>,
}

/// One leaf layer's share of an inference call.
#[derive(Debug, Clone)]
pub struct LayerTime {
    /// The torchvision path (`layer1.0.conv1`).
    pub path: String,
    /// [`Module::describe`] of the layer.
    pub layer: String,
    pub output: Vec<usize>,
    /// Multiply-adds of the layer at this batch.
    pub mult_adds: u64,
    /// From the end of the leaf before it to this leaf's output, per call, milliseconds: the
    /// layer and whatever its container did in between (the concatenation of an Inception block,
    /// a residual addition, a flatten or a functional pooling with no path of its own).
    pub timings: Timings,
}

impl LayerTime {
    pub fn gflops(&self) -> f64 {
        2.0 * self.mult_adds as f64 / (self.timings.median() * 1e6)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path,
            "layer": self.layer,
            "output": self.output,
            "mult_adds": self.mult_adds,
            "median_ms": (self.timings.median() * 1e4).round() / 1e4,
            "gflops": (self.gflops() * 10.0).round() / 10.0,
        })
    }
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
            "isa": stride_tensor::simd::isa().name(),
            "layers": self.layers.as_ref().map(|l| l.iter().map(LayerTime::json).collect::<Vec<_>>()),
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

/// Builds the network, checks one call, then times calls within the budget; with `profile`
/// (inference only) it then times each leaf layer over `budget.min_runs` more calls.
pub fn measure(case: &Case, budget: Budget, profile: bool) -> Result<NetMeasurement> {
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
    if profile && case.task != Task::Inference {
        bail!("--profile times the layers of the inference path; drop it or use --task inference");
    }
    let mut layers = None;
    let timings = match case.task {
        Task::Inference => {
            net.fold_batch_norm()?;
            let mut run =
                || no_grad(|| net.forward(&images, Mode::Eval)).map(|y| drop(std::hint::black_box(y)));
            run().with_context(context)?;
            let timings = timed(budget, run)?;
            if profile {
                layers = Some(
                    profile_layers(net.as_mut(), &images, budget.min_runs.max(1)).with_context(context)?,
                );
            }
            timings
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
        layers,
    })
}

/// Times every leaf layer of `runs` inference calls by the clock between one leaf's output and
/// the next (the tap of [`Module::forward_tapped`]), in forward order.
fn profile_layers(net: &mut dyn Module, images: &Var, runs: usize) -> Result<Vec<LayerTime>> {
    let (rows, _) = summarize(net, images.value().dims())?;
    let mut times: HashMap<String, Vec<f64>> = HashMap::new();
    for _ in 0..runs {
        let mut last = Instant::now();
        let mut tap = |path: &str, _: &Var| {
            let now = Instant::now();
            times.entry(path.to_string()).or_default().push((now - last).as_secs_f64() * 1e3);
            last = now;
        };
        no_grad(|| net.forward_tapped("", images, Mode::Eval, &mut tap))?;
    }
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let runs = times.remove(&row.path)?;
            Some(LayerTime {
                path: row.path,
                layer: row.layer,
                output: row.output,
                mult_adds: row.mult_adds,
                timings: Timings { runs },
            })
        })
        .collect())
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
