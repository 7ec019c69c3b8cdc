//! Pooling in 1, 2 and 3 spatial dimensions: max, average, adaptive and global.
//!
//! ```text
//! x [N, C, *I]    input, I = (W) | (H, W) | (D, H, W)
//! y [N, C, *O]    O from the size rule (crate::geometry); every channel is pooled on its own
//! dy [N, C, *O]   backward: the gradient with respect to y
//! dx [N, C, *I]   backward: the gradient with respect to x, PyTorch's grad_input
//! ```
//!
//! Along each axis output position `o` covers the taps `t_f = o·S − P + f·D`, `f = 0..F`:
//!
//! - max: `y[n, c, o] = max { x[n, c, t] : t inside the input }`; the padding never wins.
//! - avg: `y[n, c, o] = Σ { x[n, c, t] : t inside the input } / divisor`, the divisor being the
//!   window clipped to the *padded* input (`count_include_pad`, the default), the number of real
//!   elements it covers, or `divisor_override`.
//! - adaptive: window `i` of `O` over an axis of size `I` is `⌊i·I/O⌋ .. ⌈(i+1)·I/O⌉`.
//!
//! The semantics, including which index `max_pool_with_indices` reports for ties and NaN, are
//! PyTorch's (`torch.nn.functional.{max,avg,adaptive_avg,adaptive_max}_pool{1,2,3}d`).
//!
//! The backward kernels (`*_backward`, below the forward API) give PyTorch's gradients: max
//! pooling routes each `dy` element to the input its window chose (the indices of the forward),
//! average pooling spreads it over the window's inputs divided by the forward's divisor.
//!
//! 1D, 2D and 3D share one implementation: the geometry is lifted to three spatial axes (a 1D
//! width `W` becomes `1 × 1 × W`), as for convolution.
//! - `reference`: the plain loops that define the operations.
//! - `fast`: the production path, parallel over the `N·C` planes.

pub(crate) mod fast;
pub mod reference;
mod separable;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::geometry::{self, AxisParams, PerAxis, Rounding};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// How a pooling window slides, in PyTorch's vocabulary and with its defaults.
///
/// ```
/// use stride_tensor::ops::pool::{PoolKind, PoolSpec};
/// let resnet_stem_pool = PoolSpec::<2>::new(3).stride(2).padding(1);
/// let shape = resnet_stem_pool.output_shape(PoolKind::Max, &[1, 64, 112, 112]).unwrap();
/// assert_eq!(shape.dims(), &[1, 64, 56, 56]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec<const N: usize> {
    pub kernel: [usize; N],
    /// Defaults to the kernel: non-overlapping windows, as PyTorch.
    pub stride: [usize; N],
    /// On both sides of each axis; at most half the kernel (PyTorch's rule).
    pub padding: [usize; N],
    /// Max pooling only.
    pub dilation: [usize; N],
    /// Round the output size up (a last partial window is kept), see [`Rounding::Ceil`].
    pub ceil_mode: bool,
    /// Average pooling only: whether padded positions count in the divisor. Max pooling ignores
    /// it, since the padding can never be its maximum.
    pub count_include_pad: bool,
    /// Average pooling only: divide every window sum by this instead.
    pub divisor_override: Option<usize>,
}

