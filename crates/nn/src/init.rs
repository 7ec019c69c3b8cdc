//! Weight initialisers with `torch.nn.init`'s formulas: Xavier/Glorot, He/Kaiming, LeCun,
//! uniform, normal and constants, plus PyTorch's default for `nn.Conv*d` / `nn.Linear`.
//!
//! Shapes follow PyTorch: a linear weight is `[out, in]`, a convolution weight `[out, in, *K]`,
//! so `fan_in = in·∏K` and `fan_out = out·∏K` (`torch.nn.init._calculate_fan_in_and_fan_out`).
//! Every sampler draws from a caller-owned [`ChaCha8Rng`], whose stream is fixed by its
//! specification, so a seed reproduces the same weights on every platform and version; the
//! values are not PyTorch's (its generator is another), only their distribution is. Elements are
//! drawn in row-major order, one after another.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use stride_tensor::{Error, Result, Shape, Tensor};

/// A seeded generator for the initialisers.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The activation that follows a layer, for [`calculate_gain`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Nonlinearity {
    /// No activation; also what PyTorch uses for `conv1d`/`conv2d`/`conv3d` and their transposes.
    Linear,
    Sigmoid,
    Tanh,
    Relu,
    /// Leaky ReLU with this negative slope (PyTorch's default is 0.01).
    LeakyRelu(f64),
    Selu,
}

/// Which fan [`kaiming_uniform`] and [`kaiming_normal`] keep the variance of: `FanIn` preserves
/// it in the forward pass, `FanOut` in the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// `torch.nn.init.calculate_gain`: the factor that keeps activations' variance through the
/// nonlinearity. Errors on a non-finite leaky slope.
pub fn calculate_gain(nonlinearity: Nonlinearity) -> Result<f64> {
    Ok(match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f64.sqrt(),
        Nonlinearity::LeakyRelu(slope) => {
            if !slope.is_finite() {
                return Err(Error::invalid(
                    "calculate_gain",
                    format!("leaky_relu slope must be finite, got {slope}"),
                ));
            }
            (2.0 / (1.0 + slope * slope)).sqrt()
        }
        // PyTorch's value, chosen to give self-normalising networks; see its docs.
        Nonlinearity::Selu => 0.75,
    })
}

/// `(fan_in, fan_out)` of a weight `[out, in, *K]`: `(in·∏K, out·∏K)`. Errors below rank 2,
/// where PyTorch says fans "can not be computed for tensor with fewer than 2 dimensions".
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    let [out, input, kernel @ ..] = shape else {
        return Err(Error::shape(
            "init",
            format!(
                "fan in and fan out need a weight of at least 2 dimensions laid out as [out, in, *K], got shape {:?} (rank {})",
                shape,
                shape.len()
            ),
        ));
    };
    let overflow = || Error::shape("init", format!("the fans of shape {shape:?} overflow usize"));
    let receptive = kernel.iter().try_fold(1usize, |acc, &k| acc.checked_mul(k)).ok_or_else(overflow)?;
    let fan_in = input.checked_mul(receptive).ok_or_else(overflow)?;
    let fan_out = out.checked_mul(receptive).ok_or_else(overflow)?;
    Ok((fan_in, fan_out))
}

thread_local! {
    static SHAPE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (typically building a network) with every sampler of this module returning zeros
/// without drawing: a network built this way has its shapes and its parameter count but costs
/// no sampling time and, its zero pages never being written, next to no memory. For summaries
/// of networks such as VGG-16 (138 million parameters). Restores the previous state on return.
pub fn shape_only<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SHAPE_ONLY.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SHAPE_ONLY.with(|s| s.replace(true)));
    f()
}

/// Tensors larger than this are sampled in parallel chunks (VGG's first fully connected layer
/// holds 102.8 million weights: seconds on one core). Smaller ones keep the one sequential stream,
/// so every small network's initial weights are what they always were.
const PARALLEL_SAMPLES: usize = 1 << 20;

/// Values per chunk of a parallel sample: a fixed size, so the values do not depend on the
/// number of threads.
const SAMPLE_CHUNK: usize = 1 << 16;

