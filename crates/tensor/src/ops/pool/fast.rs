//! The production pooling kernels, parallel over the `N·C` planes of `x [N, C, *I]`.
//!
//! Shapes as in the module docs, lifted to `[D, H, W]`. Before any data is touched, the taps of
//! every output position are clipped to the input once: along depth and height per output
//! index (`Taps`), along the width per kernel tap as the run of output columns it serves
//! (`ColumnSweep`). A kernel then sweeps whole output rows, one input row and one tap at a
//! time, with no test for the padding inside: the independent columns pipeline (and vectorise
//! at stride 1) where a window-at-a-time loop would wait on one accumulator.
//!
//! Every output element still sees its taps in row-major window order, so the maxima and the
//! indices of ties and NaN are the reference's, and the f32 sums are accumulated in the order of
//! PyTorch's CPU kernels (average and adaptive average pooling agree with PyTorch 2.x bit for
//! bit). Each plane is computed by one task with the same loops, so results do not depend on the
//! number of threads.
//!
//! The backward kernels are the transposes: average pooling scatters each output row's shares
//! through the same sweeps, max pooling adds each `dy` element at its recorded index. A plane of
//! `dx` depends only on the same plane of `dy`, so they too are parallel over planes and
//! independent of the thread count.

use rayon::prelude::*;

use crate::buffer::{fresh_block_pairs, fresh_blocks};

use super::{AdaptiveGeometry, PoolGeometry, adaptive_window};

/// The taps of one output position along one axis that fall inside the input.
#[derive(Debug, Clone, Copy)]
pub(super) struct Taps {
    /// Input index of the first tap at or after the input's start (PyTorch's starting point for
    /// the max, even when it lies past the input's end and `count` is 0).
    pub(super) first: usize,
    /// The kernel index of that tap: how many taps fell in the leading padding.
    skipped: usize,
    /// How many taps, `dilation` apart from `first`, are inside the input.
    pub(super) count: usize,
    /// Average pooling: the window clipped to the padded input, the divisor's factor under
    /// `count_include_pad`.
    padded: usize,
}

/// The clipped taps of every output position along lifted axis `axis`.
pub(super) fn sliding_taps(g: &PoolGeometry, axis: usize) -> Vec<Taps> {
    let (input, kernel, stride) = (g.input[axis], g.kernel[axis], g.stride[axis]);
    let (pad, dilation) = (g.padding[axis], g.dilation[axis]);
    // The geometry guarantees every padded coordinate, and so every value below, fits in isize.
    (0..g.output[axis])
        .map(|o| {
            let start = (o * stride) as isize - pad as isize;
            let skipped = if start < 0 { start.unsigned_abs().div_ceil(dilation) } else { 0 };
            let first = (start + (skipped * dilation) as isize) as usize;
            let count = if first >= input || skipped >= kernel {
                0
            } else {
                ((input - 1 - first) / dilation + 1).min(kernel - skipped)
            };
            let padded_end = (start + kernel as isize).min((input + pad) as isize);
            Taps { first, skipped, count, padded: (padded_end - start) as usize }
        })
        .collect()
}

/// Kernel tap `f` along the width, applied to output columns `lo..hi` (those for which it falls
/// inside the input): column `lo + i` reads input column `start + i·S`.
#[derive(Debug, Clone, Copy)]
struct ColumnSweep {
    lo: usize,
    hi: usize,
    start: usize,
}

/// The sweeps of the width taps that some output column uses, in ascending tap order.
///
/// Only taps inside some window's clipped run are visited, so the work stays proportional to
/// the input even for a kernel far wider than it (a large kernel with padding ⌊F/2⌋ is valid).
fn column_sweeps(g: &PoolGeometry, width: &[Taps]) -> Vec<ColumnSweep> {
    let (iw, ow, sw, pw, dw) = (g.input[2], g.output[2], g.stride[2], g.padding[2], g.dilation[2]);
    let mut runs: Vec<(usize, usize)> =
        width.iter().filter(|t| t.count > 0).map(|t| (t.skipped, t.skipped + t.count)).collect();
    runs.sort_unstable();
    let mut sweeps = Vec::new();
    let mut next = 0;
    for (begin, end) in runs {
        for f in begin.max(next)..end {
            // Output columns c with P ≤ c·S + f·D < W + P.
            let offset = f * dw;
            let lo = pw.saturating_sub(offset).div_ceil(sw).min(ow);
            let hi = (iw + pw).saturating_sub(offset).div_ceil(sw).clamp(lo, ow);
            if lo < hi {
                sweeps.push(ColumnSweep { lo, hi, start: lo * sw + offset - pw });
            }
        }
        next = next.max(end);
    }
    sweeps
}