impl<const N: usize> PoolSpec<N> {
    pub fn new(kernel: impl PerAxis<N>) -> Self {
        let kernel = kernel.per_axis();
        PoolSpec {
            kernel,
            stride: kernel,
            padding: [0; N],
            dilation: [1; N],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }

    pub fn stride(mut self, stride: impl PerAxis<N>) -> Self {
        self.stride = stride.per_axis();
        self
    }

    pub fn padding(mut self, padding: impl PerAxis<N>) -> Self {
        self.padding = padding.per_axis();
        self
    }

    pub fn dilation(mut self, dilation: impl PerAxis<N>) -> Self {
        self.dilation = dilation.per_axis();
        self
    }

    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }

    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }

    pub fn divisor_override(mut self, divisor: Option<usize>) -> Self {
        self.divisor_override = divisor;
        self
    }

    fn op_name(kind: PoolKind) -> &'static str {
        match (kind, N) {
            (PoolKind::Max, 1) => "max_pool1d",
            (PoolKind::Max, 2) => "max_pool2d",
            (PoolKind::Max, 3) => "max_pool3d",
            (PoolKind::Max, _) => "max_pool",
            (PoolKind::Avg, 1) => "avg_pool1d",
            (PoolKind::Avg, 2) => "avg_pool2d",
            (PoolKind::Avg, 3) => "avg_pool3d",
            (PoolKind::Avg, _) => "avg_pool",
        }
    }

    /// Checks the input shape against the spec and computes the output geometry. Needs no data:
    /// layers use it to answer their output shape.
    pub fn geometry(&self, kind: PoolKind, input: &[usize]) -> Result<PoolGeometry> {
        let op = Self::op_name(kind);
        let (batch, channels) = check_layout(op, N, input)?;
        match (kind, self.divisor_override) {
            (PoolKind::Avg, _) if self.dilation.iter().any(|&d| d != 1) => {
                return Err(Error::invalid(
                    op,
                    format!("dilation applies to max pooling only, got {:?}", self.dilation),
                ));
            }
            (PoolKind::Avg, Some(0)) => {
                return Err(Error::invalid(op, "divisor_override must be at least 1, got 0"));
            }
            (PoolKind::Max, Some(divisor)) => {
                return Err(Error::invalid(
                    op,
                    format!("divisor_override applies to average pooling only, got {divisor}"),
                ));
            }
            _ => {}
        }
        let rounding = if self.ceil_mode { Rounding::Ceil } else { Rounding::Floor };
        let names = geometry::axis_names(N);
        let mut g = PoolGeometry {
            kind,
            spatial_rank: N,
            batch,
            channels,
            input: [1; 3],
            kernel: [1; 3],
            output: [1; 3],
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            count_include_pad: self.count_include_pad,
            divisor_override: self.divisor_override,
        };
        for i in 0..N {
            let lifted = 3 - N + i;
            let (size, kernel, pad) = (input[2 + i], self.kernel[i], self.padding[i]);
            // A zero-sized kernel is reported by the size rule below, with the other zero checks.
            if kernel > 0 && pad > kernel / 2 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "padding {pad} along {} is more than half the kernel size {kernel}; \
                         PyTorch allows at most ⌊{kernel}/2⌋ = {}",
                        names[i],
                        kernel / 2
                    ),
                ));
            }
            let axis = AxisParams {
                input: size,
                kernel,
                stride: self.stride[i],
                pad_begin: pad,
                pad_end: pad,
                dilation: self.dilation[i],
            };
            g.output[lifted] =
                geometry::output_size(op, names[i], axis, rounding).map_err(|e| with_input(e, input))?;
            // The kernels index windows in signed padded coordinates; every tap lies below this.
            let reach = size as u128 + 2 * pad as u128 + axis.effective_kernel() as u128;
            if reach > isize::MAX as u128 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{} {size} padded by 2·{pad} with a kernel spanning {} is too large to index",
                        names[i],
                        axis.effective_kernel()
                    ),
                ));
            }
            g.input[lifted] = size;
            g.kernel[lifted] = kernel;
            g.stride[lifted] = self.stride[i];
            g.padding[lifted] = pad;
            g.dilation[lifted] = self.dilation[i];
        }
        g.output_shape().checked_numel()?;
        Ok(g)
    }

    /// The output shape `[N, C, *O]` for an input shape, without computing.
    pub fn output_shape(&self, kind: PoolKind, input: &[usize]) -> Result<Shape> {
        Ok(self.geometry(kind, input)?.output_shape())
    }
}

/// Checks that `input` is `[N, C, *I]` with `spatial_rank` non-empty spatial axes; returns `(N, C)`.
fn check_layout(op: &str, spatial_rank: usize, input: &[usize]) -> Result<(usize, usize)> {
    if !(1..=3).contains(&spatial_rank) {
        return Err(Error::invalid(op, format!("{spatial_rank} spatial dimensions; stride supports 1 to 3")));
    }
    let layout = ["NCW", "NCHW", "NCDHW"][spatial_rank - 1];
    if input.len() != spatial_rank + 2 {
        return Err(Error::shape(
            op,
            format!(
                "input must be a {}-d tensor laid out as {layout}, got shape {} (rank {})",
                spatial_rank + 2,
                Shape::from(input),
                input.len()
            ),
        ));
    }
    // An empty axis would leave windows that see only padding; PyTorch rejects it too.
    let names = geometry::axis_names(spatial_rank);
    if let Some(i) = input[2..].iter().position(|&d| d == 0) {
        return Err(Error::shape(
            op,
            format!("input {} must be at least 1, got shape {}", names[i], Shape::from(input)),
        ));
    }
    Ok((input[0], input[1]))
}

