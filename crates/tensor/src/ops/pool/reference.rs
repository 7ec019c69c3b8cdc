//! The plain loops that define pooling; every fast kernel is tested against these.
//!
//! Shapes are those of the module docs, `x [N, C, *I]` and `y [N, C, *O]`, lifted to three
//! spatial axes `[D, H, W]`. Each window visits all its taps and skips those that fall outside
//! the input, as the definition reads. Sums are accumulated in f64 so that the reference is more
//! exact than anything it checks.

use super::{AdaptiveGeometry, PoolGeometry, PoolKind, PoolSpec, adaptive_op_name, adaptive_window};
use crate::error::Result;
use crate::tensor::Tensor;

/// Max pooling, see [`super::max_pool`].
pub fn max_pool<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<Tensor> {
    Ok(max_pool_with_indices(x, spec)?.0)
}

/// Max pooling with the index of each maximum in its plane, see [`super::max_pool_with_indices`].
pub fn max_pool_with_indices<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<(Tensor, Vec<usize>)> {
    let g = spec.geometry(PoolKind::Max, x.dims())?;
    let (y, indices) = max_loops(&g, x.data());
    Ok((Tensor::from_parts(g.output_shape(), y), indices))
}

/// Average pooling, see [`super::avg_pool`].
pub fn avg_pool<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<Tensor> {
    let g = spec.geometry(PoolKind::Avg, x.dims())?;
    Ok(Tensor::from_parts(g.output_shape(), avg_loops(&g, x.data())))
}

/// Adaptive average pooling, see [`super::adaptive_avg_pool`].
pub fn adaptive_avg_pool<const N: usize>(x: &Tensor, output: [usize; N]) -> Result<Tensor> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Avg, N), x.dims(), &output)?;
    Ok(Tensor::from_parts(g.output_shape(), adaptive_loops(&g, x.data(), PoolKind::Avg)))
}

/// Adaptive max pooling, see [`super::adaptive_max_pool`].
pub fn adaptive_max_pool<const N: usize>(x: &Tensor, output: [usize; N]) -> Result<Tensor> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Max, N), x.dims(), &output)?;
    Ok(Tensor::from_parts(g.output_shape(), adaptive_loops(&g, x.data(), PoolKind::Max)))
}

/// The padded coordinate of tap `f` of output position `o` along `axis`: `o·S + f·D`.
fn padded_tap(g: &PoolGeometry, axis: usize, o: usize, f: usize) -> usize {
    o * g.stride[axis] + f * g.dilation[axis]
}

/// The input index of tap `f` of output position `o` along `axis`, or `None` in the padding.
fn tap(g: &PoolGeometry, axis: usize, o: usize, f: usize) -> Option<usize> {
    padded_tap(g, axis, o, f).checked_sub(g.padding[axis]).filter(|&t| t < g.input[axis])
}

/// Where PyTorch's max starts before it has seen an element: the window's first position,
/// stepped by the dilation until it is no longer in the leading padding.
fn first_tap(g: &PoolGeometry, axis: usize, o: usize) -> usize {
    let mut t = (o * g.stride[axis]) as isize - g.padding[axis] as isize;
    while t < 0 {
        t += g.dilation[axis] as isize;
    }
    t as usize
}