/// Everything a plane kernel needs that does not depend on the data, computed once per call.
struct Plan {
    depth: Vec<Taps>,
    height: Vec<Taps>,
    width: Vec<Taps>,
    columns: Vec<ColumnSweep>,
}

impl Plan {
    fn new(g: &PoolGeometry) -> Self {
        let width = sliding_taps(g, 2);
        let columns = column_sweeps(g, &width);
        Plan { depth: sliding_taps(g, 0), height: sliding_taps(g, 1), width, columns }
    }
}

/// Max pooling without indices: [`max_plane_2x2`] for LeNet's and VGG's windows, otherwise
/// [`super::separable`].
pub(crate) fn max_pool(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    if !is_plain_2x2(g) {
        return super::separable::max_pool(g, x, super::separable::Kernel::detect());
    }
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.planes() * output_volume];
    y.par_chunks_mut(output_volume)
        .zip(x.par_chunks(input_volume))
        .for_each(|(y, x)| max_plane_2x2::<false>(g, x, y, &mut []));
    y
}

/// Max pooling without indices by the general sweep, for the windows
/// [`super::separable::suits`] leaves out.
pub(super) fn max_pool_general(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.planes() * output_volume];
    y.par_chunks_mut(output_volume)
        .zip(x.par_chunks(input_volume))
        .for_each(|(y, x)| max_plane::<false>(g, &plan, x, y, &mut []));
    y
}