fn with_input(err: Error, input: &[usize]) -> Error {
    match err {
        Error::Shape { op, message } => {
            Error::Shape { op, message: format!("{message} (input {})", Shape::from(input)) }
        }
        other => other,
    }
}

/// A fully resolved pooling, lifted to three spatial axes `[D, H, W]` (a 2D pooling has `D = 1`,
/// a 1D one `D = H = 1`). This is what kernels consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub kind: PoolKind,
    pub spatial_rank: usize,
    pub batch: usize,
    pub channels: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub output: [usize; 3],
    pub stride: [usize; 3],
    /// Symmetric: before and after each axis.
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
}

impl PoolGeometry {
    /// The `N·C` planes (volumes in 3D), each pooled on its own.
    pub fn planes(&self) -> usize {
        self.batch * self.channels
    }

    pub fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    pub fn input_shape(&self) -> Shape {
        lifted_shape(self.batch, self.channels, self.spatial_rank, &self.input)
    }

    pub fn output_shape(&self) -> Shape {
        lifted_shape(self.batch, self.channels, self.spatial_rank, &self.output)
    }
}

fn lifted_shape(batch: usize, channels: usize, spatial_rank: usize, lifted: &[usize; 3]) -> Shape {
    let mut dims = vec![batch, channels];
    dims.extend_from_slice(&lifted[3 - spatial_rank..]);
    Shape::new(dims)
}

/// Adaptive pooling resolved to three spatial axes: only the sizes, the windows follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdaptiveGeometry {
    pub spatial_rank: usize,
    pub batch: usize,
    pub channels: usize,
    pub input: [usize; 3],
    pub output: [usize; 3],
}

impl AdaptiveGeometry {
    /// `output` holds one size per spatial axis of `input`; `op` names the caller in errors.
    pub(crate) fn new(op: &str, input: &[usize], output: &[usize]) -> Result<Self> {
        let rank = output.len();
        let (batch, channels) = check_layout(op, rank, input)?;
        let names = geometry::axis_names(rank);
        let mut g = AdaptiveGeometry { spatial_rank: rank, batch, channels, input: [1; 3], output: [1; 3] };
        for i in 0..rank {
            if output[i] == 0 {
                return Err(Error::invalid(op, format!("output {} must be at least 1, got 0", names[i])));
            }
            g.input[3 - rank + i] = input[2 + i];
            g.output[3 - rank + i] = output[i];
        }
        g.output_shape().checked_numel()?;
        Ok(g)
    }

    pub(crate) fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    pub(crate) fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    pub(crate) fn input_shape(&self) -> Shape {
        lifted_shape(self.batch, self.channels, self.spatial_rank, &self.input)
    }

    pub(crate) fn output_shape(&self) -> Shape {
        lifted_shape(self.batch, self.channels, self.spatial_rank, &self.output)
    }
}

/// Window `i` of `output` over an axis of `input` elements: `⌊i·I/O⌋ .. ⌈(i+1)·I/O⌉`, PyTorch's
/// `start_index` / `end_index`. Neighbouring windows overlap when `O` does not divide `I`.
pub(crate) fn adaptive_window(i: usize, input: usize, output: usize) -> (usize, usize) {
    // u128: i·I cannot overflow, and both bounds are at most I so they fit back in usize.
    let (i, input, output) = (i as u128, input as u128, output as u128);
    let start = i * input / output;
    let end = ((i + 1) * input).div_ceil(output);
    (start as usize, end as usize)
}

/// Max pooling over `N` spatial axes with the fast kernels. See the module docs for the shapes.
pub fn max_pool<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<Tensor> {
    let g = spec.geometry(PoolKind::Max, x.dims())?;
    Ok(Tensor::from_parts(g.output_shape(), fast::max_pool(&g, x.data())))
}

