//! The plain loops that define pooling and its gradients; every fast kernel is tested against
//! these.
//!
//! Shapes are those of the module docs, `x [N, C, *I]` and `y [N, C, *O]`, lifted to three
//! spatial axes `[D, H, W]`. Each window visits all its taps and skips those that fall outside
//! the input, as the definition reads. Sums are accumulated in f64 so that the reference is more
//! exact than anything it checks.

use super::{
    AdaptiveGeometry, PoolGeometry, PoolKind, PoolSpec, adaptive_backward_geometry, adaptive_op_name,
    adaptive_window, backward_geometry, global_backward_geometry,
};
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

/// Adaptive max pooling with the index of each maximum, see
/// [`super::adaptive_max_pool_with_indices`].
pub fn adaptive_max_pool_with_indices<const N: usize>(
    x: &Tensor,
    output: [usize; N],
) -> Result<(Tensor, Vec<usize>)> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Max, N), x.dims(), &output)?;
    let (y, indices) = adaptive_max_loops(&g, x.data());
    Ok((Tensor::from_parts(g.output_shape(), y), indices))
}

/// The gradient of max pooling, see [`super::max_pool_backward`].
pub fn max_pool_backward<const N: usize>(
    x: &Tensor,
    indices: &[usize],
    dy: &Tensor,
    spec: &PoolSpec<N>,
) -> Result<Tensor> {
    let g = backward_geometry(spec, PoolKind::Max, x.dims(), Some(indices), dy)?;
    let dx = scatter_loops(g.planes(), g.input_volume(), g.output_volume(), indices, dy.data());
    Ok(Tensor::from_parts(g.input_shape(), dx))
}

/// The gradient of average pooling, see [`super::avg_pool_backward`].
pub fn avg_pool_backward<const N: usize>(
    x_shape: &[usize],
    dy: &Tensor,
    spec: &PoolSpec<N>,
) -> Result<Tensor> {
    let g = backward_geometry(spec, PoolKind::Avg, x_shape, None, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), avg_backward_loops(&g, dy.data())))
}

/// The gradient of adaptive average pooling, see [`super::adaptive_avg_pool_backward`].
pub fn adaptive_avg_pool_backward<const N: usize>(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    let g = adaptive_backward_geometry(PoolKind::Avg, N, x_shape, None, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), adaptive_avg_backward_loops(&g, dy.data())))
}

/// The gradient of adaptive max pooling, see [`super::adaptive_max_pool_backward`].
pub fn adaptive_max_pool_backward<const N: usize>(
    x_shape: &[usize],
    indices: &[usize],
    dy: &Tensor,
) -> Result<Tensor> {
    let g = adaptive_backward_geometry(PoolKind::Max, N, x_shape, Some(indices), dy)?;
    let planes = g.batch * g.channels;
    let dx = scatter_loops(planes, g.input_volume(), g.output_volume(), indices, dy.data());
    Ok(Tensor::from_parts(g.input_shape(), dx))
}

/// The gradient of global average pooling, see [`super::global_avg_pool_backward`].
pub fn global_avg_pool_backward(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    let g = global_backward_geometry(x_shape, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), adaptive_avg_backward_loops(&g, dy.data())))
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

