//! Reductions: sum, mean, variance, max, min, argmax and argmin along one axis or over all
//! elements; softmax and log-softmax along an axis; `sum_to_shape`, the adjoint of broadcasting.
//!
//! Reducing axis `a` of `x` views it as `[outer, len, inner]` (`outer` the product of the
//! dimensions before `a`, `inner` of those after) and yields `[outer, inner]`, shaped as `x`
//! without axis `a`, or with it kept at size 1 when `keepdim` (as PyTorch). Axes are `isize`,
//! negative ones counting from the end.
//!
//! Sums accumulate in f64. Each output of an axis reduction is folded sequentially along the axis;
//! reductions over all elements sum fixed blocks of `BLOCK` elements and add the block sums in
//! order. How the work is split among threads never changes a result, bit for bit.

use rayon::prelude::*;

use super::elementwise::{broadcast_mismatch, broadcast_strides, fill_chunks};
use super::layout::{coalesce, for_each_run};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Elements per block of the reductions over all elements. Changing it changes how the rounding
/// errors of `sum_all` fall, so it is a constant, not derived from the machine.
const BLOCK: usize = 32 * 1024;

/// Largest axis length whose every index is an exact f32 (2^24).
const MAX_EXACT_INDEX: usize = 1 << 24;

/// A tensor seen as `[outer, len, inner]` around the reduced axis.
#[derive(Clone, Copy)]
struct AxisView {
    axis: usize,
    outer: usize,
    len: usize,
    inner: usize,
}

impl AxisView {
    fn new(op: &str, shape: &Shape, axis: isize) -> Result<Self> {
        let a = shape.axis(op, axis)?;
        let dims = shape.dims();
        let view = AxisView {
            axis: a,
            // Saturating: an empty tensor such as [0, usize::MAX, 2] has products that overflow.
            // `outer · inner` then is 0 or fails the check below, so no saturated value is used.
            outer: dims[..a].iter().fold(1usize, |acc, &d| acc.saturating_mul(d)),
            len: dims[a],
            inner: dims[a + 1..].iter().fold(1usize, |acc, &d| acc.saturating_mul(d)),
        };
        view.reduced_shape(shape, true).checked_numel().map_err(|_| {
            Error::invalid(
                op,
                format!("reducing axis {a} of shape {shape} leaves more elements than fit in memory"),
            )
        })?;
        Ok(view)
    }

    fn reduced_shape(&self, shape: &Shape, keepdim: bool) -> Shape {
        let mut dims = shape.dims().to_vec();
        if keepdim {
            dims[self.axis] = 1;
        } else {
            dims.remove(self.axis);
        }
        Shape::new(dims)
    }

    /// Min, max and arg-reductions have no value for an empty axis.
    fn require_elements(&self, op: &str, shape: &Shape) -> Result<()> {
        if self.len == 0 {
            return Err(Error::shape(
                op,
                format!("cannot reduce axis {} of size 0 (shape {shape})", self.axis),
            ));
        }
        Ok(())
    }
}