/// Fills `numel` values with `fill(chunk, rng)`: sequentially from `rng` for small tensors; for
/// large ones, chunk `i` from its own ChaCha8 stream `i` under one key drawn from `rng`.
fn sample(numel: usize, rng: &mut ChaCha8Rng, fill: impl Fn(&mut [f32], &mut ChaCha8Rng) + Sync) -> Vec<f32> {
    let mut data = vec![0.0f32; numel];
    if SHAPE_ONLY.with(std::cell::Cell::get) {
        return data;
    }
    if numel <= PARALLEL_SAMPLES {
        fill(&mut data, rng);
        return data;
    }
    let key: u64 = rng.random();
    data.par_chunks_mut(SAMPLE_CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut stream = ChaCha8Rng::seed_from_u64(key);
        stream.set_stream(i as u64);
        fill(chunk, &mut stream);
    });
    data
}

/// Samples uniformly in `[low, high)` in f64, then rounds to f32.
fn sample_uniform(shape: Shape, low: f64, high: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let numel = shape.checked_numel()?;
    let data = sample(numel, rng, |out, rng| {
        for v in out {
            *v = (low + (high - low) * rng.random::<f64>()) as f32;
        }
    });
    Tensor::new(shape, data)
}

/// Samples from `N(mean, std²)` with the Box–Muller transform, two values per pair of uniforms
/// (`rand` 0.9 without `rand_distr` has no normal distribution, and this keeps the stream ours).
fn sample_normal(shape: Shape, mean: f64, std: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let numel = shape.checked_numel()?;
    let data = sample(numel, rng, |out, rng| {
        for pair in out.chunks_mut(2) {
            // 1 − u lies in (0, 1], so the logarithm is finite.
            let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
            let angle = std::f64::consts::TAU * rng.random::<f64>();
            pair[0] = (mean + std * radius * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (mean + std * radius * angle.sin()) as f32;
            }
        }
    });
    Tensor::new(shape, data)
}

fn check_finite(op: &str, name: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(op, format!("{name} must be finite, got {value}")));
    }
    Ok(())
}

fn check_std(op: &str, std: f64) -> Result<()> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(Error::invalid(op, format!("std must be finite and non-negative, got {std}")));
    }
    Ok(())
}

/// `U(low, high)`, as `torch.nn.init.uniform_(t, a=low, b=high)`. Errors unless `low ≤ high`.
pub fn uniform(shape: impl Into<Shape>, low: f64, high: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    check_finite("uniform", "low", low)?;
    check_finite("uniform", "high", high)?;
    if low > high {
        return Err(Error::invalid("uniform", format!("low must not exceed high, got U({low}, {high})")));
    }
    sample_uniform(shape.into(), low, high, rng)
}

/// `N(mean, std²)`, as `torch.nn.init.normal_`.
pub fn normal(shape: impl Into<Shape>, mean: f64, std: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    check_finite("normal", "mean", mean)?;
    check_std("normal", std)?;
    sample_normal(shape.into(), mean, std, rng)
}

pub fn zeros(shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::zeros(shape)
}

pub fn ones(shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::ones(shape)
}

pub fn constant(shape: impl Into<Shape>, value: f32) -> Result<Tensor> {
    Tensor::full(shape, value)
}

/// `std = gain·√(2/(fan_in + fan_out))` (Glorot & Bengio 2010); zero for an empty weight.
fn xavier_std(shape: &Shape, gain: f64, op: &str) -> Result<f64> {
    check_std(op, gain)
        .map_err(|_| Error::invalid(op, format!("gain must be finite and non-negative, got {gain}")))?;
    let (fan_in, fan_out) = fans(shape.dims()).map_err(|e| e.within(op))?;
    let fans = (fan_in + fan_out) as f64;
    Ok(if fans == 0.0 { 0.0 } else { gain * (2.0 / fans).sqrt() })
}

/// Xavier/Glorot uniform: `U(−b, b)` with `b = gain·√(6/(fan_in + fan_out))`.
pub fn xavier_uniform(shape: impl Into<Shape>, gain: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let shape = shape.into();
    // A uniform on [−b, b] has standard deviation b/√3.
    let bound = 3f64.sqrt() * xavier_std(&shape, gain, "xavier_uniform")?;
    sample_uniform(shape, -bound, bound, rng)
}