/// `dx[t] = Σ { dy[o] : window o chose t }` per plane, skipping indices outside the plane.
fn scatter_loops(
    planes: usize,
    input_volume: usize,
    output_volume: usize,
    indices: &[usize],
    dy: &[f32],
) -> Vec<f32> {
    let mut dx = vec![0.0f64; planes * input_volume];
    for plane in 0..planes {
        for o in plane * output_volume..(plane + 1) * output_volume {
            if indices[o] < input_volume {
                dx[plane * input_volume + indices[o]] += dy[o] as f64;
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// The divisor of window `(z, r, c)`: the taps inside the padded input (`count_include_pad`) or
/// inside the input, unless overridden; `None` for a window without input elements, to which
/// PyTorch gives output 0 instead of 0/0 and no gradient.
fn divisor(g: &PoolGeometry, z: usize, r: usize, c: usize) -> Option<usize> {
    let [kd, kh, kw] = g.kernel;
    let padded_end = |axis: usize| g.input[axis] + 2 * g.padding[axis];
    let (mut real, mut padded) = (0usize, 0usize);
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
                if tap(g, 0, z, fz).is_some() && tap(g, 1, r, fr).is_some() && tap(g, 2, c, fc).is_some() {
                    real += 1;
                }
            }
        }
    }
    match g.divisor_override {
        _ if real == 0 => None,
        Some(d) => Some(d),
        None if g.count_include_pad => Some(padded),
        None => Some(real),
    }
}

/// Calls `visit(o, t)` for every output position `o` of a plane (row-major) and every tap `t` of
/// its window inside the input, flat within the plane, in window order.
fn for_each_tap(g: &PoolGeometry, mut visit: impl FnMut(usize, [usize; 3], usize)) {
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let mut o = 0;
    for z in 0..od {
        for r in 0..oh {
            for c in 0..ow {
                for fz in 0..kd {
                    let Some(sz) = tap(g, 0, z, fz) else { continue };
                    for fr in 0..kh {
                        let Some(sr) = tap(g, 1, r, fr) else { continue };
                        for fc in 0..kw {
                            let Some(sc) = tap(g, 2, c, fc) else { continue };
                            visit(o, [z, r, c], (sz * ih + sr) * iw + sc);
                        }
                    }
                }
                o += 1;
            }
        }
    }
}

/// `y[o] = Σ { x[t] : t a tap of window o inside the input } / divisor(o)`.
fn avg_loops(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let (volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut sums = vec![0.0f64; g.planes() * output_volume];
    for plane in 0..g.planes() {
        let (x, sums) = (&x[plane * volume..][..volume], &mut sums[plane * output_volume..][..output_volume]);
        for_each_tap(g, |o, _, t| sums[o] += x[t] as f64);
    }
    let [_, oh, ow] = g.output;
    sums.iter()
        .enumerate()
        .map(|(i, &sum)| {
            let o = i % output_volume;
            match divisor(g, o / (oh * ow), o / ow % oh, o % ow) {
                Some(d) => (sum / d as f64) as f32,
                // PyTorch writes 0 for a window without input elements instead of 0/0.
                None => 0.0,
            }
        })
        .collect()
}

/// `dx[t] = Σ { dy[o] / divisor(o) : t a tap of window o inside the input }`.
fn avg_backward_loops(g: &PoolGeometry, dy: &[f32]) -> Vec<f32> {
    let (volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut divisors = vec![None; output_volume];
    for_each_tap(g, |o, [z, r, c], _| {
        if divisors[o].is_none() {
            divisors[o] = divisor(g, z, r, c);
        }
    });
    let mut dx = vec![0.0f64; g.planes() * volume];
    for plane in 0..g.planes() {
        let (dy, dx) = (&dy[plane * output_volume..][..output_volume], &mut dx[plane * volume..][..volume]);
        // Only windows with a tap in the input are visited, and those have a divisor.
        for_each_tap(g, |o, _, t| {
            if let Some(d) = divisors[o] {
                dx[t] += dy[o] as f64 / d as f64;
            }
        });
    }
    dx.into_iter().map(|v| v as f32).collect()
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

/// Adaptive max pooling with the flat index of each maximum in its plane: the first of equal
/// values, the last NaN.
fn adaptive_max_loops(g: &AdaptiveGeometry, x: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let volume = g.input_volume();
    let mut y = Vec::with_capacity(g.batch * g.channels * g.output_volume());
    let mut indices = Vec::with_capacity(y.capacity());
    for plane in 0..g.batch * g.channels {
        let x = &x[plane * volume..(plane + 1) * volume];
        for z in 0..od {
            let (z0, z1) = adaptive_window(z, id, od);
            for r in 0..oh {
                let (r0, r1) = adaptive_window(r, ih, oh);
                for c in 0..ow {
                    let (c0, c1) = adaptive_window(c, iw, ow);
                    let (mut best, mut best_at) = (f32::NEG_INFINITY, (z0 * ih + r0) * iw + c0);
                    for sz in z0..z1 {
                        for sr in r0..r1 {
                            for sc in c0..c1 {
                                let at = (sz * ih + sr) * iw + sc;
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

/// `dx[t] = Σ { dy[o] / |window o| : t in window o }`.
fn adaptive_avg_backward_loops(g: &AdaptiveGeometry, dy: &[f32]) -> Vec<f32> {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let volume = g.input_volume();
    let mut dx = vec![0.0f64; g.batch * g.channels * volume];
    let mut o = 0;
    for plane in 0..g.batch * g.channels {
        let dx = &mut dx[plane * volume..(plane + 1) * volume];
        for z in 0..od {
            let (z0, z1) = adaptive_window(z, id, od);
            for r in 0..oh {
                let (r0, r1) = adaptive_window(r, ih, oh);
                for c in 0..ow {
                    let (c0, c1) = adaptive_window(c, iw, ow);
                    let share = dy[o] as f64 / ((z1 - z0) * (r1 - r0) * (c1 - c0)) as f64;
                    for sz in z0..z1 {
                        for sr in r0..r1 {
                            for sc in c0..c1 {
                                dx[(sz * ih + sr) * iw + sc] += share;
                            }
                        }
                    }
                    o += 1;
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}