pub(crate) fn max_pool_with_indices(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let plan = Plan::new(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    fresh_block_pairs(g.planes() * output_volume, output_volume, (0.0, 0), |plane, y, indices| {
        max_plane::<true>(g, &plan, &x[plane * input_volume..][..input_volume], y, indices)
    })
}

/// Whether every window is a whole 2×2 block of a 2D plane at stride 2 (LeNet's and VGG's
/// pooling), which [`max_plane_2x2`] handles without the general sweeps.
fn is_plain_2x2(g: &PoolGeometry) -> bool {
    g.kernel == [1, 2, 2]
        && g.stride == [1, 2, 2]
        && g.padding == [0, 0, 0]
        && g.dilation == [1, 1, 1]
        && g.output[0] == g.input[0]
        && 2 * g.output[1] <= g.input[1]
        && 2 * g.output[2] <= g.input[2]
}

/// [`max_plane`] for [`is_plain_2x2`] windows: the four taps of each window in PyTorch's order
/// (row by row), with its rule for ties and NaN. On LeNet's 28×28 maps the general sweeps spend
/// most of their time starting and stopping 14-element runs.
fn max_plane_2x2<const INDICES: bool>(g: &PoolGeometry, x: &[f32], y: &mut [f32], indices: &mut [usize]) {
    let [depth, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    for z in 0..depth {
        for r in 0..oh {
            let top = (z * ih + 2 * r) * iw;
            let rows = [&x[top..top + 2 * ow], &x[top + iw..top + iw + 2 * ow]];
            let o = (z * oh + r) * ow;
            for c in 0..ow {
                let mut best = rows[0][2 * c];
                let mut at = top + 2 * c;
                for (tap, offset) in
                    [(rows[0][2 * c + 1], 1), (rows[1][2 * c], iw), (rows[1][2 * c + 1], iw + 1)]
                {
                    let take = (tap > best) | tap.is_nan();
                    best = if take { tap } else { best };
                    if INDICES {
                        at = if take { top + 2 * c + offset } else { at };
                    }
                }
                y[o + c] = best;
                if INDICES {
                    indices[o + c] = at;
                }
            }
        }
    }
}

/// One plane of max pooling; `INDICES` also records where each maximum came from, and
/// compiles to a value-only loop without it (`indices` is then empty).
fn max_plane<const INDICES: bool>(
    g: &PoolGeometry,
    plan: &Plan,
    x: &[f32],
    y: &mut [f32],
    indices: &mut [usize],
) {
    if is_plain_2x2(g) {
        return max_plane_2x2::<INDICES>(g, x, y, indices);
    }
    let [_, ih, iw] = g.input;
    let [dd, dh, _] = g.dilation;
    let (ow, sw) = (g.output[2], g.stride[2]);
    let mut o = 0;
    for tz in &plan.depth {
        for tr in &plan.height {
            let out = &mut y[o..o + ow];
            out.fill(f32::NEG_INFINITY);
            let at: &mut [usize] = if INDICES { &mut indices[o..o + ow] } else { &mut [] };
            // PyTorch's index before anything is seen: each window's first tap in the input.
            for (a, tc) in at.iter_mut().zip(&plan.width) {
                *a = (tz.first * ih + tr.first) * iw + tc.first;
            }
            for z in (tz.first..).step_by(dd).take(tz.count) {
                for r in (tr.first..).step_by(dh).take(tr.count) {
                    let row_start = (z * ih + r) * iw;
                    let row = &x[row_start..row_start + iw];
                    for s in &plan.columns {
                        let out = &mut out[s.lo..s.hi];
                        let at: &mut [usize] = if INDICES { &mut at[s.lo..s.hi] } else { &mut [] };
                        let src = &row[s.start..=s.start + (out.len() - 1) * sw];
                        // A literal 1 lets the contiguous case vectorise.
                        if sw == 1 {
                            sweep_max::<INDICES>(out, at, src, 1, row_start + s.start);
                        } else {
                            sweep_max::<INDICES>(out, at, src, sw, row_start + s.start);
                        }
                    }
                }
            }
            o += ow;
        }
    }
}

/// Offers `src[i·step]` (input index `first + i·step`) to the running maximum of output column
/// `i`. Plain indexing rather than iterator adaptors, which keep their state in memory here.
#[inline(always)]
pub(super) fn sweep_max<const INDICES: bool>(
    out: &mut [f32],
    at: &mut [usize],
    src: &[f32],
    step: usize,
    first: usize,
) {
    // PyTorch's rule: `>` keeps the first of equal values, a NaN always takes over (so it
    // propagates, and the last one wins). Written as selects, so that the contiguous value-only
    // loop vectorises; the index select is marked unpredictable (a conditional move), which
    // makes the stride-1 loop with indices three times faster than a branch.
    if INDICES {
        let at = &mut at[..out.len()];
        for (i, best) in out.iter_mut().enumerate() {
            let v = src[i * step];
            let take = (v > *best) | v.is_nan();
            *best = if take { v } else { *best };
            at[i] = std::hint::select_unpredictable(take, first + i * step, at[i]);
        }
    } else {
        for (i, best) in out.iter_mut().enumerate() {
            let v = src[i * step];
            *best = if (v > *best) | v.is_nan() { v } else { *best };
        }
    }
}

/// The gradient of max pooling, adaptive or not: `dy` element `o` of each plane is added to
/// `dx[indices[o]]` of the same plane, in output order as PyTorch's CPU kernel (so ties of
/// overlapping windows sum in its order). An index outside the plane, which only a window of
/// nothing but padding reports, is skipped. `output_volume` is at least 1.
pub(crate) fn scatter_backward(
    planes: usize,
    input_volume: usize,
    output_volume: usize,
    indices: &[usize],
    dy: &[f32],
) -> Vec<f32> {
    fresh_blocks(planes * input_volume, input_volume, 0.0, |plane, dx| {
        let (dy, indices) =
            (&dy[plane * output_volume..][..output_volume], &indices[plane * output_volume..]);
        for (&grad, &at) in dy.iter().zip(indices) {
            if let Some(slot) = dx.get_mut(at) {
                *slot += grad;
            }
        }
    })
}

/// Adds `src[i·step]` to the running sum of output column `i`, as [`sweep_max`].
#[inline(always)]
fn sweep_sum(out: &mut [f32], src: &[f32], step: usize) {
    for (i, sum) in out.iter_mut().enumerate() {
        *sum += src[i * step];
    }
}

pub(crate) fn avg_pool(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.planes() * output_volume];
    y.par_chunks_mut(output_volume)
        .zip(x.par_chunks(input_volume))
        .for_each(|(y, x)| avg_plane(g, &plan, x, y));
    y
}

fn avg_plane(g: &PoolGeometry, plan: &Plan, x: &[f32], y: &mut [f32]) {
    let [_, ih, iw] = g.input;
    let (ow, sw) = (g.output[2], g.stride[2]);
    let mut o = 0;
    for tz in &plan.depth {
        for tr in &plan.height {
            let out = &mut y[o..o + ow];
            out.fill(0.0);
            // Average pooling has no dilation: the taps are consecutive.
            for z in tz.first..tz.first + tz.count {
                for r in tr.first..tr.first + tr.count {
                    let row = &x[(z * ih + r) * iw..][..iw];
                    for s in &plan.columns {
                        let out = &mut out[s.lo..s.hi];
                        let src = &row[s.start..=s.start + (out.len() - 1) * sw];
                        if sw == 1 {
                            sweep_sum(out, src, 1);
                        } else {
                            sweep_sum(out, src, sw);
                        }
                    }
                }
            }
            for (sum, tc) in out.iter_mut().zip(&plan.width) {
                let real = tz.count * tr.count * tc.count;
                let divisor = match g.divisor_override {
                    Some(d) => d,
                    None if g.count_include_pad => tz.padded * tr.padded * tc.padded,
                    None => real,
                };
                // PyTorch writes 0 for a window without input elements instead of 0/0.
                *sum = if real == 0 { 0.0 } else { *sum / divisor as f32 };
            }
            o += ow;
        }
    }
}

/// The gradient of average pooling: each window's `dy` element, divided by the forward's
/// divisor, is added to every input element the window covers.
pub(crate) fn avg_pool_backward(g: &PoolGeometry, dy: &[f32]) -> Vec<f32> {
    let plan = Plan::new(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut dx = vec![0.0f32; g.planes() * input_volume];
    dx.par_chunks_mut(input_volume)
        .zip(dy.par_chunks(output_volume))
        .for_each(|(dx, dy)| avg_plane_backward(g, &plan, dy, dx));
    dx
}

/// One plane of [`avg_pool_backward`], the transpose of [`avg_plane`]: the same sweeps, with
/// each output row's shares scattered into the input rows instead of gathered from them.
fn avg_plane_backward(g: &PoolGeometry, plan: &Plan, dy: &[f32], dx: &mut [f32]) {
    let [_, ih, iw] = g.input;
    let (ow, sw) = (g.output[2], g.stride[2]);
    let mut shares = vec![0.0f32; ow];
    let mut o = 0;
    for tz in &plan.depth {
        for tr in &plan.height {
            for ((share, &grad), tc) in shares.iter_mut().zip(&dy[o..o + ow]).zip(&plan.width) {
                let real = tz.count * tr.count * tc.count;
                let divisor = match g.divisor_override {
                    Some(d) => d,
                    None if g.count_include_pad => tz.padded * tr.padded * tc.padded,
                    None => real,
                };
                // A window without input elements has nothing to pass its gradient to (and a
                // divisor of 0 without count_include_pad).
                *share = if real == 0 { 0.0 } else { grad / divisor as f32 };
            }
            for z in tz.first..tz.first + tz.count {
                for r in tr.first..tr.first + tr.count {
                    let row = &mut dx[(z * ih + r) * iw..][..iw];
                    for s in &plan.columns {
                        let shares = &shares[s.lo..s.hi];
                        let dst = &mut row[s.start..=s.start + (shares.len() - 1) * sw];
                        if sw == 1 {
                            sweep_scatter(dst, shares, 1);
                        } else {
                            sweep_scatter(dst, shares, sw);
                        }
                    }
                }
            }
            o += ow;
        }
    }
}

/// Adds `shares[i]` to `dst[i·step]`, the transpose of [`sweep_sum`].
#[inline(always)]
fn sweep_scatter(dst: &mut [f32], shares: &[f32], step: usize) {
    for (i, &share) in shares.iter().enumerate() {
        dst[i * step] += share;
    }
}

/// The `(start, end)` windows of adaptive pooling along every lifted axis.
fn adaptive_windows(g: &AdaptiveGeometry) -> [Vec<(usize, usize)>; 3] {
    std::array::from_fn(|axis| {
        (0..g.output[axis]).map(|i| adaptive_window(i, g.input[axis], g.output[axis])).collect()
    })
}

pub(crate) fn adaptive_avg_pool(g: &AdaptiveGeometry, x: &[f32]) -> Vec<f32> {
    let windows = adaptive_windows(g);
    let [_, ih, iw] = g.input;
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.batch * g.channels * output_volume];
    y.par_chunks_mut(output_volume).zip(x.par_chunks(input_volume)).for_each(|(y, x)| {
        let mut o = 0;
        for &(z0, z1) in &windows[0] {
            for &(r0, r1) in &windows[1] {
                for &(c0, c1) in &windows[2] {
                    let mut sum = 0.0f32;
                    for z in z0..z1 {
                        for r in r0..r1 {
                            for &v in &x[(z * ih + r) * iw + c0..(z * ih + r) * iw + c1] {
                                sum += v;
                            }
                        }
                    }
                    // One division per axis, in PyTorch's order (`sum / kh / kw`), for its rounding.
                    y[o] = sum / (z1 - z0) as f32 / (r1 - r0) as f32 / (c1 - c0) as f32;
                    o += 1;
                }
            }
        }
    });
    y
}

/// The gradient of adaptive average pooling: each window's `dy` element, divided by its size,
/// is added to every input element it covers.
pub(crate) fn adaptive_avg_pool_backward(g: &AdaptiveGeometry, dy: &[f32]) -> Vec<f32> {
    let windows = adaptive_windows(g);
    let [_, ih, iw] = g.input;
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut dx = vec![0.0f32; g.batch * g.channels * input_volume];
    dx.par_chunks_mut(input_volume).zip(dy.par_chunks(output_volume)).for_each(|(dx, dy)| {
        let mut o = 0;
        for &(z0, z1) in &windows[0] {
            for &(r0, r1) in &windows[1] {
                for &(c0, c1) in &windows[2] {
                    // PyTorch's order again: `grad / kh / kw`.
                    let share = dy[o] / (z1 - z0) as f32 / (r1 - r0) as f32 / (c1 - c0) as f32;
                    for z in z0..z1 {
                        for r in r0..r1 {
                            for v in &mut dx[(z * ih + r) * iw + c0..(z * ih + r) * iw + c1] {
                                *v += share;
                            }
                        }
                    }
                    o += 1;
                }
            }
        }
    });
    dx
}

pub(crate) fn adaptive_max_pool(g: &AdaptiveGeometry, x: &[f32]) -> Vec<f32> {
    let windows = adaptive_windows(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.batch * g.channels * output_volume];
    y.par_chunks_mut(output_volume)
        .zip(x.par_chunks(input_volume))
        .for_each(|(y, x)| adaptive_max_plane::<false>(g, &windows, x, y, &mut []));
    y
}

pub(crate) fn adaptive_max_pool_with_indices(g: &AdaptiveGeometry, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let windows = adaptive_windows(g);
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.batch * g.channels * output_volume];
    let mut indices = vec![0usize; y.len()];
    y.par_chunks_mut(output_volume)
        .zip(indices.par_chunks_mut(output_volume))
        .zip(x.par_chunks(input_volume))
        .for_each(|((y, indices), x)| adaptive_max_plane::<true>(g, &windows, x, y, indices));
    (y, indices)
}

/// One plane of adaptive max pooling; `INDICES` also records the flat index of each maximum
/// (`indices` is empty without it). Ties and NaN as in [`sweep_max`].
fn adaptive_max_plane<const INDICES: bool>(
    g: &AdaptiveGeometry,
    windows: &[Vec<(usize, usize)>; 3],
    x: &[f32],
    y: &mut [f32],
    indices: &mut [usize],
) {
    let [_, ih, iw] = g.input;
    let mut o = 0;
    for &(z0, z1) in &windows[0] {
        for &(r0, r1) in &windows[1] {
            for &(c0, c1) in &windows[2] {
                let (mut best, mut best_at) = (f32::NEG_INFINITY, (z0 * ih + r0) * iw + c0);
                for z in z0..z1 {
                    for r in r0..r1 {
                        let row = (z * ih + r) * iw;
                        for (at, &v) in x[row + c0..row + c1].iter().enumerate() {
                            if v > best || v.is_nan() {
                                best = v;
                                best_at = row + c0 + at;
                            }
                        }
                    }
                }
                y[o] = best;
                if INDICES {
                    indices[o] = best_at;
                }
                o += 1;
            }
        }
    }
}
