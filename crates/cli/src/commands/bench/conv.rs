//! `stride bench conv`: every layer of a conv_layers.json file (the real layers of LeNet,
//! ResNet, VGG, AlexNet, plus a 1D and a 3D case), forward, backward to the input, backward to
//! the weights and all three together, as time, GFLOP/s and percent of the machine's measured
//! peak.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use stride_tensor::Tensor;
use stride_tensor::ops::conv::{
    ConvSpec, KernelMode, Padding, conv, conv_backward, conv_backward_input, conv_backward_params,
    conv_backward_reference, conv_reference,
};

use super::{Budget, Timings, time};

/// The layers every convolution benchmark covers, shipped with the binary
/// (a copy of ../shared/bench/conv_layers.json).
pub const DEFAULT_LAYERS: &str = include_str!("../../../../../bench/conv_layers.json");

/// One layer of conv_layers.json.
#[derive(Debug, Clone, Deserialize)]
#[allow(non_snake_case)]
pub struct Layer {
    pub name: String,
    pub dims: usize,
    pub N: usize,
    pub Cin: usize,
    pub Cout: usize,
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub padding: Vec<usize>,
    pub dilation: Vec<usize>,
    pub groups: usize,
    #[serde(default)]
    pub bias: bool,
}

impl Layer {
    fn check(&self) -> Result<()> {
        let d = self.dims;
        if !(1..=3).contains(&d) {
            bail!("layer {}: dims must be 1, 2 or 3, got {d}", self.name);
        }
        for (field, v) in [
            ("input", &self.input),
            ("kernel", &self.kernel),
            ("stride", &self.stride),
            ("padding", &self.padding),
            ("dilation", &self.dilation),
        ] {
            if v.len() != d {
                bail!("layer {}: `{field}` has {} values but dims is {d}", self.name, v.len());
            }
        }
        Ok(())
    }

    fn input_shape(&self) -> Vec<usize> {
        [vec![self.N, self.Cin], self.input.clone()].concat()
    }

    fn weight_shape(&self) -> Vec<usize> {
        [vec![self.Cout, self.Cin / self.groups.max(1)], self.kernel.clone()].concat()
    }
}

pub fn parse_layers(text: &str, origin: &str) -> Result<Vec<Layer>> {
    let layers: Vec<Layer> = serde_json::from_str(text)
        .with_context(|| format!("{origin}: not a conv_layers.json list of layers"))?;
    for layer in &layers {
        layer.check().with_context(|| origin.to_string())?;
    }
    Ok(layers)
}

pub fn load_layers(path: Option<&Path>) -> Result<Vec<Layer>> {
    match path {
        None => parse_layers(DEFAULT_LAYERS, "built-in conv_layers.json"),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            parse_layers(&text, &p.display().to_string())
        }
    }
}

/// The measurement of one layer in one direction.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub direction: &'static str,
    pub threads: usize,
    pub timings: Timings,
    pub flops: f64,
    /// Largest |fast − reference| on the checked image, relative to the largest |reference|.
    pub max_relative_error: f64,
}

impl Measurement {
    pub fn gflops(&self) -> f64 {
        self.flops / self.timings.median() / 1e6
    }

    pub fn json(&self, peak: Option<f64>) -> serde_json::Value {
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        let mut value = serde_json::json!({
            "name": self.name,
            "direction": self.direction,
            "threads": self.threads,
            "median_ms": round(self.timings.median(), 4),
            "min_ms": round(self.timings.min(), 4),
            "max_ms": round(self.timings.max(), 4),
            // Six decimals: a tiny layer timed on a loaded machine can run below 0.01 GFLOP/s.
            "gflops": round(self.gflops(), 6),
            "engine": "stride",
            "isa": stride_tensor::simd::isa().name(),
            "max_relative_error": self.max_relative_error,
        });
        if let Some(peak) = peak {
            value["peak_percent"] = round(100.0 * self.gflops() / peak, 1).into();
        }
        value
    }
}

fn seeded(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    Ok(Tensor::from_fn(shape.to_vec(), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })?)
}

fn spec<const N: usize>(layer: &Layer) -> ConvSpec<N> {
    let arr = |v: &[usize]| -> [usize; N] { std::array::from_fn(|i| v[i]) };
    ConvSpec {
        stride: arr(&layer.stride),
        padding: Padding::symmetric(arr(&layer.padding)),
        dilation: arr(&layer.dilation),
        groups: layer.groups,
        mode: KernelMode::CrossCorrelation,
    }
}

/// What is timed: the forward pass, one of the two gradients alone, or a whole training step's
/// worth of convolution (forward, then both gradients and the bias's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    BackwardInput,
    BackwardWeight,
    ForwardBackward,
}

