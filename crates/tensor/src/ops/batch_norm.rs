//! Batch normalisation over the channel axis (Ioffe & Szegedy 2015), with PyTorch's
//! `F.batch_norm` semantics: `nn.BatchNorm1d` / `2d` / `3d`.
//!
//! ```text
//! x [N, C, *S]    S has 0 to 3 axes: [N, C] and [N, C, L] (1d), [N, C, H, W], [N, C, D, H, W]
//! y [N, C, *S]    same shape
//! γ, β, μ, σ² [C] one value per channel; M = N·|S| values per channel
//! ```
//!
//! Training normalises with the batch's statistics, `μ_c = Σ x / M` and the biased
//! `σ²_c = Σ (x − μ_c)² / M`:
//!
//! `x̂ = (x − μ_c)·r_c` with `r_c = 1/√(σ²_c + ε)`, and `y = γ_c·x̂ + β_c`
//!
//! (γ = 1, β = 0 when absent). It returns `μ` and `r` for the backward and the unbiased variance
//! `σ²_c·M/(M − 1)`, which is what PyTorch folds into `running_var`. Evaluation uses the running
//! statistics in place of the batch's. The gradient, with sums over the M values of a channel:
//!
//! `dβ_c = Σ dy`, `dγ_c = Σ dy·x̂`,
//! training: `dx = γ_c·r_c/M · (M·dy − Σ dy − x̂·Σ dy·x̂)`, evaluation: `dx = γ_c·r_c·dy`.
//!
//! [`batch_norm_train`], [`batch_norm_eval`] and [`batch_norm_backward`] are the production paths:
//! the per-channel sums run in parallel over channels, each channel summed by one task in f64 in a
//! fixed order (batch, then position, in eight interleaved partial sums), so the result does not
//! depend on the thread count. The
//! `_reference` functions hold the plain loops that define them.

use rayon::prelude::*;

use crate::buffer::collect_blocks;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const OP: &str = "batch_norm";
const BACKWARD_OP: &str = "batch_norm_backward";
/// Elements a parallel task writes at least, so that `[N, C]` inputs (one element per plane) are
/// not split into one task per element.
const MIN_TASK_ELEMENTS: usize = 4096;

/// What the training forward computes: the output and the per-channel statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormOutput {
    /// `y [N, C, *S]`.
    pub output: Tensor,
    /// The batch mean per channel `[C]`, saved for the backward.
    pub mean: Tensor,
    /// `1/√(σ² + ε)` per channel `[C]` with the biased batch variance, saved for the backward.
    pub inv_std: Tensor,
    /// The unbiased batch variance `σ²·M/(M − 1)` per channel `[C]`, for `running_var`.
    pub unbiased_var: Tensor,
    /// The map that normalised `x`, for [`batch_norm_relu_backward`].
    pub affine: Affine,
}

/// The gradients of batch normalisation with respect to its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormGrads {
    /// `dx [N, C, *S]`.
    pub input: Tensor,
    /// `dγ [C]`, whether or not the forward had a weight.
    pub weight: Tensor,
    /// `dβ [C]`, whether or not the forward had a bias.
    pub bias: Tensor,
}

/// The input's layout.
#[derive(Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Geometry {
    /// Values per channel, `M = N·|S|`.
    fn per_channel(&self) -> usize {
        self.batch * self.plane
    }

    /// The offsets of channel `c`'s planes, in the fixed order every sum uses.
    fn planes(&self, c: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.batch).map(move |n| {
            let start = (n * self.channels + c) * self.plane;
            start..start + self.plane
        })
    }
}

fn geometry(op: &str, x: &Tensor) -> Result<Geometry> {
    if !(2..=5).contains(&x.rank()) {
        return Err(Error::shape(
            op,
            format!(
                "expected a 2-d to 5-d input laid out as [N, C, *S] with at most 3 spatial axes, got shape {} (rank {})",
                x.shape(),
                x.rank()
            ),
        ));
    }
    let dims = x.dims();
    Ok(Geometry { batch: dims[0], channels: dims[1], plane: dims[2..].iter().product() })
}

/// Checks that a per-channel tensor (`weight`, `running_mean`...) holds one value per channel.
fn check_channels(op: &str, name: &str, t: &Tensor, x: &Tensor, channels: usize) -> Result<()> {
    if t.dims() != [channels] {
        return Err(Error::shape(
            op,
            format!(
                "{name} has shape {} but the input {} has {channels} channels; expected [{channels}]",
                t.shape(),
                x.shape()
            ),
        ));
    }
    Ok(())
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, format!("eps must be finite and non-negative, got {eps}")));
    }
    Ok(())
}

