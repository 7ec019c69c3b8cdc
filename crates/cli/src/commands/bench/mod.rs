//! `stride bench`: measured speed of stride's kernels, as tables for people and JSON for tools.
//!
//! Every benchmark first checks the fast kernel against the reference implementation on the same
//! data, then times it: warm-up, then repeated runs until both a minimum count and a minimum time
//! are reached; it reports the median with min–max, never a single run. Comparisons with PyTorch
//! run side by side through `tools/bench_compare.py`.
//!
//! The layers' results are checked before they are timed, so a fast wrong kernel cannot post a
//! number.

pub mod conv;
pub mod net;
pub mod peak;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

const LONG_ABOUT: &str = "\
Measure stride's kernels on real layers.

`stride bench conv` runs every layer of a conv_layers.json file (by default the built-in copy of
the project's list: LeNet-5, ResNet-20, ResNet-50, VGG-16 and AlexNet layers, a 1D and a 3D case)
in each --directions: forward, backward_input (dx alone), backward_weight (dw and db) and
forward_backward (the forward, then dx, dw and db: a training step's convolution work).
Each is first checked against the reference implementation, then timed: one warm-up, then
repeated runs until --min-runs and --min-seconds are both reached. It reports the median time with
min–max, GFLOP/s (2 × multiply-adds on the padded input / median, × 3 for forward_backward)
and the percentage of the
machine's peak, measured at the start with an FMA loop on the same threads.

With --json it prints one JSON object per layer and direction (name, direction, threads,
median_ms, min_ms, max_ms, gflops, peak_percent), the format tools/bench_compare.py reads to put
stride and PyTorch side by side.

`stride bench net MODEL…` times whole networks of the zoo: --task inference runs the path of
`stride infer` (eval mode, batch norm folded, ReLU fused, no autograd) on a batch of --batch
images; --task train runs training steps (forward, cross-entropy, backward, SGD with momentum
0.9 and weight decay 5e-4) on a fixed batch, without data loading. It reports the median time
per call with min–max, images/s and the process's peak resident memory (VmHWM), with --json one
object per model (name, task, batch, input, classes, threads, median_ms, min_ms, max_ms,
images_per_second, start_rss_mib, peak_rss_mib): tools/bench_nets.py runs one model per process
so that the peak is that model's, and puts stride beside PyTorch and ONNX Runtime.

With --profile (inference) it then times every leaf layer over --min-runs more calls and lists
the --top slowest with their share of the summed layer times and GFLOP/s (with --json, all of
them in forward order under \"layers\": path, layer, output, mult_adds, median_ms, gflops). A
leaf's time runs from the previous leaf's output to its own, so work between leaves (a residual
addition, an Inception concatenation, a functional pooling) counts for the leaf after it.";

/// Measure stride's kernels on real layers (checked against the reference, then timed).
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Convolution layers: forward and backward, as time, GFLOP/s and percent of peak.
    Conv(ConvArgs),
    /// Whole networks of the zoo: inference or training steps, as time, images/s and peak memory.
    Net(NetArgs),
}

#[derive(Debug, clap::Args)]
struct NetArgs {
    /// The models (`stride models` lists them)
    #[arg(required = true)]
    models: Vec<String>,
    /// inference (the folded, fused path of `stride infer`) or train (forward, loss, backward,
    /// SGD step)
    #[arg(long, value_enum, default_value = "inference")]
    task: net::Task,
    /// Images per call
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The input volume C×H×W [default: the model's own]
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// Classes of the last layer [default: the model's own]
    #[arg(long)]
    classes: Option<usize>,
    /// Print one JSON object per model instead of a table
    #[arg(long)]
    json: bool,
    /// Then time each layer of the inference path (--min-runs calls) and list the layers that
    /// take the most time
    #[arg(long)]
    profile: bool,
    /// With --profile, how many layers to list (slowest first; with --json, all of them in
    /// forward order)
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    timing: Timing,
}

/// How many threads, and how long to measure: shared by the benchmarks.
#[derive(Debug, clap::Args)]
struct Timing {
    /// Threads to use [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 5)]
    min_runs: usize,
    #[arg(long, default_value_t = 50)]
    max_runs: usize,
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
}

impl Timing {
    fn budget(&self) -> Budget {
        Budget { min_runs: self.min_runs, max_runs: self.max_runs, min_seconds: self.min_seconds }
    }
}

#[derive(Debug, clap::Args)]
struct ConvArgs {
    /// A conv_layers.json file [default: the built-in copy of bench/conv_layers.json]
    #[arg(long, value_name = "FILE")]
    layers: Option<PathBuf>,
    /// Print one JSON object per layer and direction instead of a table
    #[arg(long)]
    json: bool,
    /// Only the layers whose name contains this
    #[arg(long, default_value = "")]
    filter: String,
    /// Comma list of forward, backward_input, backward_weight, forward_backward
    #[arg(long, default_value = "forward,backward_input,backward_weight,forward_backward")]
    directions: String,
    #[command(flatten)]
    timing: Timing,
    /// Skip measuring the machine's peak (and the percent-of-peak column)
    #[arg(long)]
    no_peak: bool,
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    match &args.what {
        What::Conv(conv_args) => {
            super::set_threads(conv_args.timing.threads)?;
            run_conv(conv_args, out)
        }
        What::Net(net_args) => {
            super::set_threads(net_args.timing.threads)?;
            run_net(net_args, out)
        }
    }
}

fn run_net(args: &NetArgs, out: &mut impl Write) -> Result<()> {
    let budget = args.timing.budget();
    let input = args.input.as_deref().map(super::summary::parse_volume).transpose()?;
    if !args.json {
        writeln!(out, "kernels: {}", kernels_line())?;
        writeln!(
            out,
            "{:<14} {:<10} {:>5} {:>10} {:>9} {:>21} {:>9} {:>9}",
            "network", "task", "batch", "input", "median ms", "min–max ms", "images/s", "peak MiB"
        )?;
    }
    for model in &args.models {
        let info = stride_zoo::find(model)?;
        let case = net::Case {
            model: info.name.to_string(),
            task: args.task,
            batch: args.batch,
            input: input.unwrap_or(info.input),
            classes: args.classes.unwrap_or(info.classes),
        };
        let m = net::measure(&case, budget, args.profile)?;
        if args.json {
            writeln!(out, "{}", m.json())?;
        } else {
            let [c, h, w] = case.input;
            writeln!(
                out,
                "{:<14} {:<10} {:>5} {:>10} {:>9.2} {:>21} {:>9.1} {:>9}",
                case.model,
                case.task.name(),
                case.batch,
                format!("{c}×{h}×{w}"),
                m.timings.median(),
                format!("{:.2}–{:.2}", m.timings.min(), m.timings.max()),
                m.images_per_second(),
                m.peak_rss_mib.map_or(String::from("–"), |v| format!("{v:.0}"))
            )?;
            if let Some(layers) = &m.layers {
                write_profile(layers, args.top, out)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// The `top` slowest layers of a profile with their share of the summed layer times, then the
/// rest in one line.
fn write_profile(layers: &[net::LayerTime], top: usize, out: &mut impl Write) -> Result<()> {
    let total: f64 = layers.iter().map(|l| l.timings.median()).sum();
    let mut slowest: Vec<&net::LayerTime> = layers.iter().collect();
    slowest.sort_by(|a, b| b.timings.median().total_cmp(&a.timings.median()));
    writeln!(
        out,
        "  {:<28} {:<34} {:>16} {:>9} {:>6} {:>8}",
        "layer", "", "output", "median ms", "%", "GFLOP/s"
    )?;
    for l in slowest.iter().take(top) {
        let gflops = if l.mult_adds > 0 { format!("{:.1}", l.gflops()) } else { String::from("–") };
        let output = l.output.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
        let mut describe = l.layer.clone();
        if describe.chars().count() > 34 {
            describe = describe.chars().take(33).collect::<String>() + "…";
        }
        writeln!(
            out,
            "  {:<28} {:<34} {:>16} {:>9.3} {:>6.1} {:>8}",
            l.path,
            describe,
            output,
            l.timings.median(),
            100.0 * l.timings.median() / total,
            gflops
        )?;
    }
    if slowest.len() > top {
        let rest: f64 = slowest[top..].iter().map(|l| l.timings.median()).sum();
        writeln!(out, "  {} other layers: {rest:.3} ms ({:.1}%)", slowest.len() - top, 100.0 * rest / total)?;
    }
    writeln!(out, "  sum of the layers' medians: {total:.3} ms")?;
    Ok(())
}

fn run_conv(args: &ConvArgs, out: &mut impl Write) -> Result<()> {
    let layers = conv::load_layers(args.layers.as_deref())?;
    let directions = conv::Direction::parse_list(&args.directions)?;
    let budget = args.timing.budget();
    let peak = (!args.no_peak).then(peak::measure);
    let threads = rayon::current_num_threads();
    if !args.json {
        if let Some((gflops, isa)) = peak {
            writeln!(out, "peak: {gflops:.0} GFLOP/s ({isa} FMA loop, {threads} threads)")?;
        }
        writeln!(out, "kernels: {}", kernels_line())?;
        writeln!(
            out,
            "{:<32} {:<16} {:>9} {:>21} {:>9} {:>7}",
            "layer", "direction", "median ms", "min–max ms", "GFLOP/s", "% peak"
        )?;
    }
    let selected = layers.iter().filter(|l| l.name.contains(&args.filter));
    for (layer, &direction) in selected.flat_map(|l| directions.iter().map(move |d| (l, d))) {
        let m = conv::measure(layer, direction, budget)?;
        if args.json {
            writeln!(out, "{}", m.json(peak.map(|p| p.0)))?;
        } else {
            let percent = peak.map_or(String::from("–"), |(p, _)| format!("{:.1}", 100.0 * m.gflops() / p));
            writeln!(
                out,
                "{:<32} {:<16} {:>9.3} {:>21} {:>9.1} {:>7}",
                m.name,
                m.direction,
                m.timings.median(),
                format!("{:.3}–{:.3}", m.timings.min(), m.timings.max()),
                m.gflops(),
                percent
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Times of repeated runs, in milliseconds.
#[derive(Debug, Clone)]
pub struct Timings {
    pub runs: Vec<f64>,
}

impl Timings {
    pub fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
    }

    pub fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.runs.iter().copied().fold(0.0, f64::max)
    }
}

/// How long to keep measuring.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub min_runs: usize,
    pub max_runs: usize,
    pub min_seconds: f64,
}

/// One warm-up call, then runs until `min_runs` and `min_seconds` are both reached (or
/// `max_runs`).
pub fn time(budget: Budget, mut f: impl FnMut()) -> Timings {
    f();
    let start = Instant::now();
    let mut runs = Vec::new();
    while runs.len() < budget.max_runs.max(1)
        && (runs.len() < budget.min_runs || start.elapsed().as_secs_f64() < budget.min_seconds)
    {
        let t0 = Instant::now();
        f();
        runs.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Timings { runs }
}

/// Which instruction set the kernels use, and why when it is not the CPU's widest.
fn kernels_line() -> String {
    use stride_tensor::simd::{Isa, MAX_ISA_VARIABLE, isa};
    let (used, widest) = (isa(), Isa::detected());
    if used == widest {
        used.name().to_string()
    } else {
        format!("{} (capped by {MAX_ISA_VARIABLE}; this CPU runs {})", used.name(), widest.name())
    }
}