impl Direction {
    pub const ALL: [Direction; 4] =
        [Direction::Forward, Direction::BackwardInput, Direction::BackwardWeight, Direction::ForwardBackward];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::BackwardInput => "backward_input",
            Direction::BackwardWeight => "backward_weight",
            Direction::ForwardBackward => "forward_backward",
        }
    }

    /// Multiply-adds per multiply-add of the forward: the forward and each gradient cost the same.
    fn passes(self) -> f64 {
        if self == Direction::ForwardBackward { 3.0 } else { 1.0 }
    }

    /// A comma-separated list of direction names.
    pub fn parse_list(text: &str) -> Result<Vec<Direction>> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                Direction::ALL.into_iter().find(|d| d.name() == t).with_context(|| {
                    let names: Vec<&str> = Direction::ALL.iter().map(|d| d.name()).collect();
                    format!("unknown direction {t:?}; choose from {}", names.join(", "))
                })
            })
            .collect()
    }
}

/// Checks then times one layer in one direction.
pub fn measure(layer: &Layer, direction: Direction, budget: Budget) -> Result<Measurement> {
    match layer.dims {
        1 => measure_n::<1>(layer, direction, budget),
        2 => measure_n::<2>(layer, direction, budget),
        _ => measure_n::<3>(layer, direction, budget),
    }
    .with_context(|| format!("layer {}, {}", layer.name, direction.name()))
}

/// The first image of a batch tensor, as a batch of one.
fn first_image(t: &Tensor) -> Result<Tensor> {
    let per_image = t.numel() / t.dims()[0].max(1);
    Ok(Tensor::new([&[1usize][..], &t.dims()[1..]].concat(), t.data()[..per_image].to_vec())?)
}

/// Largest |fast − reference| relative to the largest |reference|; an error if above 1e-4.
fn compare(what: &str, fast: &[f32], reference: &[f32]) -> Result<f64> {
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    let worst = reference.iter().zip(fast).map(|(r, f)| (r - f).abs() as f64).fold(0.0, f64::max);
    let relative = worst / scale;
    if relative > 1e-4 {
        bail!("the fast {what} disagrees with the reference: relative error {relative:.2e}");
    }
    Ok(relative)
}

fn measure_n<const N: usize>(layer: &Layer, direction: Direction, budget: Budget) -> Result<Measurement> {
    let spec = spec::<N>(layer);
    let input_shape = layer.input_shape();
    let geometry = spec.geometry(&input_shape, &layer.weight_shape())?;
    let x = seeded(&input_shape, 1)?;
    let w = seeded(&layer.weight_shape(), 2)?;
    let b = if layer.bias { Some(seeded(&[layer.Cout], 3)?) } else { None };
    let dy = seeded(geometry.output_shape().dims(), 4)?;

    // Validate on the first image: the reference is slow, and every image takes the same path.
    // The output and the input gradient are checked where the timed call puts them (image 0 of
    // the whole batch); the weight gradient sums over the batch, so it is checked on a batch of
    // the first image alone, by the same fast kernel.
    let (x0, dy0) = (first_image(&x)?, first_image(&dy)?);
    let mut max_relative_error = 0f64;
    if matches!(direction, Direction::Forward | Direction::ForwardBackward) {
        let y = conv(&x, &w, b.as_ref(), &spec)?;
        let reference = conv_reference(&x0, &w, b.as_ref(), &spec)?;
        max_relative_error = compare("forward", &y.data()[..reference.numel()], reference.data())?;
    }
    if direction != Direction::Forward {
        let reference = conv_backward_reference(&x0, &w, &dy0, &spec)?;
        if direction != Direction::BackwardWeight {
            let dx = conv_backward_input(&input_shape, &w, &dy, &spec)?;
            let error =
                compare("input gradient", &dx.data()[..reference.input.numel()], reference.input.data())?;
            max_relative_error = max_relative_error.max(error);
        }
        if direction != Direction::BackwardInput {
            let dw = conv_backward_params(&x0, &w, &dy0, &spec)?.weight;
            max_relative_error =
                max_relative_error.max(compare("weight gradient", dw.data(), reference.weight.data())?);
        }
    }

    // Each call succeeded above; the results are only kept alive for the timer.
    let timings = match direction {
        Direction::Forward => time(budget, || {
            let _ = std::hint::black_box(conv(&x, &w, b.as_ref(), &spec));
        }),
        Direction::BackwardInput => time(budget, || {
            let _ = std::hint::black_box(conv_backward_input(&input_shape, &w, &dy, &spec));
        }),
        Direction::BackwardWeight => time(budget, || {
            let _ = std::hint::black_box(conv_backward_params(&x, &w, &dy, &spec));
        }),
        Direction::ForwardBackward => time(budget, || {
            let _ = std::hint::black_box(conv(&x, &w, b.as_ref(), &spec));
            let _ = std::hint::black_box(conv_backward(&x, &w, &dy, &spec));
        }),
    };
    Ok(Measurement {
        name: layer.name.clone(),
        direction: direction.name(),
        threads: rayon::current_num_threads(),
        timings,
        flops: 2.0 * direction.passes() * geometry.macs() as f64,
        max_relative_error,
    })
}