fn check_affine(
    op: &str,
    x: &Tensor,
    g: Geometry,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<()> {
    if let Some(w) = weight {
        check_channels(op, "weight", w, x, g.channels)?;
    }
    if let Some(b) = bias {
        check_channels(op, "bias", b, x, g.channels)?;
    }
    Ok(())
}

/// The training forward's checks; a batch statistic needs at least two values per channel, as
/// in PyTorch (one value would give a zero variance and an output of exactly β).
fn check_train(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Result<Geometry> {
    let g = geometry(OP, x)?;
    check_affine(OP, x, g, weight, bias)?;
    check_eps(OP, eps)?;
    if g.per_channel() < 2 {
        return Err(Error::shape(
            OP,
            format!(
                "expected more than 1 value per channel when training, got input of shape {} ({} per channel)",
                x.shape(),
                g.per_channel()
            ),
        ));
    }
    Ok(g)
}

fn check_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Geometry> {
    let g = geometry(OP, x)?;
    check_affine(OP, x, g, weight, bias)?;
    check_channels(OP, "running_mean", running_mean, x, g.channels)?;
    check_channels(OP, "running_var", running_var, x, g.channels)?;
    check_eps(OP, eps)?;
    Ok(g)
}

fn check_backward(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
) -> Result<Geometry> {
    let g = geometry(BACKWARD_OP, x)?;
    if dy.dims() != x.dims() {
        return Err(Error::shape(
            BACKWARD_OP,
            format!("grad_output has shape {} but the input and output have shape {}", dy.shape(), x.shape()),
        ));
    }
    check_affine(BACKWARD_OP, x, g, weight, None)?;
    check_channels(BACKWARD_OP, "mean", mean, x, g.channels)?;
    check_channels(BACKWARD_OP, "inv_std", inv_std, x, g.channels)?;
    Ok(g)
}

fn value_or(t: Option<&Tensor>, c: usize, default: f64) -> f64 {
    t.map_or(default, |t| t.data()[c] as f64)
}

fn inv_std(var: f64, eps: f32) -> f64 {
    1.0 / (var + eps as f64).sqrt()
}

/// Independent partial sums per channel: a single running sum waits on each addition's
/// latency; 32 lanes (four AVX2 registers a sum) add 32 values at a time. Which lane a value
/// goes to is fixed by its position, so the result does not depend on the thread count.
const LANES: usize = 32;

/// Values a lane sums in f32 before its total joins the lane's f64 sum: 16 per lane, so the
/// f32 rounding stays at a few units in the last place of a block's sum while the long sum
/// (batch × positions values) is carried in f64. f64 lanes throughout ran at half the speed
/// (half the values per register, and a conversion per value): a ResNet-20 step spent 7% in
/// these sums.
const BLOCK: usize = 16 * LANES;

/// Adds `f(a[i], b[i])[s]` into sum `s`'s lanes, value `i` into lane `i % LANES`.
fn add_lanes<const S: usize>(
    sums: &mut [[f64; LANES]; S],
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> [f32; S],
) {
    for (a, b) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut block = [[0.0f32; LANES]; S];
        let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
        for (a, b) in a_chunks.zip(b_chunks) {
            for (l, (&u, &v)) in a.iter().zip(b).enumerate() {
                let values = f(u, v);
                for (lanes, value) in block.iter_mut().zip(values) {
                    lanes[l] += value;
                }
            }
        }
        for (l, (&u, &v)) in a_rest.iter().zip(b_rest).enumerate() {
            let values = f(u, v);
            for (lanes, value) in block.iter_mut().zip(values) {
                lanes[l] += value;
            }
        }
        for (sum, lanes) in sums.iter_mut().zip(block) {
            for (total, lane) in sum.iter_mut().zip(lanes) {
                *total += lane as f64;
            }
        }
    }
}

/// The lanes' total, always added in the same order.
fn total(lanes: [f64; LANES]) -> f64 {
    lanes.iter().sum()
}

/// Per-channel `(mean, biased variance)` in f64, two passes, parallel over channels. The second
/// pass sums `d = x − m` and `d²` around the first pass's mean `m` rounded to f32 (`x − m` is
/// then exact for the values near it), and takes `m + Σd/n` and `Σd²/n − (Σd/n)²`: exact
/// whatever `m`'s rounding, and the subtraction is harmless because `Σd/n` is small.
fn channel_moments(x: &[f32], g: Geometry) -> Vec<(f64, f64)> {
    let count = g.per_channel() as f64;
    (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let mut sum = [[0.0; LANES]];
            g.planes(c).for_each(|at| add_lanes(&mut sum, &x[at.clone()], &x[at], |v, _| [v]));
            let mean = total(sum[0]) / count;
            let shift = mean as f32;
            let mut moments = [[0.0; LANES]; 2];
            g.planes(c).for_each(|at| {
                add_lanes(&mut moments, &x[at.clone()], &x[at], |v, _| {
                    let d = v - shift;
                    [d, d * d]
                })
            });
            // The first pass's f32 blocks round a sum of large values; the deviations are
            // small, so their mean corrects it to well within the spread.
            let offset = total(moments[0]) / count;
            (shift as f64 + offset, (total(moments[1]) / count - offset * offset).max(0.0))
        })
        .collect()
}