/// Max pooling that also returns, per output element (row-major), the flat index of the chosen
/// input within its `(n, c)` plane or volume, `(d·H + h)·W + w`: PyTorch's
/// `return_indices=True`. Of equal values the first in row-major order wins; a NaN wins over
/// everything and the last NaN is reported, as PyTorch.
///
/// A window that covers no input element at all (possible only when a dilation larger than the
/// input skips over it from the padding) yields −∞ and, like PyTorch, the index of its first
/// tap at or after the input's start, which then lies outside the plane.
pub fn max_pool_with_indices<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<(Tensor, Vec<usize>)> {
    let g = spec.geometry(PoolKind::Max, x.dims())?;
    let (y, indices) = fast::max_pool_with_indices(&g, x.data());
    Ok((Tensor::from_parts(g.output_shape(), y), indices))
}

/// Average pooling over `N` spatial axes with the fast kernels. See the module docs.
pub fn avg_pool<const N: usize>(x: &Tensor, spec: &PoolSpec<N>) -> Result<Tensor> {
    let g = spec.geometry(PoolKind::Avg, x.dims())?;
    Ok(Tensor::from_parts(g.output_shape(), fast::avg_pool(&g, x.data())))
}

/// `x [N, C, W]`.
pub fn max_pool1d(x: &Tensor, spec: &PoolSpec<1>) -> Result<Tensor> {
    max_pool(x, spec)
}

/// `x [N, C, H, W]`.
pub fn max_pool2d(x: &Tensor, spec: &PoolSpec<2>) -> Result<Tensor> {
    max_pool(x, spec)
}

/// `x [N, C, D, H, W]`.
pub fn max_pool3d(x: &Tensor, spec: &PoolSpec<3>) -> Result<Tensor> {
    max_pool(x, spec)
}

/// `x [N, C, W]`.
pub fn avg_pool1d(x: &Tensor, spec: &PoolSpec<1>) -> Result<Tensor> {
    avg_pool(x, spec)
}

/// `x [N, C, H, W]`.
pub fn avg_pool2d(x: &Tensor, spec: &PoolSpec<2>) -> Result<Tensor> {
    avg_pool(x, spec)
}

/// `x [N, C, D, H, W]`.
pub fn avg_pool3d(x: &Tensor, spec: &PoolSpec<3>) -> Result<Tensor> {
    avg_pool(x, spec)
}

pub(crate) fn adaptive_op_name(kind: PoolKind, spatial_rank: usize) -> &'static str {
    match (kind, spatial_rank) {
        (PoolKind::Max, 1) => "adaptive_max_pool1d",
        (PoolKind::Max, 2) => "adaptive_max_pool2d",
        (PoolKind::Max, 3) => "adaptive_max_pool3d",
        (PoolKind::Max, _) => "adaptive_max_pool",
        (PoolKind::Avg, 1) => "adaptive_avg_pool1d",
        (PoolKind::Avg, 2) => "adaptive_avg_pool2d",
        (PoolKind::Avg, 3) => "adaptive_avg_pool3d",
        (PoolKind::Avg, _) => "adaptive_avg_pool",
    }
}

/// Average pooling to a fixed output size `[N, C, *I] -> [N, C, *output]`, whatever the input
/// size (windows as in the module docs). Torchvision's classifiers use it to accept any image.
pub fn adaptive_avg_pool<const N: usize>(x: &Tensor, output: [usize; N]) -> Result<Tensor> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Avg, N), x.dims(), &output)?;
    Ok(Tensor::from_parts(g.output_shape(), fast::adaptive_avg_pool(&g, x.data())))
}

/// Max pooling to a fixed output size; ties and NaN as [`max_pool_with_indices`].
pub fn adaptive_max_pool<const N: usize>(x: &Tensor, output: [usize; N]) -> Result<Tensor> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Max, N), x.dims(), &output)?;
    Ok(Tensor::from_parts(g.output_shape(), fast::adaptive_max_pool(&g, x.data())))
}

/// Adaptive max pooling that also returns, per output element, the flat index of the chosen
/// input within its `(n, c)` plane, as [`max_pool_with_indices`]: PyTorch's
/// `adaptive_max_pool{1,2,3}d(..., return_indices=True)`. Every window holds at least one input
/// element, so every index lies inside the plane.
pub fn adaptive_max_pool_with_indices<const N: usize>(
    x: &Tensor,
    output: [usize; N],
) -> Result<(Tensor, Vec<usize>)> {
    let g = AdaptiveGeometry::new(adaptive_op_name(PoolKind::Max, N), x.dims(), &output)?;
    let (y, indices) = fast::adaptive_max_pool_with_indices(&g, x.data());
    Ok((Tensor::from_parts(g.output_shape(), y), indices))
}