/// `y[o] = max { x[t] : t a tap of window o inside the input }` and the flat index of that `t`.
fn max_loops(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let volume = g.input_volume();
    let mut y = Vec::with_capacity(g.planes() * g.output_volume());
    let mut indices = Vec::with_capacity(y.capacity());
    for plane in 0..g.planes() {
        let x = &x[plane * volume..(plane + 1) * volume];
        for z in 0..od {
            for r in 0..oh {
                for c in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    let mut best_at =
                        (first_tap(g, 0, z) * ih + first_tap(g, 1, r)) * iw + first_tap(g, 2, c);
                    for fz in 0..kd {
                        let Some(sz) = tap(g, 0, z, fz) else { continue };
                        for fr in 0..kh {
                            let Some(sr) = tap(g, 1, r, fr) else { continue };
                            for fc in 0..kw {
                                let Some(sc) = tap(g, 2, c, fc) else { continue };
                                let at = (sz * ih + sr) * iw + sc;
                                // `>` keeps the first of equal values; a NaN always takes over.
                                if x[at] > best || x[at].is_nan() {
                                    best = x[at];
                                    best_at = at;
                                }
                            }
                        }
                    }
                    y.push(best);
                    indices.push(best_at);
                }
            }
        }
    }
    (y, indices)
}

/// `y[o] = Σ { x[t] : t a tap of window o inside the input } / divisor`, the divisor counting the
/// taps inside the padded input (`count_include_pad`) or inside the input, unless overridden.
fn avg_loops(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let volume = g.input_volume();
    let padded_end = |axis: usize| g.input[axis] + 2 * g.padding[axis];
    let mut y = Vec::with_capacity(g.planes() * g.output_volume());
    for plane in 0..g.planes() {
        let x = &x[plane * volume..(plane + 1) * volume];
        for z in 0..od {
            for r in 0..oh {
                for c in 0..ow {
                    let (mut sum, mut real, mut padded) = (0.0f64, 0usize, 0usize);
                    for fz in 0..kd {
                        for fr in 0..kh {
                            for fc in 0..kw {
                                // In ceil mode the last window may run past the padding too.
                                if padded_tap(g, 0, z, fz) < padded_end(0)
                                    && padded_tap(g, 1, r, fr) < padded_end(1)
                                    && padded_tap(g, 2, c, fc) < padded_end(2)
                                {
                                    padded += 1;
                                }
                                let (Some(sz), Some(sr), Some(sc)) =
                                    (tap(g, 0, z, fz), tap(g, 1, r, fr), tap(g, 2, c, fc))
                                else {
                                    continue;
                                };
                                sum += x[(sz * ih + sr) * iw + sc] as f64;
                                real += 1;
                            }
                        }
                    }
                    let divisor = match g.divisor_override {
                        Some(d) => d,
                        None if g.count_include_pad => padded,
                        None => real,
                    };
                    // PyTorch writes 0 for a window without input elements instead of 0/0.
                    y.push(if real == 0 { 0.0 } else { (sum / divisor as f64) as f32 });
                }
            }
        }
    }
    y
}

/// Adaptive pooling: window `(z, r, c)` covers `⌊i·I/O⌋ .. ⌈(i+1)·I/O⌉` along every axis.
fn adaptive_loops(g: &AdaptiveGeometry, x: &[f32], kind: PoolKind) -> Vec<f32> {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let volume = g.input_volume();
    let mut y = Vec::with_capacity(g.batch * g.channels * g.output_volume());
    for plane in 0..g.batch * g.channels {
        let x = &x[plane * volume..(plane + 1) * volume];
        for z in 0..od {
            let (z0, z1) = adaptive_window(z, id, od);
            for r in 0..oh {
                let (r0, r1) = adaptive_window(r, ih, oh);
                for c in 0..ow {
                    let (c0, c1) = adaptive_window(c, iw, ow);
                    let (mut sum, mut best) = (0.0f64, f32::NEG_INFINITY);
                    for sz in z0..z1 {
                        for sr in r0..r1 {
                            for sc in c0..c1 {
                                let v = x[(sz * ih + sr) * iw + sc];
                                sum += v as f64;
                                if v > best || v.is_nan() {
                                    best = v;
                                }
                            }
                        }
                    }
                    let count = (z1 - z0) * (r1 - r0) * (c1 - c0);
                    y.push(match kind {
                        PoolKind::Max => best,
                        PoolKind::Avg => (sum / count as f64) as f32,
                    });
                }
            }
        }
    }
    y
}