/// Xavier/Glorot normal: `N(0, std²)` with `std = gain·√(2/(fan_in + fan_out))`.
pub fn xavier_normal(shape: impl Into<Shape>, gain: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let shape = shape.into();
    let std = xavier_std(&shape, gain, "xavier_normal")?;
    sample_normal(shape, 0.0, std, rng)
}

/// `std = gain/√fan` (He et al. 2015); zero for an empty weight.
fn kaiming_std(shape: &Shape, mode: FanMode, nonlinearity: Nonlinearity, op: &str) -> Result<f64> {
    let gain = calculate_gain(nonlinearity).map_err(|e| e.within(op))?;
    let (fan_in, fan_out) = fans(shape.dims()).map_err(|e| e.within(op))?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    Ok(if fan == 0 { 0.0 } else { gain / (fan as f64).sqrt() })
}

/// He/Kaiming uniform: `U(−b, b)` with `b = gain·√(3/fan)`. PyTorch's
/// `kaiming_uniform_(t, a, mode, 'leaky_relu')` is `Nonlinearity::LeakyRelu(a)`.
pub fn kaiming_uniform(
    shape: impl Into<Shape>,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let shape = shape.into();
    let bound = 3f64.sqrt() * kaiming_std(&shape, mode, nonlinearity, "kaiming_uniform")?;
    sample_uniform(shape, -bound, bound, rng)
}

/// He/Kaiming normal: `N(0, std²)` with `std = gain/√fan`; ResNet's weights are
/// `kaiming_normal(shape, FanMode::FanOut, Nonlinearity::Relu, rng)`.
pub fn kaiming_normal(
    shape: impl Into<Shape>,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let shape = shape.into();
    let std = kaiming_std(&shape, mode, nonlinearity, "kaiming_normal")?;
    sample_normal(shape, 0.0, std, rng)
}

/// LeCun normal: `N(0, 1/fan_in)` (LeCun et al. 1998), a plain normal where JAX truncates it;
/// it is `kaiming_normal` with the linear gain.
pub fn lecun_normal(shape: impl Into<Shape>, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let shape = shape.into();
    let std = kaiming_std(&shape, FanMode::FanIn, Nonlinearity::Linear, "lecun_normal")?;
    sample_normal(shape, 0.0, std, rng)
}

/// LeCun uniform: `U(−b, b)` with `b = √(3/fan_in)`, the same variance `1/fan_in`.
pub fn lecun_uniform(shape: impl Into<Shape>, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let shape = shape.into();
    let bound = 3f64.sqrt() * kaiming_std(&shape, FanMode::FanIn, Nonlinearity::Linear, "lecun_uniform")?;
    sample_uniform(shape, -bound, bound, rng)
}