/// `out[o, i] = finish(fold(init, step) over l = 0..len of x[o, l, i])`, `step` receiving `l`.
/// Every output is folded in the order of `l` whatever the task split, so results do not depend on
/// the thread count.
fn fold_axis<A, O>(
    x: &[f32],
    v: AxisView,
    init: A,
    step: impl Fn(A, f32, usize) -> A + Sync,
    finish: impl Fn(A) -> O + Sync,
) -> Vec<O>
where
    A: Copy + Send + Sync,
    O: Copy + Default + Send,
{
    let mut out = vec![O::default(); v.outer * v.inner];
    // About BLOCK inputs per task, but at least a cache line of neighbouring outputs.
    let per_task = (BLOCK / v.len.max(1)).max(16);
    fill_chunks(&mut out, per_task, |start, block| {
        if v.inner == 1 {
            for (o, dst) in block.iter_mut().enumerate() {
                let row = &x[(start + o) * v.len..][..v.len];
                *dst = finish(row.iter().enumerate().fold(init, |acc, (l, &value)| step(acc, value, l)));
            }
            return;
        }
        // Accumulators for a run of outputs o, i0..i1, updated one input row at a time so the
        // reads stay contiguous.
        let mut acc = Vec::with_capacity(block.len().min(v.inner));
        let end = start + block.len();
        let mut position = start;
        while position < end {
            let (o, i0) = (position / v.inner, position % v.inner);
            let width = (v.inner - i0).min(end - position);
            acc.clear();
            acc.resize(width, init);
            for l in 0..v.len {
                let row = &x[(o * v.len + l) * v.inner + i0..][..width];
                for (a, &value) in acc.iter_mut().zip(row) {
                    *a = step(*a, value, l);
                }
            }
            for (dst, &a) in block[position - start..][..width].iter_mut().zip(&acc) {
                *dst = finish(a);
            }
            position += width;
        }
    });
    out
}

/// The larger value, NaN if either is NaN (as `torch.max`).
fn max_nan(acc: f32, v: f32) -> f32 {
    if v > acc || v.is_nan() { v } else { acc }
}

/// The smaller value, NaN if either is NaN.
fn min_nan(acc: f32, v: f32) -> f32 {
    if v < acc || v.is_nan() { v } else { acc }
}