/// `y = (x − shift_c)·scale_c + offset_c` element by element, in f64, parallel over planes;
/// then `max(y, 0)` (NaN kept) with `relu`.
fn normalise(x: &Tensor, g: Geometry, per_channel: &[(f64, f64, f64)], relu: bool) -> Tensor {
    let xs = x.data();
    let y = collect_blocks(x.numel(), g.plane, MIN_TASK_ELEMENTS.div_ceil(g.plane.max(1)), |nc, at| {
        let (shift, scale, offset) = per_channel[nc % g.channels];
        xs[at].iter().map(move |&v| {
            let y = ((v as f64 - shift) * scale + offset) as f32;
            if relu && y < 0.0 { 0.0 } else { y }
        })
    });
    Tensor::from_parts(x.shape().clone(), y)
}

/// The per-channel map `x ↦ (x − shift)·scale + offset` a forward applied, in f64, kept by
/// [`batch_norm_relu_train`] so that its backward can recompute each normalised value, and so
/// the ReLU's gate, exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine(Vec<(f64, f64, f64)>);

fn channel_tensor(values: impl Iterator<Item = f64>) -> Tensor {
    let data: Vec<f32> = values.map(|v| v as f32).collect();
    Tensor::from_parts(vec![data.len()].into(), data)
}

/// Training-mode batch normalisation with the fast kernel. See the module docs.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<BatchNormOutput> {
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, in one pass over the output: `max(y, 0)`, NaN kept.
/// Its gradient is [`batch_norm_relu_backward`].
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<BatchNormOutput> {
    train(x, weight, bias, eps, true)
}

fn train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    relu: bool,
) -> Result<BatchNormOutput> {
    let g = check_train(x, weight, bias, eps)?;
    let moments = channel_moments(x.data(), g);
    let per_channel: Vec<(f64, f64, f64)> = moments
        .iter()
        .enumerate()
        .map(|(c, &(mean, var))| (mean, inv_std(var, eps) * value_or(weight, c, 1.0), value_or(bias, c, 0.0)))
        .collect();
    let count = g.per_channel() as f64;
    Ok(BatchNormOutput {
        output: normalise(x, g, &per_channel, relu),
        mean: channel_tensor(moments.iter().map(|m| m.0)),
        inv_std: channel_tensor(moments.iter().map(|m| inv_std(m.1, eps))),
        unbiased_var: channel_tensor(moments.iter().map(|m| m.1 * count / (count - 1.0))),
        affine: Affine(per_channel),
    })
}

/// Evaluation-mode batch normalisation with the running statistics, fast kernel.
pub fn batch_norm_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let g = check_eval(x, weight, bias, running_mean, running_var, eps)?;
    let per_channel: Vec<(f64, f64, f64)> = (0..g.channels)
        .map(|c| {
            let scale = inv_std(running_var.data()[c] as f64, eps) * value_or(weight, c, 1.0);
            (running_mean.data()[c] as f64, scale, value_or(bias, c, 0.0))
        })
        .collect();
    Ok(normalise(x, g, &per_channel, false))
}

/// The gradients of [`batch_norm_train`] (`training`) or [`batch_norm_eval`] (not), given `dy`,
/// the gradient with respect to the output. `mean` and `inv_std` are what normalised `x`: the
/// saved batch statistics in training, `running_mean` and `1/√(running_var + ε)` in evaluation.
pub fn batch_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
    training: bool,
) -> Result<BatchNormGrads> {
    let g = check_backward(x, dy, weight, mean, inv_std)?;
    Ok(backward(x, dy, weight, mean, inv_std, training, None, g))
}

/// The gradients of [`batch_norm_relu_train`], given `dy`, the gradient with respect to its
/// (rectified) output, and what the forward returned: `mean`, `inv_std` and `affine`. Where the
/// normalised value was not positive the ReLU passed no gradient; that value is recomputed from
/// `x` through `affine`, exactly as the forward computed it, so no mask needs to be stored.
pub fn batch_norm_relu_backward(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
    affine: &Affine,
) -> Result<BatchNormGrads> {
    let g = check_backward(x, dy, weight, mean, inv_std)?;
    if affine.0.len() != g.channels {
        return Err(Error::shape(
            BACKWARD_OP,
            format!(
                "the forward's affine map has {} channels but the input {} has {}",
                affine.0.len(),
                x.shape(),
                g.channels
            ),
        ));
    }
    Ok(backward(x, dy, weight, mean, inv_std, true, Some(&affine.0), g))
}