/// PyTorch's default initialisation of `nn.Conv*d` and `nn.Linear` (`reset_parameters`), which
/// torchvision's layers keep unless a model overrides them: the weight `[out, in, *K]` from
/// `kaiming_uniform_(w, a=√5)`, i.e. `U(−1/√fan_in, 1/√fan_in)`, then the bias `[out]` from
/// `U(−1/√fan_in, 1/√fan_in)` (zero bound when `fan_in` is 0). Returns `(weight, bias)`, drawn
/// in that order.
pub fn pytorch_default_conv_or_linear(
    shape: impl Into<Shape>,
    rng: &mut ChaCha8Rng,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "pytorch_default_conv_or_linear";
    let shape = shape.into();
    let (fan_in, _) = fans(shape.dims()).map_err(|e| e.within(OP))?;
    let weight = kaiming_uniform(shape.clone(), FanMode::FanIn, Nonlinearity::LeakyRelu(5f64.sqrt()), rng)?;
    let bound = if fan_in == 0 { 0.0 } else { 1.0 / (fan_in as f64).sqrt() };
    let bias = sample_uniform(Shape::from(vec![shape.dims()[0]]), -bound, bound, rng)?;
    Ok((weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(mean, standard deviation, min, max)` accumulated in f64.
    fn moments(t: &Tensor) -> (f64, f64, f64, f64) {
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t.data().iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let min = t.data().iter().fold(f64::INFINITY, |m, &v| m.min(v as f64));
        let max = t.data().iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        (mean, var.sqrt(), min, max)
    }

    /// A sample's moments against the distribution's: the mean within 4 standard errors, the
    /// standard deviation within 1.5 %.
    fn assert_moments(t: &Tensor, mean: f64, std: f64) {
        let (m, s, _, _) = moments(t);
        let n = t.numel() as f64;
        assert!((m - mean).abs() <= 4.0 * std / n.sqrt(), "mean {m}, expected {mean}");
        assert!((s - std).abs() <= 0.015 * std, "std {s}, expected {std}");
    }

    /// The fans `torch.nn.init._calculate_fan_in_and_fan_out` gives for the same shapes.
    #[test]
    fn fans_match_pytorch() {
        assert_eq!(fans(&[10, 20]).unwrap(), (20, 10)); // nn.Linear(20, 10)
        assert_eq!(fans(&[64, 3, 7, 7]).unwrap(), (147, 3136)); // ResNet conv1
        assert_eq!(fans(&[96, 3, 11, 11]).unwrap(), (363, 11616)); // AlexNet conv1
        assert_eq!(fans(&[4, 2, 3]).unwrap(), (6, 12)); // Conv1d(2, 4, 3)
        assert_eq!(fans(&[2, 3, 2, 3, 4]).unwrap(), (72, 48)); // Conv3d(3, 2, (2, 3, 4))
        assert_eq!(fans(&[8, 0, 3, 3]).unwrap(), (0, 72));
        let err = fans(&[5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "init: fan in and fan out need a weight of at least 2 dimensions laid out as [out, in, *K], got shape [5] (rank 1)"
        );
        assert!(fans(&[]).is_err());
        assert!(fans(&[usize::MAX, 2, 2]).is_err());
    }

    /// `torch.nn.init.calculate_gain`'s values.
    #[test]
    fn gains_match_pytorch() {
        let cases = [
            (Nonlinearity::Linear, 1.0),
            (Nonlinearity::Sigmoid, 1.0),
            (Nonlinearity::Tanh, 1.6666666666666667),
            (Nonlinearity::Relu, std::f64::consts::SQRT_2), // 1.4142135623730951
            (Nonlinearity::LeakyRelu(0.01), 1.4141428569978354),
            (Nonlinearity::LeakyRelu(0.2), 1.3867504905630728),
            (Nonlinearity::LeakyRelu(5f64.sqrt()), 0.5773502691896257),
            (Nonlinearity::Selu, 0.75),
        ];
        for (nonlinearity, expected) in cases {
            let gain = calculate_gain(nonlinearity).unwrap();
            assert!((gain - expected).abs() < 1e-15, "{nonlinearity:?}: {gain} vs {expected}");
        }
        let err = calculate_gain(Nonlinearity::LeakyRelu(f64::NAN)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calculate_gain: invalid argument: leaky_relu slope must be finite, got NaN"
        );
    }

    /// A tensor above the parallel threshold: the same values on 1 and 2 threads, the right
    /// distribution, and a small tensor still drawn from the one sequential stream.
    #[test]
    fn large_samples_are_parallel_and_thread_count_independent() {
        let draw = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| normal([PARALLEL_SAMPLES + 3], 0.0, 2.0, &mut rng(5)).unwrap())
        };
        let one = draw(1);
        assert_eq!(one, draw(2));
        assert_moments(&one, 0.0, 2.0);
        let mut a = rng(5);
        let small = normal([7], 0.0, 1.0, &mut a).unwrap();
        let mut b = rng(5);
        let u: Vec<f64> = (0..8).map(|_| b.random::<f64>()).collect();
        let first = (-2.0 * (1.0 - u[0]).ln()).sqrt() * (std::f64::consts::TAU * u[1]).cos();
        assert_eq!(small.data()[0], first as f32);
    }

    #[test]
    fn shape_only_draws_nothing_and_ends_with_its_scope() {
        let mut a = rng(3);
        let zeros = shape_only(|| normal([4, 5], 1.0, 2.0, &mut a).unwrap());
        assert_eq!(zeros.dims(), &[4, 5]);
        assert!(zeros.data().iter().all(|&v| v == 0.0));
        // Nothing was drawn: the generator is where a fresh one is.
        assert_eq!(a.random::<u64>(), rng(3).random::<u64>());
        assert!(normal([3], 1.0, 2.0, &mut a).unwrap().data().iter().any(|&v| v != 0.0));
    }

    #[test]
    fn uniform_and_normal_statistics() {
        let mut rng = rng(1);
        let t = uniform([200_000], -0.5, 1.5, &mut rng).unwrap();
        assert_moments(&t, 0.5, 2.0 / 12f64.sqrt());
        let (_, _, min, max) = moments(&t);
        assert!(min >= -0.5 && max <= 1.5 && min < -0.49 && max > 1.49, "[{min}, {max}]");
        let t = normal([200_001], 3.0, 0.5, &mut rng).unwrap();
        assert_eq!(t.numel(), 200_001);
        assert_moments(&t, 3.0, 0.5);
        // About 0.27 % of a normal sample lies beyond 3σ; Box–Muller reaches the tails.
        let beyond = t.data().iter().filter(|&&v| (v as f64 - 3.0).abs() > 1.5).count();
        assert!((300..800).contains(&beyond), "{beyond} beyond 3σ");
    }

    #[test]
    fn constants() {
        assert!(zeros([2, 3]).unwrap().data().iter().all(|&v| v == 0.0));
        assert!(ones([4]).unwrap().data().iter().all(|&v| v == 1.0));
        assert_eq!(constant([2, 2], 0.25).unwrap().data(), &[0.25; 4]);
    }

    #[test]
    fn xavier_statistics() {
        let mut rng = rng(2);
        // fan_in 64·9 = 576, fan_out 128·9 = 1152: std = gain·√(2/1728).
        let shape = [128, 64, 3, 3];
        let std = (2.0f64 / 1728.0).sqrt();
        let t = xavier_uniform(shape, 1.0, &mut rng).unwrap();
        assert_eq!(t.dims(), &shape);
        assert_moments(&t, 0.0, std);
        let (_, _, min, max) = moments(&t);
        let bound = 3f64.sqrt() * std;
        assert!(min >= -bound && max <= bound && max > 0.99 * bound, "[{min}, {max}] vs {bound}");
        let gain = calculate_gain(Nonlinearity::Tanh).unwrap();
        assert_moments(&xavier_normal(shape, gain, &mut rng).unwrap(), 0.0, gain * std);
    }

    #[test]
    fn kaiming_statistics() {
        let mut rng = rng(3);
        let shape = [256, 64, 3, 3]; // fan_in 576, fan_out 2304
        let relu = Nonlinearity::Relu;
        let t = kaiming_normal(shape, FanMode::FanIn, relu, &mut rng).unwrap();
        assert_moments(&t, 0.0, 2f64.sqrt() / 24.0);
        let t = kaiming_normal(shape, FanMode::FanOut, relu, &mut rng).unwrap();
        assert_moments(&t, 0.0, 2f64.sqrt() / 48.0);
        let leaky = Nonlinearity::LeakyRelu(0.2);
        let t = kaiming_uniform(shape, FanMode::FanIn, leaky, &mut rng).unwrap();
        let bound = calculate_gain(leaky).unwrap() * (3.0f64 / 576.0).sqrt();
        assert_moments(&t, 0.0, bound / 3f64.sqrt());
        let (_, _, min, max) = moments(&t);
        assert!(min >= -bound && max <= bound && min < -0.99 * bound, "[{min}, {max}] vs {bound}");
    }

    #[test]
    fn lecun_statistics() {
        let mut rng = rng(4);
        let shape = [500, 400]; // fan_in 400
        assert_moments(&lecun_normal(shape, &mut rng).unwrap(), 0.0, 0.05);
        let t = lecun_uniform(shape, &mut rng).unwrap();
        assert_moments(&t, 0.0, 0.05);
        let (_, _, min, max) = moments(&t);
        assert!(min >= -0.05 * 3f64.sqrt() && max <= 0.05 * 3f64.sqrt(), "[{min}, {max}]");
    }

    /// `nn.Conv2d(64, 128, 3)` and `nn.Linear(4096, 1000)`: both tensors within `1/√fan_in`, and
    /// the weight's spread is that of `U(−1/√fan_in, 1/√fan_in)`.
    #[test]
    fn pytorch_default_bounds() {
        let mut rng = rng(5);
        for (shape, fan_in) in [(&[128, 64, 3, 3][..], 576.0f64), (&[1000, 4096][..], 4096.0)] {
            let (w, b) = pytorch_default_conv_or_linear(shape, &mut rng).unwrap();
            let bound = 1.0 / fan_in.sqrt();
            assert_eq!(w.dims(), shape);
            assert_eq!(b.dims(), &[shape[0]]);
            assert_moments(&w, 0.0, bound / 3f64.sqrt());
            for t in [&w, &b] {
                let (_, _, min, max) = moments(t);
                assert!(min >= -bound && max <= bound && max > 0.9 * bound, "[{min}, {max}] vs {bound}");
            }
        }
        assert!(pytorch_default_conv_or_linear([7], &mut rng).is_err());
    }

    #[test]
    fn same_seed_same_tensor_different_seed_different() {
        let draw = |seed: u64| {
            let mut rng = rng(seed);
            let w = kaiming_normal([16, 8, 3, 3], FanMode::FanOut, Nonlinearity::Relu, &mut rng).unwrap();
            let (v, b) = pytorch_default_conv_or_linear([10, 20], &mut rng).unwrap();
            (w, v, b)
        };
        assert_eq!(draw(42), draw(42));
        let (a, b) = (draw(42), draw(43));
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert_ne!(a.2, b.2);
        // One generator continues its stream: a second draw differs from the first.
        let mut rng = rng(42);
        let first = uniform([100], 0.0, 1.0, &mut rng).unwrap();
        assert_ne!(first, uniform([100], 0.0, 1.0, &mut rng).unwrap());
    }

    #[test]
    fn invalid_arguments_are_errors() {
        let mut rng = rng(6);
        let err = uniform([3], 1.0, 0.0, &mut rng).unwrap_err();
        assert_eq!(err.to_string(), "uniform: invalid argument: low must not exceed high, got U(1, 0)");
        assert!(uniform([3], f64::NEG_INFINITY, 0.0, &mut rng).is_err());
        let err = normal([3], 0.0, -1.0, &mut rng).unwrap_err();
        assert_eq!(err.to_string(), "normal: invalid argument: std must be finite and non-negative, got -1");
        assert!(normal([3], f64::NAN, 1.0, &mut rng).is_err());
        let err = xavier_uniform([3], 1.0, &mut rng).unwrap_err();
        assert!(err.to_string().starts_with("xavier_uniform (init): fan in and fan out need"), "{err}");
        let err = xavier_normal([3, 3], -1.0, &mut rng).unwrap_err();
        assert_eq!(
            err.to_string(),
            "xavier_normal: invalid argument: gain must be finite and non-negative, got -1"
        );
        let err = kaiming_normal([3], FanMode::FanIn, Nonlinearity::Relu, &mut rng).unwrap_err();
        assert!(err.to_string().starts_with("kaiming_normal (init):"), "{err}");
        let err = kaiming_uniform([3, 3], FanMode::FanIn, Nonlinearity::LeakyRelu(f64::INFINITY), &mut rng);
        assert!(err.unwrap_err().to_string().starts_with("kaiming_uniform (calculate_gain):"));
        assert!(lecun_normal([3], &mut rng).is_err());
        assert!(lecun_uniform(Vec::<usize>::new(), &mut rng).is_err());
    }

    #[test]
    fn empty_weights_draw_nothing() {
        let mut rng = rng(7);
        let t = kaiming_uniform([0, 3, 3, 3], FanMode::FanOut, Nonlinearity::Relu, &mut rng).unwrap();
        assert_eq!(t.dims(), &[0, 3, 3, 3]);
        assert_eq!(xavier_normal([0, 0], 1.0, &mut rng).unwrap().numel(), 0);
        let (w, b) = pytorch_default_conv_or_linear([4, 0], &mut rng).unwrap();
        assert_eq!((w.numel(), b.data()), (0, &[0.0; 4][..]));
    }
}