/// `x [N, C, W] -> [N, C, output]`.
pub fn adaptive_avg_pool1d(x: &Tensor, output: impl PerAxis<1>) -> Result<Tensor> {
    adaptive_avg_pool(x, output.per_axis())
}

/// `x [N, C, H, W] -> [N, C, *output]`.
pub fn adaptive_avg_pool2d(x: &Tensor, output: impl PerAxis<2>) -> Result<Tensor> {
    adaptive_avg_pool(x, output.per_axis())
}

/// `x [N, C, D, H, W] -> [N, C, *output]`.
pub fn adaptive_avg_pool3d(x: &Tensor, output: impl PerAxis<3>) -> Result<Tensor> {
    adaptive_avg_pool(x, output.per_axis())
}

/// The mean of every `(n, c)` plane: `[N, C, *S] -> [N, C, 1, ...]`, keeping the rank (the same
/// as `adaptive_avg_pool` to size 1) for any spatial rank from 1 to 3.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "global_avg_pool";
    if !(3..=5).contains(&x.rank()) {
        return Err(Error::shape(
            OP,
            format!(
                "input must be a 3-, 4- or 5-d tensor laid out as NCW, NCHW or NCDHW, got shape {} (rank {})",
                x.shape(),
                x.rank()
            ),
        ));
    }
    let g = AdaptiveGeometry::new(OP, x.dims(), &[1; 3][..x.rank() - 2])?;
    Ok(Tensor::from_parts(g.output_shape(), fast::adaptive_avg_pool(&g, x.data())))
}

// --- Backward ------------------------------------------------------------------------------------
//
// `dy [N, C, *O]` is the gradient of the loss with respect to `y`; each backward returns
// `dx [N, C, *I]`, the gradient with respect to `x`, PyTorch's `grad_input`. Every `(n, c)` plane
// of `dx` depends only on the same plane of `dy`.

/// Checks that `dy` has the forward's output shape `expected` for the input shape `input`.
fn check_grad_output(op: &str, input: &[usize], expected: &Shape, dy: &Tensor) -> Result<()> {
    if dy.dims() != expected.dims() {
        return Err(Error::shape(
            op,
            format!(
                "grad_output has shape {} but the output for input {} is {expected}",
                dy.shape(),
                Shape::from(input)
            ),
        ));
    }
    Ok(())
}

/// Checks that there is one index per element of `dy`, as the forward with indices returns.
fn check_indices(op: &str, indices: &[usize], dy: &Tensor) -> Result<()> {
    if indices.len() != dy.numel() {
        return Err(Error::shape(
            op,
            format!(
                "{} indices for a grad_output of shape {} ({} elements); expected one per element",
                indices.len(),
                dy.shape(),
                dy.numel()
            ),
        ));
    }
    Ok(())
}

/// The validated geometry of a sliding-window backward: the forward's checks on `input`, then
/// `dy` against the output shape they give, then the indices (max pooling) against `dy`.
fn backward_geometry<const N: usize>(
    spec: &PoolSpec<N>,
    kind: PoolKind,
    input: &[usize],
    indices: Option<&[usize]>,
    dy: &Tensor,
) -> Result<PoolGeometry> {
    let op = format!("{}_backward", PoolSpec::<N>::op_name(kind));
    let g = spec.geometry(kind, input).map_err(|e| rename(e, &op))?;
    check_grad_output(&op, input, &g.output_shape(), dy)?;
    if let Some(indices) = indices {
        check_indices(&op, indices, dy)?;
    }
    // `x_shape` need not come from a tensor, so the input may not fit in memory.
    g.input_shape().checked_numel()?;
    Ok(g)
}

/// The validated geometry of an adaptive backward over `rank` spatial axes, whose output sizes
/// are `dy`'s.
fn adaptive_backward_geometry(
    kind: PoolKind,
    rank: usize,
    input: &[usize],
    indices: Option<&[usize]>,
    dy: &Tensor,
) -> Result<AdaptiveGeometry> {
    let op = format!("{}_backward", adaptive_op_name(kind, rank));
    if dy.rank() != rank + 2 {
        return Err(Error::shape(
            &op,
            format!(
                "grad_output has shape {} but the output for input {} must have rank {}",
                dy.shape(),
                Shape::from(input),
                rank + 2
            ),
        ));
    }
    let g = AdaptiveGeometry::new(&op, input, &dy.dims()[2..])?;
    check_grad_output(&op, input, &g.output_shape(), dy)?;
    if let Some(indices) = indices {
        check_indices(&op, indices, dy)?;
    }
    g.input_shape().checked_numel()?;
    Ok(g)
}