/// Where a fused ReLU passes the gradient, as bounds on the batch norm's input: the ReLU passes
/// it where `((x − shift)·scale + offset) as f32 > 0`, and that value is a monotone function of
/// `x` (each step, the f64 widening, the rounded subtraction, multiplication and addition, the
/// rounding to f32, is monotone), so the `x` where it passes lie on one side of a threshold,
/// found once per channel by bisection over the f32 values. The gradient passes where
/// `low ≤ x ≤ high`: two comparisons instead of the map, and a NaN `x` fails them as its NaN
/// output fails `> 0`.
fn relu_bounds(map: (f64, f64, f64)) -> (f32, f32) {
    let (shift, scale, offset) = map;
    let opens = |v: f32| ((v as f64 - shift) * scale + offset) as f32 > 0.0;
    const CLOSED: (f32, f32) = (f32::INFINITY, f32::NEG_INFINITY);
    // The f32 values in order, as integers: the sign-magnitude bits made two's complement (in
    // i64, so that differences of keys cannot overflow).
    let key = |v: f32| {
        let bits = v.to_bits() as i32;
        (bits ^ (((bits >> 31) as u32) >> 1) as i32) as i64
    };
    let value = |k: i64| {
        let k = k as i32;
        f32::from_bits((k ^ (((k >> 31) as u32) >> 1) as i32) as u32)
    };
    let (low, high) = (key(f32::NEG_INFINITY), key(f32::INFINITY));
    if scale > 0.0 {
        if !opens(f32::INFINITY) {
            return CLOSED;
        }
        // The smallest value that opens: `opens` is false below it, true from it on.
        let (mut below, mut at) = (low - 1, high);
        while at - below > 1 {
            let mid = below + (at - below) / 2;
            if opens(value(mid)) { at = mid } else { below = mid }
        }
        (value(at), f32::INFINITY)
    } else if scale < 0.0 {
        if !opens(f32::NEG_INFINITY) {
            return CLOSED;
        }
        let (mut at, mut above) = (low, high + 1);
        while above - at > 1 {
            let mid = at + (above - at) / 2;
            if opens(value(mid)) { at = mid } else { above = mid }
        }
        (f32::NEG_INFINITY, value(at))
    } else if opens(0.0) {
        // A zero scale (γ = 0): every finite x gives `offset`; an infinite one NaN.
        (-f32::MAX, f32::MAX)
    } else {
        CLOSED
    }
}

/// The backward's two passes. With `relu_gate`, the per-channel affine map of the forward: `dy`
/// counts only where it gives a positive value.
#[allow(clippy::too_many_arguments)]
fn backward(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
    training: bool,
    relu_gate: Option<&[(f64, f64, f64)]>,
    g: Geometry,
) -> BatchNormGrads {
    match relu_gate {
        None => passes(x, dy, weight, mean, inv_std, training, g, |_| |_, d| d),
        Some(affine) => {
            let bounds: Vec<(f32, f32)> = affine.iter().map(|&map| relu_bounds(map)).collect();
            passes(x, dy, weight, mean, inv_std, training, g, |c| {
                let (low, high) = bounds[c];
                move |v: f32, d: f32| if v >= low && v <= high { d } else { 0.0 }
            })
        }
    }
}

/// The two passes, with `gated(c)` giving channel `c`'s gradient reaching the normalisation
/// from `(x, dy)`: generic, so that the plain backward carries no gate at all.
#[allow(clippy::too_many_arguments)]
fn passes<G: Fn(f32, f32) -> f32>(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
    training: bool,
    g: Geometry,
    gated: impl Fn(usize) -> G + Sync,
) -> BatchNormGrads {
    let (xs, dys) = (x.data(), dy.data());
    let (means, inv_stds) = (mean.data(), inv_std.data());
    // Σ dy and Σ dy·x̂ per channel, each channel by one task in the order of `planes`.
    let sums: Vec<(f64, f64)> = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            // Σ dy·x̂ = r·Σ dy·(x − μ): the inverse deviation once per channel, not per value.
            let (mu, r) = (means[c], inv_stds[c] as f64);
            let gate = gated(c);
            let mut sums = [[0.0; LANES]; 2];
            for at in g.planes(c) {
                add_lanes(&mut sums, &xs[at.clone()], &dys[at], |v, d| {
                    let d = gate(v, d);
                    [d, d * (v - mu)]
                });
            }
            (total(sums[0]), total(sums[1]) * r)
        })
        .collect();
    let count = g.per_channel() as f64;
    let dx = collect_blocks(x.numel(), g.plane, MIN_TASK_ELEMENTS.div_ceil(g.plane.max(1)), |nc, at| {
        let c = nc % g.channels;
        let (mu, r) = (means[c] as f64, inv_stds[c] as f64);
        let scale = value_or(weight, c, 1.0) * r;
        let (sum, dot) = sums[c];
        let gate = gated(c);
        xs[at.clone()].iter().zip(&dys[at]).map(move |(&v, &d)| {
            let d = gate(v, d);
            if training {
                let x_hat = (v as f64 - mu) * r;
                (scale / count * (count * d as f64 - sum - x_hat * dot)) as f32
            } else {
                (scale * d as f64) as f32
            }
        })
    });
    BatchNormGrads {
        input: Tensor::from_parts(x.shape().clone(), dx),
        weight: channel_tensor(sums.iter().map(|s| s.1)),
        bias: channel_tensor(sums.iter().map(|s| s.0)),
    }
}