/// Sum along an axis (0 for an empty axis).
pub fn sum(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let v = AxisView::new("sum", x.shape(), axis)?;
    let data = fold_axis(x.data(), v, 0.0f64, |acc, value, _| acc + value as f64, |acc| acc as f32);
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Mean along an axis (NaN for an empty axis, as PyTorch).
pub fn mean(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let v = AxisView::new("mean", x.shape(), axis)?;
    let len = v.len as f64;
    let data = fold_axis(x.data(), v, 0.0f64, |acc, value, _| acc + value as f64, |acc| (acc / len) as f32);
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Variance along an axis: the mean squared deviation divided by `len − 1` when `unbiased`
/// (Bessel's correction, PyTorch's default) or by `len`; NaN when that divisor is not positive.
/// Welford's update in f64, so a large mean does not cancel a small variance.
pub fn var(x: &Tensor, axis: isize, unbiased: bool, keepdim: bool) -> Result<Tensor> {
    let v = AxisView::new("var", x.shape(), axis)?;
    let divisor = v.len as f64 - if unbiased { 1.0 } else { 0.0 };
    let data = fold_axis(
        x.data(),
        v,
        (0.0f64, 0.0f64),
        |(mean, m2), value, l| {
            let value = value as f64;
            let delta = value - mean;
            let mean = mean + delta / (l + 1) as f64;
            (mean, m2 + delta * (value - mean))
        },
        |(_, m2)| if divisor > 0.0 { (m2 / divisor) as f32 } else { f32::NAN },
    );
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Maximum along an axis; NaN if the slice holds one. Errors on an empty axis.
pub fn max(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let v = AxisView::new("max", x.shape(), axis)?;
    v.require_elements("max", x.shape())?;
    let data = fold_axis(x.data(), v, f32::NEG_INFINITY, |acc, value, _| max_nan(acc, value), |acc| acc);
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Minimum along an axis; NaN if the slice holds one. Errors on an empty axis.
pub fn min(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let v = AxisView::new("min", x.shape(), axis)?;
    v.require_elements("min", x.shape())?;
    let data = fold_axis(x.data(), v, f32::INFINITY, |acc, value, _| min_nan(acc, value), |acc| acc);
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Index of the first extreme along an axis, as f32 (exact: the axis is limited to 2^24).
fn arg_extreme(
    op: &str,
    x: &Tensor,
    axis: isize,
    keepdim: bool,
    better: fn(f32, f32) -> bool,
) -> Result<Tensor> {
    let v = AxisView::new(op, x.shape(), axis)?;
    v.require_elements(op, x.shape())?;
    if v.len > MAX_EXACT_INDEX {
        return Err(Error::invalid(
            op,
            format!(
                "axis {} of shape {} is longer than 2^24, so its indices are not exact in f32",
                v.axis,
                x.shape()
            ),
        ));
    }
    // The first element is taken unconditionally, so the placeholder initial value never competes.
    let data = fold_axis(
        x.data(),
        v,
        (f32::NAN, 0usize),
        |(best, at), value, l| if l == 0 || better(value, best) { (value, l) } else { (best, at) },
        |(_, at)| at as f32,
    );
    Ok(Tensor::from_parts(v.reduced_shape(x.shape(), keepdim), data))
}

/// Index of the first maximum along an axis (a NaN counts as the maximum, as `torch.argmax`).
/// Indices are returned as f32, the only element type; errors on an empty axis or one longer
/// than 2^24.
pub fn argmax(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    arg_extreme("argmax", x, axis, keepdim, |value, best| value > best || (value.is_nan() && !best.is_nan()))
}

/// Index of the first minimum along an axis (a NaN counts as the minimum), as [`argmax`].
pub fn argmin(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    arg_extreme("argmin", x, axis, keepdim, |value, best| value < best || (value.is_nan() && !best.is_nan()))
}

/// `f` of every fixed block of `BLOCK` elements, in order.
fn block_partials<A: Send>(data: &[f32], f: impl Fn(&[f32]) -> A + Sync + Send) -> Vec<A> {
    if data.len() <= BLOCK {
        data.chunks(BLOCK).map(f).collect()
    } else {
        data.par_chunks(BLOCK).map(f).collect()
    }
}

/// Sum of a block in f64, in eight interleaved lanes (which lets the compiler vectorise it)
/// combined in a fixed order.
fn block_sum(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut groups = values.chunks_exact(8);
    for group in &mut groups {
        for (lane, &v) in lanes.iter_mut().zip(group) {
            *lane += v as f64;
        }
    }
    let pairs = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    let total = (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]);
    groups.remainder().iter().fold(total, |acc, &v| acc + v as f64)
}

fn sum_all_f64(x: &Tensor) -> f64 {
    block_partials(x.data(), block_sum).into_iter().sum()
}

/// Sum of all elements (0 for an empty tensor).
pub fn sum_all(x: &Tensor) -> f32 {
    sum_all_f64(x) as f32
}

/// Mean of all elements (NaN for an empty tensor, as PyTorch).
pub fn mean_all(x: &Tensor) -> f32 {
    (sum_all_f64(x) / x.numel() as f64) as f32
}

fn extreme_all(op: &str, x: &Tensor, init: f32, pick: fn(f32, f32) -> f32) -> Result<f32> {
    if x.numel() == 0 {
        return Err(Error::shape(op, format!("needs at least one element, got shape {}", x.shape())));
    }
    let partials = block_partials(x.data(), |block| block.iter().copied().fold(init, pick));
    Ok(partials.into_iter().fold(init, pick))
}

/// Largest element; NaN if there is one. Errors on an empty tensor.
pub fn max_all(x: &Tensor) -> Result<f32> {
    extreme_all("max_all", x, f32::NEG_INFINITY, max_nan)
}

/// Smallest element; NaN if there is one. Errors on an empty tensor.
pub fn min_all(x: &Tensor) -> Result<f32> {
    extreme_all("min_all", x, f32::INFINITY, min_nan)
}

/// The result at one position, where `e = exp(x − max)` is stored on entry: `e / Σe` for
/// softmax, `x − max − ln Σe` for log-softmax; `norm` is `Σe`, or `ln Σe` when `log`.
fn normalise(x: f32, e: &mut f32, max: f32, norm: f64, log: bool) {
    *e = if log { ((x - max) as f64 - norm) as f32 } else { (*e as f64 / norm) as f32 };
}

fn norm(total: f64, log: bool) -> f64 {
    if log { total.ln() } else { total }
}

/// Softmax or log-softmax of consecutive `[len, inner]` slabs along `len`, shifted by the maximum
/// so that no exponential overflows; the normaliser accumulates in f64.
fn softmax_slabs(x: &[f32], y: &mut [f32], len: usize, inner: usize, log: bool) {
    if inner == 1 {
        for (row, out) in x.chunks_exact(len).zip(y.chunks_exact_mut(len)) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, max_nan);
            let mut total = 0.0f64;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                total += *o as f64;
            }
            let norm = norm(total, log);
            for (o, &v) in out.iter_mut().zip(row) {
                normalise(v, o, max, norm, log);
            }
        }
        return;
    }
    // Per-column state, reused across the slabs; the rows are walked in order so reads stay
    // contiguous.
    let mut max = vec![0.0f32; inner];
    let mut total = vec![0.0f64; inner];
    for (slab, out) in x.chunks_exact(len * inner).zip(y.chunks_exact_mut(len * inner)) {
        max.fill(f32::NEG_INFINITY);
        total.fill(0.0);
        for row in slab.chunks_exact(inner) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = max_nan(*m, v);
            }
        }
        for (row, out) in slab.chunks_exact(inner).zip(out.chunks_exact_mut(inner)) {
            for (((o, &v), &m), t) in out.iter_mut().zip(row).zip(&max).zip(total.iter_mut()) {
                *o = (v - m).exp();
                *t += *o as f64;
            }
        }
        for t in total.iter_mut() {
            *t = norm(*t, log);
        }
        for (row, out) in slab.chunks_exact(inner).zip(out.chunks_exact_mut(inner)) {
            for (((o, &v), &m), &n) in out.iter_mut().zip(row).zip(&max).zip(&total) {
                normalise(v, o, m, n, log);
            }
        }
    }
}