/// The validated geometry of [`global_avg_pool_backward`].
fn global_backward_geometry(input: &[usize], dy: &Tensor) -> Result<AdaptiveGeometry> {
    const OP: &str = "global_avg_pool_backward";
    if !(3..=5).contains(&input.len()) {
        return Err(Error::shape(
            OP,
            format!(
                "input must be a 3-, 4- or 5-d tensor laid out as NCW, NCHW or NCDHW, got shape {} (rank {})",
                Shape::from(input),
                input.len()
            ),
        ));
    }
    let g = AdaptiveGeometry::new(OP, input, &[1; 3][..input.len() - 2])?;
    check_grad_output(OP, input, &g.output_shape(), dy)?;
    g.input_shape().checked_numel()?;
    Ok(g)
}

/// The same error under the backward's name, so that a user sees which call refused it.
fn rename(err: Error, op: &str) -> Error {
    match err {
        Error::Shape { message, .. } => Error::Shape { op: op.to_string(), message },
        Error::InvalidArgument { message, .. } => Error::InvalidArgument { op: op.to_string(), message },
    }
}

/// The gradient of [`max_pool`]: each `dy` element is added to the input its window chose,
/// `indices` being those of [`max_pool_with_indices`] for the same `x` and `spec` (flat within
/// each `(n, c)` plane). An index outside the plane, which only a window covering nothing but
/// padding reports, gets no gradient, as in PyTorch. `x` supplies only its shape.
pub fn max_pool_backward<const N: usize>(
    x: &Tensor,
    indices: &[usize],
    dy: &Tensor,
    spec: &PoolSpec<N>,
) -> Result<Tensor> {
    let g = backward_geometry(spec, PoolKind::Max, x.dims(), Some(indices), dy)?;
    let dx = fast::scatter_backward(g.planes(), g.input_volume(), g.output_volume(), indices, dy.data());
    Ok(Tensor::from_parts(g.input_shape(), dx))
}

/// The gradient of [`avg_pool`] for an input of shape `x_shape`: each window spreads its `dy`
/// element, divided by the forward's divisor, over the input elements it covers.
pub fn avg_pool_backward<const N: usize>(
    x_shape: &[usize],
    dy: &Tensor,
    spec: &PoolSpec<N>,
) -> Result<Tensor> {
    let g = backward_geometry(spec, PoolKind::Avg, x_shape, None, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), fast::avg_pool_backward(&g, dy.data())))
}

/// The gradient of [`adaptive_avg_pool`] for an input of shape `x_shape`; the output size is
/// `dy`'s. Each window spreads its `dy` element evenly over the inputs it covers.
pub fn adaptive_avg_pool_backward<const N: usize>(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    let g = adaptive_backward_geometry(PoolKind::Avg, N, x_shape, None, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), fast::adaptive_avg_pool_backward(&g, dy.data())))
}

/// The gradient of [`adaptive_max_pool`] for an input of shape `x_shape`, `indices` being those
/// of [`adaptive_max_pool_with_indices`]; as [`max_pool_backward`] otherwise.
pub fn adaptive_max_pool_backward<const N: usize>(
    x_shape: &[usize],
    indices: &[usize],
    dy: &Tensor,
) -> Result<Tensor> {
    let g = adaptive_backward_geometry(PoolKind::Max, N, x_shape, Some(indices), dy)?;
    let planes = g.batch * g.channels;
    let dx = fast::scatter_backward(planes, g.input_volume(), g.output_volume(), indices, dy.data());
    Ok(Tensor::from_parts(g.input_shape(), dx))
}

/// The gradient of [`global_avg_pool`]: every input element receives its plane's `dy` element
/// divided by the plane size.
pub fn global_avg_pool_backward(x_shape: &[usize], dy: &Tensor) -> Result<Tensor> {
    let g = global_backward_geometry(x_shape, dy)?;
    Ok(Tensor::from_parts(g.input_shape(), fast::adaptive_avg_pool_backward(&g, dy.data())))
}