/// PyTorch's running-statistics update, in place:
/// `running = (1 − momentum)·running + momentum·batch`, with the unbiased batch variance for
/// `running_var` (the `unbiased_var` of [`BatchNormOutput`]).
pub fn update_running_stats(
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    batch_mean: &Tensor,
    batch_unbiased_var: &Tensor,
    momentum: f32,
) -> Result<()> {
    const UPDATE_OP: &str = "batch_norm running statistics";
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::invalid(UPDATE_OP, format!("momentum must be in [0, 1], got {momentum}")));
    }
    let all = [&*running_mean, &*running_var, batch_mean, batch_unbiased_var];
    let channels = running_mean.numel();
    if all.iter().any(|t| t.dims() != [channels]) {
        let shapes: Vec<String> = all.iter().map(|t| t.shape().to_string()).collect();
        return Err(Error::shape(
            UPDATE_OP,
            format!(
                "running_mean, running_var, batch mean and batch variance must all be [C], got {}",
                shapes.join(", ")
            ),
        ));
    }
    let m = momentum as f64;
    for (running, batch) in [(running_mean, batch_mean), (running_var, batch_unbiased_var)] {
        for (r, &b) in running.data_mut().iter_mut().zip(batch.data()) {
            *r = ((1.0 - m) * *r as f64 + m * b as f64) as f32;
        }
    }
    Ok(())
}

/// The training forward from plain loops in f64; slow, kept to define and test.
pub fn batch_norm_train_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<BatchNormOutput> {
    let g = check_train(x, weight, bias, eps)?;
    let xs = x.data();
    let at = |n: usize, c: usize, s: usize| (n * g.channels + c) * g.plane + s;
    let count = g.per_channel() as f64;
    let mut y = vec![0.0f32; x.numel()];
    let (mut means, mut inv_stds, mut unbiased, mut affine) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in 0..g.channels {
        let mut sum = 0.0;
        for n in 0..g.batch {
            for s in 0..g.plane {
                sum += xs[at(n, c, s)] as f64;
            }
        }
        let mean = sum / count;
        let mut squares = 0.0;
        for n in 0..g.batch {
            for s in 0..g.plane {
                squares += (xs[at(n, c, s)] as f64 - mean).powi(2);
            }
        }
        let var = squares / count;
        let r = 1.0 / (var + eps as f64).sqrt();
        for n in 0..g.batch {
            for s in 0..g.plane {
                let x_hat = (xs[at(n, c, s)] as f64 - mean) * r;
                y[at(n, c, s)] = (value_or(weight, c, 1.0) * x_hat + value_or(bias, c, 0.0)) as f32;
            }
        }
        means.push(mean);
        inv_stds.push(r);
        unbiased.push(var * count / (count - 1.0));
        affine.push((mean, r * value_or(weight, c, 1.0), value_or(bias, c, 0.0)));
    }
    Ok(BatchNormOutput {
        output: Tensor::from_parts(x.shape().clone(), y),
        mean: channel_tensor(means.into_iter()),
        inv_std: channel_tensor(inv_stds.into_iter()),
        unbiased_var: channel_tensor(unbiased.into_iter()),
        affine: Affine(affine),
    })
}

/// The evaluation forward from plain loops in f64; slow, kept to define and test.
pub fn batch_norm_eval_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let g = check_eval(x, weight, bias, running_mean, running_var, eps)?;
    let mut y = Vec::with_capacity(x.numel());
    for n in 0..g.batch {
        for c in 0..g.channels {
            for s in 0..g.plane {
                let v = x.data()[(n * g.channels + c) * g.plane + s] as f64;
                let x_hat =
                    (v - running_mean.data()[c] as f64) / (running_var.data()[c] as f64 + eps as f64).sqrt();
                y.push((value_or(weight, c, 1.0) * x_hat + value_or(bias, c, 0.0)) as f32);
            }
        }
    }
    Ok(Tensor::from_parts(x.shape().clone(), y))
}