fn softmax_along(op: &str, x: &Tensor, axis: isize, log: bool) -> Result<Tensor> {
    let v = AxisView::new(op, x.shape(), axis)?;
    let src = x.data();
    if src.is_empty() {
        return Ok(Tensor::from_parts(x.shape().clone(), Vec::new()));
    }
    let mut out = vec![0.0f32; src.len()];
    // With elements, `len · inner` cannot overflow; without, there is nothing to do.
    let slab = v.len * v.inner;
    // Whole slabs per task, about BLOCK elements of them.
    if let Some(slabs) = BLOCK.checked_div(slab) {
        fill_chunks(&mut out, slabs.max(1) * slab, |start, block| {
            softmax_slabs(&src[start..start + block.len()], block, v.len, v.inner, log);
        });
    }
    Ok(Tensor::from_parts(x.shape().clone(), out))
}

/// `exp(x − max) / Σ exp(x − max)` along an axis. A slice holding NaN, or only −inf, gives NaN
/// (as PyTorch).
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_along("softmax", x, axis, false)
}

/// `x − max − ln Σ exp(x − max)` along an axis: the log of [`softmax`] without its underflow.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    softmax_along("log_softmax", x, axis, true)
}

/// Sums `x` down to `shape`, which must broadcast to `x`'s shape: the adjoint of broadcasting,
/// which turns the gradient of a broadcast result into the gradient of the operand
/// (`[N, C, H, W] → [1, C, 1, 1]` for a bias). Sequential, in f64, so deterministic.
pub fn sum_to_shape(x: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    let target = shape.into();
    if let Some(why) = broadcast_mismatch(&target, x.shape()) {
        return Err(Error::shape(
            "sum_to_shape",
            format!(
                "shape {} cannot be summed to {target}, which does not broadcast to it: {why}",
                x.shape()
            ),
        ));
    }
    let numel = target.checked_numel()?;
    let src = x.data();
    if src.is_empty() {
        // Nothing to add (and the strides of an empty tensor may overflow).
        return Ok(Tensor::from_parts(target, vec![0.0; numel]));
    }
    let strides = broadcast_strides(&target, x.dims());
    let (dims, [strides]) = coalesce(x.dims(), [&strides]);
    let step = strides.last().copied().unwrap_or(0);
    let mut acc = vec![0.0f64; numel];
    for_each_run(&dims, [&strides], [0], 0..src.len(), |position, len, [offset]| {
        let run = &src[position..position + len];
        if step == 0 {
            // A run summed into one output (a bias gradient's H·W): in lanes, as `sum_all`.
            acc[offset] += block_sum(run);
        } else {
            for (j, &v) in run.iter().enumerate() {
                acc[offset + j * step] += v as f64;
            }
        }
    });
    Ok(Tensor::from_parts(target, acc.into_iter().map(|v| v as f32).collect()))
}