/// The gradients from plain loops in f64; slow, kept to define and test.
pub fn batch_norm_backward_reference(
    x: &Tensor,
    dy: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    inv_std: &Tensor,
    training: bool,
) -> Result<BatchNormGrads> {
    let g = check_backward(x, dy, weight, mean, inv_std)?;
    let at = |n: usize, c: usize, s: usize| (n * g.channels + c) * g.plane + s;
    let count = g.per_channel() as f64;
    let mut dx = vec![0.0f32; x.numel()];
    let (mut dgamma, mut dbeta) = (Vec::new(), Vec::new());
    for c in 0..g.channels {
        let (mu, r, gamma) = (mean.data()[c] as f64, inv_std.data()[c] as f64, value_or(weight, c, 1.0));
        let x_hat = |n, s| (x.data()[at(n, c, s)] as f64 - mu) * r;
        let d = |n, s| dy.data()[at(n, c, s)] as f64;
        let (mut sum, mut dot) = (0.0, 0.0);
        for n in 0..g.batch {
            for s in 0..g.plane {
                sum += d(n, s);
                dot += d(n, s) * x_hat(n, s);
            }
        }
        for n in 0..g.batch {
            for s in 0..g.plane {
                let grad = if training {
                    gamma * r / count * (count * d(n, s) - sum - x_hat(n, s) * dot)
                } else {
                    gamma * r * d(n, s)
                };
                dx[at(n, c, s)] = grad as f32;
            }
        }
        dgamma.push(dot);
        dbeta.push(sum);
    }
    Ok(BatchNormGrads {
        input: Tensor::from_parts(x.shape().clone(), dx),
        weight: channel_tensor(dgamma.into_iter()),
        bias: channel_tensor(dbeta.into_iter()),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn close(a: &Tensor, b: &Tensor, tolerance: f32) {
        assert_eq!(a.dims(), b.dims());
        for (i, (&u, &v)) in a.data().iter().zip(b.data()).enumerate() {
            assert!((u - v).abs() <= tolerance * (1.0 + v.abs()), "element {i}: {u} vs {v}");
        }
    }

    fn noise(dims: &[usize], seed: u32, scale: f32, offset: f32) -> Tensor {
        Tensor::from_fn(dims, |i| {
            let h = i.iter().fold(seed, |h, &v| h.wrapping_mul(2_654_435_761).wrapping_add(v as u32 + 1));
            ((h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale + offset
        })
        .unwrap()
    }

    fn channels(values: &[f32]) -> Tensor {
        Tensor::new([values.len()], values.to_vec()).unwrap()
    }

    /// The fused ReLU's bounds against the map they stand for, at and around each bound
    /// and at the special values, for maps of either sign, zero and NaN scale.
    #[test]
    fn relu_gate_thresholds_agree_with_the_map() {
        let maps = [
            (0.3, 1.7, 0.25),
            (-2.0, 0.01, -0.5),
            (1e6, 3.0, 1e-3),
            (0.1, -2.5, 0.7),
            (0.0, -1e-3, -1.0),
            (0.5, 0.0, 0.2),
            (0.5, 0.0, -0.2),
            (0.0, f64::NAN, 1.0),
            (0.0, 1.0, -f64::INFINITY),
        ];
        let specials =
            [0.0, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e30];
        for map in maps {
            let (low, high) = relu_bounds(map);
            let passes = |v: f32| v >= low && v <= high;
            let opens = |v: f32| ((v as f64 - map.0) * map.1 + map.2) as f32 > 0.0;
            let mut probes: Vec<f32> = specials.to_vec();
            // Each finite bound and its neighbours in f32 order.
            for bound in [low, high].into_iter().filter(|b| b.is_finite()) {
                for step in -3i32..=3 {
                    probes.push(f32::from_bits((bound.to_bits() as i32 + step) as u32));
                }
            }
            probes.extend((0..2000).map(|i| (i as f32 - 1000.0) * 0.0137 + map.0 as f32));
            for v in probes {
                assert_eq!(passes(v), opens(v), "{map:?} (bounds {low:e}..={high:e}) at {v:e}");
            }
        }
    }

    /// Worked by hand: channel 0 holds 1, 3 (mean 2, biased variance 1, unbiased 2), channel 1
    /// holds 4, 6 (mean 5, the same variances); x̂ is −1, 1 in both.
    #[test]
    fn hand_computed_case() {
        let x = Tensor::new([2, 2], vec![1.0, 4.0, 3.0, 6.0]).unwrap();
        let (w, b) = (channels(&[2.0, 5.0]), channels(&[0.5, -1.0]));
        for out in [
            batch_norm_train(&x, Some(&w), Some(&b), 0.0).unwrap(),
            batch_norm_train_reference(&x, Some(&w), Some(&b), 0.0).unwrap(),
        ] {
            assert_eq!(out.mean.data(), &[2.0, 5.0]);
            assert_eq!(out.unbiased_var.data(), &[2.0, 2.0]);
            assert_eq!(out.inv_std.data(), &[1.0, 1.0]);
            close(&out.output, &Tensor::new([2, 2], vec![-1.5, -6.0, 2.5, 4.0]).unwrap(), 1e-6);
        }
        let (rm, rv) = (channels(&[1.0, 0.0]), channels(&[4.0, 1.0]));
        let y = batch_norm_eval(&x, None, None, &rm, &rv, 0.0).unwrap();
        close(&y, &Tensor::new([2, 2], vec![0.0, 4.0, 1.0, 6.0]).unwrap(), 1e-6);
    }

    #[test]
    fn running_statistics_follow_pytorch_momentum() {
        let (mut rm, mut rv) = (channels(&[0.0, 1.0]), channels(&[1.0, 1.0]));
        update_running_stats(&mut rm, &mut rv, &channels(&[2.0, 3.0]), &channels(&[5.0, 0.0]), 0.1).unwrap();
        close(&rm, &channels(&[0.2, 1.2]), 1e-7);
        close(&rv, &channels(&[1.4, 0.9]), 1e-7);
        let err = update_running_stats(&mut rm, &mut rv, &channels(&[1.0]), &channels(&[1.0, 2.0]), 0.1)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm running statistics: running_mean, running_var, batch mean and batch variance must all be [C], got [2], [2], [1], [2]"
        );
        let err = update_running_stats(&mut rm, &mut rv, &channels(&[1.0, 1.0]), &channels(&[1.0, 2.0]), 1.5)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm running statistics: invalid argument: momentum must be in [0, 1], got 1.5"
        );
    }

    #[test]
    fn wrong_rank_is_an_error() {
        for dims in [&[4][..], &[1, 2, 3, 4, 5, 6][..]] {
            let x = Tensor::zeros(dims).unwrap();
            let err = batch_norm_train(&x, None, None, 1e-5).unwrap_err();
            assert!(err.to_string().starts_with("batch_norm: expected a 2-d to 5-d input"), "{err}");
        }
        let err = batch_norm_train(&Tensor::zeros([4]).unwrap(), None, None, 1e-5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm: expected a 2-d to 5-d input laid out as [N, C, *S] with at most 3 spatial axes, got shape [4] (rank 1)"
        );
    }

    #[test]
    fn channel_mismatches_name_both_numbers() {
        let x = Tensor::zeros([2, 3, 4, 4]).unwrap();
        let (three, four) = (Tensor::ones([3]).unwrap(), Tensor::ones([4]).unwrap());
        let err = batch_norm_train(&x, Some(&four), None, 1e-5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm: weight has shape [4] but the input [2, 3, 4, 4] has 3 channels; expected [3]"
        );
        let err = batch_norm_train(&x, Some(&three), Some(&four), 1e-5).unwrap_err();
        assert!(err.to_string().starts_with("batch_norm: bias has shape [4]"), "{err}");
        let err = batch_norm_eval(&x, None, None, &four, &three, 1e-5).unwrap_err();
        assert!(err.to_string().starts_with("batch_norm: running_mean has shape [4]"), "{err}");
        let err = batch_norm_eval(&x, None, None, &three, &four, 1e-5).unwrap_err();
        assert!(err.to_string().starts_with("batch_norm: running_var has shape [4]"), "{err}");
        let err = batch_norm_backward(&x, &x, None, &four, &three, true).unwrap_err();
        assert!(err.to_string().starts_with("batch_norm_backward: mean has shape [4]"), "{err}");
        let err = batch_norm_backward(&x, &Tensor::zeros([2, 3, 4]).unwrap(), None, &three, &three, true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm_backward: grad_output has shape [2, 3, 4] but the input and output have shape [2, 3, 4, 4]"
        );
    }

    /// PyTorch: "Expected more than 1 value per channel when training".
    #[test]
    fn one_value_per_channel_cannot_train() {
        let err = batch_norm_train(&Tensor::zeros([1, 3]).unwrap(), None, None, 1e-5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm: expected more than 1 value per channel when training, got input of shape [1, 3] (1 per channel)"
        );
        assert!(batch_norm_train_reference(&Tensor::zeros([1, 3, 1, 1]).unwrap(), None, None, 1e-5).is_err());
        assert!(batch_norm_train(&Tensor::zeros([0, 3, 2]).unwrap(), None, None, 1e-5).is_err());
        // Evaluation needs no batch statistics: one sample is fine.
        let stats = Tensor::ones([3]).unwrap();
        assert!(batch_norm_eval(&Tensor::zeros([1, 3]).unwrap(), None, None, &stats, &stats, 1e-5).is_ok());
    }

    #[test]
    fn bad_eps_is_an_error() {
        let x = Tensor::zeros([2, 3]).unwrap();
        let err = batch_norm_train(&x, None, None, -1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch_norm: invalid argument: eps must be finite and non-negative, got -1"
        );
        assert!(batch_norm_train(&x, None, None, f32::NAN).is_err());
    }

    #[test]
    fn one_and_two_threads_agree_bitwise() {
        let x = noise(&[3, 5, 7, 4], 1, 2.0, 0.5);
        let dy = noise(&[3, 5, 7, 4], 2, 1.0, 0.0);
        let w = noise(&[5], 3, 1.0, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let out = batch_norm_train(&x, Some(&w), None, 1e-5).unwrap();
                let grads = batch_norm_backward(&x, &dy, Some(&w), &out.mean, &out.inv_std, true).unwrap();
                (out, grads)
            })
        };
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let ((o1, g1), (o2, g2)) = (run(1), run(2));
        for (a, b) in
            [(&o1.output, &o2.output), (&o1.mean, &o2.mean), (&g1.input, &g2.input), (&g1.weight, &g2.weight)]
        {
            assert_eq!(bits(a), bits(b));
        }
    }

    /// Central differences of `L = Σ y·r` in f64 through the reference forward, against both
    /// backward paths, in both modes.
    #[test]
    fn backward_matches_finite_differences() {
        let dims = [3, 2, 2, 3];
        let x = noise(&dims, 5, 1.5, 0.3);
        let r = noise(&dims, 6, 1.0, 0.0);
        let (w, b) = (noise(&[2], 7, 1.0, 0.5), noise(&[2], 8, 1.0, 0.0));
        let (rm, rv) = (noise(&[2], 9, 0.5, 0.0), noise(&[2], 10, 0.3, 1.0));
        let eps = 1e-5;
        for training in [true, false] {
            let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
                let y = if training {
                    batch_norm_train_reference(x, Some(w), Some(b), eps).unwrap().output
                } else {
                    batch_norm_eval_reference(x, Some(w), Some(b), &rm, &rv, eps).unwrap()
                };
                y.data().iter().zip(r.data()).map(|(&y, &r)| y as f64 * r as f64).sum()
            };
            let numeric = |which: usize| -> Tensor {
                let base = [&x, &w, &b][which];
                let h = 1e-2;
                let grads = (0..base.numel())
                    .map(|i| {
                        let mut inputs = [x.clone(), w.clone(), b.clone()];
                        inputs[which].data_mut()[i] += h;
                        let plus = loss(&inputs[0], &inputs[1], &inputs[2]);
                        inputs[which].data_mut()[i] -= 2.0 * h;
                        let minus = loss(&inputs[0], &inputs[1], &inputs[2]);
                        ((plus - minus) / (2.0 * h as f64)) as f32
                    })
                    .collect();
                Tensor::new(base.dims(), grads).unwrap()
            };
            let (mean, inv_std) = if training {
                let out = batch_norm_train(&x, Some(&w), Some(&b), eps).unwrap();
                (out.mean, out.inv_std)
            } else {
                (rm.clone(), rv.map(|v| 1.0 / (v + eps).sqrt()))
            };
            for backward in [batch_norm_backward, batch_norm_backward_reference] {
                let grads = backward(&x, &r, Some(&w), &mean, &inv_std, training).unwrap();
                close(&grads.input, &numeric(0), 2e-3);
                close(&grads.weight, &numeric(1), 2e-3);
                close(&grads.bias, &numeric(2), 2e-3);
            }
        }
    }

    /// Planes of several f32 blocks and a partial one, and a channel whose mean is far larger
    /// than its spread (the second pass sums around the f32-rounded mean): the f32 blocks of
    /// the fast sums stay within the f64 reference's tolerance.
    #[test]
    fn long_planes_and_offset_channels_match_the_reference() {
        for (scale, offset) in [(3.0, 0.5), (0.01, 1000.0), (1e-3, -20.0)] {
            let x = noise(&[3, 2, 37, 29], 7, scale, offset);
            let dy = noise(&[3, 2, 37, 29], 8, 1.0, 0.25);
            let fast = batch_norm_train(&x, None, None, 1e-9).unwrap();
            let reference = batch_norm_train_reference(&x, None, None, 1e-9).unwrap();
            close(&fast.output, &reference.output, 1e-5);
            close(&fast.mean, &reference.mean, 1e-6);
            close(&fast.inv_std, &reference.inv_std, 1e-5);
            close(&fast.unbiased_var, &reference.unbiased_var, 1e-5);
            let fast = batch_norm_backward(&x, &dy, None, &reference.mean, &reference.inv_std, true).unwrap();
            let slow =
                batch_norm_backward_reference(&x, &dy, None, &reference.mean, &reference.inv_std, true)
                    .unwrap();
            close(&fast.input, &slow.input, 1e-5);
            close(&fast.weight, &slow.weight, 1e-5);
            close(&fast.bias, &slow.bias, 1e-5);
        }
    }

    proptest! {
        #[test]
        fn fast_matches_reference(
            batch in 1usize..4,
            channels in 1usize..6,
            spatial in proptest::collection::vec(1usize..5, 0..4),
            affine in any::<bool>(),
            seed in any::<u32>(),
        ) {
            let mut dims = vec![batch + 1, channels];
            dims.extend(spatial);
            let x = noise(&dims, seed, 3.0, 1.0);
            let dy = noise(&dims, seed ^ 0x5555, 1.0, 0.0);
            let (w, b) = (noise(&[channels], seed ^ 1, 1.0, 0.5), noise(&[channels], seed ^ 2, 1.0, 0.0));
            let (w, b) = if affine { (Some(&w), Some(&b)) } else { (None, None) };
            let fast = batch_norm_train(&x, w, b, 1e-5).unwrap();
            let reference = batch_norm_train_reference(&x, w, b, 1e-5).unwrap();
            close(&fast.output, &reference.output, 1e-5);
            close(&fast.mean, &reference.mean, 1e-6);
            close(&fast.inv_std, &reference.inv_std, 1e-6);
            close(&fast.unbiased_var, &reference.unbiased_var, 1e-6);
            let (rm, rv) = (reference.mean.clone(), reference.unbiased_var.clone());
            close(
                &batch_norm_eval(&x, w, b, &rm, &rv, 1e-3).unwrap(),
                &batch_norm_eval_reference(&x, w, b, &rm, &rv, 1e-3).unwrap(),
                1e-5,
            );
            for training in [true, false] {
                let fast = batch_norm_backward(&x, &dy, w, &reference.mean, &reference.inv_std, training).unwrap();
                let slow =
                    batch_norm_backward_reference(&x, &dy, w, &reference.mean, &reference.inv_std, training).unwrap();
                close(&fast.input, &slow.input, 1e-5);
                close(&fast.weight, &slow.weight, 1e-5);
                close(&fast.bias, &slow.bias, 1e-5);
            }
        }
    }
}