impl Tensor {
    /// See [`sum`].
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        sum(self, axis, keepdim)
    }

    /// See [`mean`].
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        mean(self, axis, keepdim)
    }

    /// See [`var`].
    pub fn var(&self, axis: isize, unbiased: bool, keepdim: bool) -> Result<Tensor> {
        var(self, axis, unbiased, keepdim)
    }

    /// See [`max`].
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        max(self, axis, keepdim)
    }

    /// See [`min`].
    pub fn min(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        min(self, axis, keepdim)
    }

    /// See [`argmax`].
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        argmax(self, axis, keepdim)
    }

    /// See [`argmin`].
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        argmin(self, axis, keepdim)
    }

    /// See [`sum_all`].
    pub fn sum_all(&self) -> f32 {
        sum_all(self)
    }

    /// See [`mean_all`].
    pub fn mean_all(&self) -> f32 {
        mean_all(self)
    }

    /// See [`max_all`].
    pub fn max_all(&self) -> Result<f32> {
        max_all(self)
    }

    /// See [`min_all`].
    pub fn min_all(&self) -> Result<f32> {
        min_all(self)
    }

    /// See [`softmax`].
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        softmax(self, axis)
    }

    /// See [`log_softmax`].
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        log_softmax(self, axis)
    }

    /// See [`sum_to_shape`].
    pub fn sum_to_shape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        sum_to_shape(self, shape)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(dims: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(dims, data.to_vec()).unwrap()
    }

    fn iota(dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::new(dims, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn sums_and_means_along_each_axis() {
        let x = iota(&[2, 3, 4]);
        let s = x.sum(1, false).unwrap();
        assert_eq!(s.dims(), &[2, 4]);
        assert_eq!(s.data(), &[12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]);
        assert_eq!(x.sum(-1, true).unwrap().dims(), &[2, 3, 1]);
        assert_eq!(x.sum(-1, false).unwrap().data(), &[6.0, 22.0, 38.0, 54.0, 70.0, 86.0]);
        assert_eq!(x.mean(0, false).unwrap().data()[..3], [6.0, 7.0, 8.0]);
        assert_eq!(x.mean(0, true).unwrap().dims(), &[1, 3, 4]);
        let empty = Tensor::zeros([2, 0]).unwrap();
        assert_eq!(empty.sum(1, false).unwrap().data(), &[0.0, 0.0]);
        assert!(empty.mean(1, false).unwrap().data().iter().all(|v| v.is_nan()));
        assert_eq!(empty.sum(0, false).unwrap().dims(), &[0]);
    }

    #[test]
    fn variance_with_and_without_bessel() {
        let x = t(&[2, 4], &[1.0, 2.0, 3.0, 4.0, 1e6, 1e6 + 1.0, 1e6 + 2.0, 1e6 + 3.0]);
        assert_eq!(x.var(1, true, false).unwrap().data(), &[5.0 / 3.0, 5.0 / 3.0]);
        assert_eq!(x.var(-1, false, true).unwrap().data(), &[1.25, 1.25]);
        assert_eq!(x.var(0, false, false).unwrap().dims(), &[4]);
        assert!(t(&[1], &[3.0]).var(0, true, false).unwrap().data()[0].is_nan());
        assert_eq!(t(&[1], &[3.0]).var(0, false, false).unwrap().data(), &[0.0]);
    }

    #[test]
    fn max_min_and_arg() {
        let x = t(&[2, 3], &[1.0, 5.0, 5.0, -2.0, -7.0, -1.0]);
        assert_eq!(x.max(1, false).unwrap().data(), &[5.0, -1.0]);
        assert_eq!(x.min(0, true).unwrap().data(), &[-2.0, -7.0, -1.0]);
        assert_eq!(x.argmax(1, false).unwrap().data(), &[1.0, 2.0]);
        assert_eq!(x.argmin(-1, true).unwrap().data(), &[0.0, 1.0]);
        assert_eq!(x.argmax(0, false).unwrap().data(), &[0.0, 0.0, 0.0]);
        let all_neg_inf = t(&[3], &[f32::NEG_INFINITY; 3]);
        assert_eq!(all_neg_inf.argmax(0, false).unwrap().data(), &[0.0]);
        let with_nan = t(&[4], &[1.0, f32::NAN, 3.0, f32::NAN]);
        assert_eq!(with_nan.argmax(0, false).unwrap().data(), &[1.0]);
        assert_eq!(with_nan.argmin(0, false).unwrap().data(), &[1.0]);
        assert!(with_nan.max(0, false).unwrap().data()[0].is_nan());
        assert!(with_nan.min(0, false).unwrap().data()[0].is_nan());
    }

    #[test]
    fn reductions_over_all_elements() {
        let x = iota(&[3, 4]);
        assert_eq!(x.sum_all(), 66.0);
        assert_eq!(x.mean_all(), 5.5);
        assert_eq!(x.max_all().unwrap(), 11.0);
        assert_eq!(x.min_all().unwrap(), 0.0);
        let empty = Tensor::zeros([0]).unwrap();
        assert_eq!(empty.sum_all(), 0.0);
        assert!(empty.mean_all().is_nan());
        assert!(t(&[2], &[f32::NAN, 1.0]).max_all().unwrap().is_nan());
    }

    #[test]
    fn sum_all_is_accurate() {
        // 10^7 copies of 0.1: an f32 running sum drifts by percents, f64 blocks stay exact to f32.
        let x = Tensor::full([10_000_000], 0.1).unwrap();
        assert_eq!(x.sum_all(), (10_000_000.0 * 0.1f32 as f64) as f32);
        let mixed = t(&[3], &[1e8, 1.0, -1e8]);
        assert_eq!(mixed.sum_all(), 1.0);
        assert_eq!(mixed.sum(0, false).unwrap().data(), &[1.0]);
    }

    #[test]
    fn reduction_errors() {
        let x = iota(&[2, 3]);
        assert_eq!(
            message(x.sum(2, false)),
            "sum: axis 2 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        assert_eq!(
            message(x.mean(-3, false)),
            "mean: axis -3 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        assert_eq!(
            message(x.var(5, true, false)),
            "var: axis 5 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        assert_eq!(
            message(x.softmax(2)),
            "softmax: axis 2 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        assert_eq!(
            message(x.log_softmax(-3)),
            "log_softmax: axis -3 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        let empty = Tensor::zeros([2, 0]).unwrap();
        assert_eq!(message(empty.max(1, false)), "max: cannot reduce axis 1 of size 0 (shape [2, 0])");
        assert_eq!(message(empty.min(-1, false)), "min: cannot reduce axis 1 of size 0 (shape [2, 0])");
        assert_eq!(message(empty.argmax(1, false)), "argmax: cannot reduce axis 1 of size 0 (shape [2, 0])");
        assert_eq!(message(empty.argmin(1, false)), "argmin: cannot reduce axis 1 of size 0 (shape [2, 0])");
        assert_eq!(message(empty.max_all()), "max_all: needs at least one element, got shape [2, 0]");
        assert_eq!(message(empty.min_all()), "min_all: needs at least one element, got shape [2, 0]");
    }

    #[test]
    fn empty_tensors_with_huge_axes() {
        let x = Tensor::zeros([0, usize::MAX, 2]).unwrap();
        assert_eq!(
            message(x.sum(0, false)),
            format!(
                "sum: invalid argument: reducing axis 0 of shape [0, {}, 2] leaves more elements than fit in \
                 memory",
                usize::MAX
            )
        );
        assert_eq!(x.sum(1, true).unwrap().dims(), &[0, 1, 2]);
        assert_eq!(x.max(2, false).unwrap().dims(), &[0, usize::MAX]);
        assert_eq!(x.softmax(1).unwrap().numel(), 0);
        assert_eq!(x.sum_all(), 0.0);
        assert_eq!(x.sum_to_shape([1, 2]).unwrap().data(), &[0.0, 0.0]);
        assert!(x.sum_to_shape([usize::MAX, 2]).is_err());
    }

    #[test]
    fn argmax_refuses_inexact_indices() {
        let long = Tensor::zeros([MAX_EXACT_INDEX + 1]).unwrap();
        assert_eq!(
            message(long.argmax(0, false)),
            "argmax: invalid argument: axis 0 of shape [16777217] is longer than 2^24, so its indices are \
             not exact in f32"
        );
    }

    #[test]
    fn softmax_is_stable_and_normalised() {
        let x = t(&[2, 3], &[1000.0, 1001.0, 1002.0, -5.0, 0.0, 5.0]);
        let y = x.softmax(1).unwrap();
        assert!(y.data().iter().all(|v| v.is_finite()));
        for row in y.data().chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let expected = [0.09003057, 0.24472847, 0.66524096];
        for (a, b) in y.data()[..3].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let log = x.log_softmax(-1).unwrap();
        for (l, s) in log.data().iter().zip(y.data()) {
            assert!((l - s.ln()).abs() < 1e-6);
        }
        // Far below the largest logit, log-softmax stays finite where ln(softmax) underflows.
        let wide = t(&[2], &[0.0, 200.0]);
        assert_eq!(wide.log_softmax(0).unwrap().data(), &[-200.0, 0.0]);
        // Along a middle axis each [o, :, i] column sums to 1.
        let z = iota(&[2, 3, 4]).softmax(1).unwrap();
        let sums = z.sum(1, false).unwrap();
        assert!(sums.data().iter().all(|s| (s - 1.0).abs() < 1e-6));
        assert_eq!(Tensor::zeros([0, 3]).unwrap().softmax(1).unwrap().dims(), &[0, 3]);
    }

    #[test]
    fn sum_to_shape_undoes_broadcasting() {
        let x = iota(&[2, 3, 2]);
        let s = x.sum_to_shape([3, 1]).unwrap();
        assert_eq!(s.dims(), &[3, 1]);
        assert_eq!(s.data(), &[0.0 + 1.0 + 6.0 + 7.0, 2.0 + 3.0 + 8.0 + 9.0, 4.0 + 5.0 + 10.0 + 11.0]);
        assert_eq!(x.sum_to_shape([1, 1, 1]).unwrap().data(), &[66.0]);
        assert_eq!(x.sum_to_shape(Shape::default()).unwrap().data(), &[66.0]);
        assert_eq!(x.sum_to_shape([2, 3, 2]).unwrap(), x);
        assert_eq!(
            message(x.sum_to_shape([4, 1])),
            "sum_to_shape: shape [2, 3, 2] cannot be summed to [4, 1], which does not broadcast to it: \
             dimension 1 is 4 vs 3"
        );
        assert_eq!(
            message(x.sum_to_shape([1, 2, 3, 2])),
            "sum_to_shape: shape [2, 3, 2] cannot be summed to [1, 2, 3, 2], which does not broadcast to \
             it: it has more dimensions (4) than [2, 3, 2] (3)"
        );
    }

    #[test]
    fn large_reductions_are_bitwise_identical_for_any_thread_count() {
        let x =
            Tensor::from_fn([7, 300, 500], |i| ((i[0] * 131 + i[1] * 17 + i[2]) as f32 * 0.37).sin() * 1e3)
                .unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let per_axis: Vec<Tensor> = (0..3)
                    .flat_map(|a| {
                        [
                            x.sum(a, false).unwrap(),
                            x.var(a, true, false).unwrap(),
                            x.argmax(a, false).unwrap(),
                            x.softmax(a).unwrap(),
                            x.log_softmax(a).unwrap(),
                        ]
                    })
                    .collect();
                (x.sum_all().to_bits(), x.mean_all().to_bits(), x.max_all().unwrap(), per_axis)
            })
        };
        let (one, two) = (run(1), run(2));
        assert_eq!((one.0, one.1, one.2), (two.0, two.1, two.2));
        for (a, b) in one.3.iter().zip(&two.3) {
            assert!(a.data().iter().zip(b.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    fn tensor_and_axis() -> impl Strategy<Value = (Tensor, usize)> {
        prop::collection::vec(1usize..6, 1..5).prop_flat_map(|dims| {
            let n = dims.iter().product::<usize>();
            let rank = dims.len();
            (
                prop::collection::vec(-50.0f32..50.0, n)
                    .prop_map(move |v| Tensor::new(dims.clone(), v).unwrap()),
                0..rank,
            )
        })
    }

    proptest! {
        #[test]
        fn axis_reductions_match_index_arithmetic((x, axis) in tensor_and_axis()) {
            let a = axis as isize;
            let s = x.sum(a, true).unwrap();
            let m = x.max(a, false).unwrap();
            let i = x.argmax(a, false).unwrap();
            let v = x.var(a, false, false).unwrap();
            let len = x.dims()[axis];
            for p in 0..s.numel() {
                let mut index = vec![0; s.rank()];
                let mut rest = p;
                for d in (0..s.rank()).rev() {
                    index[d] = rest % s.dims()[d];
                    rest /= s.dims()[d];
                }
                let column: Vec<f32> = (0..len)
                    .map(|l| {
                        let mut at = index.clone();
                        at[axis] = l;
                        x.get(&at).unwrap()
                    })
                    .collect();
                let total: f64 = column.iter().map(|&c| c as f64).sum();
                prop_assert_eq!(s.data()[p], total as f32);
                let best = column.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                prop_assert_eq!(m.data()[p], best);
                prop_assert_eq!(column[i.data()[p] as usize], best);
                let mean = total / len as f64;
                let expected = column.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / len as f64;
                prop_assert!((v.data()[p] as f64 - expected).abs() <= 1e-4 * expected.max(1.0));
            }
        }

        #[test]
        fn sum_to_shape_is_the_adjoint_of_broadcast_to((x, axis) in tensor_and_axis()) {
            // <broadcast_to(y), x> = <y, sum_to_shape(x)> for y of the reduced shape.
            let mut reduced = x.dims().to_vec();
            reduced[axis] = 1;
            let reduced = &reduced[axis.min(1)..];
            let y = Tensor::from_fn(reduced, |i| i.iter().sum::<usize>() as f32 - 1.5).unwrap();
            let lhs: f64 = y.broadcast_to(x.shape()).unwrap().data().iter().zip(x.data()).map(|(a, b)| (a * b) as f64).sum();
            let summed = x.sum_to_shape(reduced).unwrap();
            let rhs: f64 = y.data().iter().zip(summed.data()).map(|(a, b)| (a * b) as f64).sum();
            // Rounding scales with the terms, not with their sum, which can cancel to near zero.
            let scale: f64 = y.broadcast_to(x.shape()).unwrap().data().iter().zip(x.data()).map(|(a, b)| (a * b).abs() as f64).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-5 * scale.max(1.0), "lhs {} rhs {} scale {}", lhs, rhs, scale);
        }
    }
}
