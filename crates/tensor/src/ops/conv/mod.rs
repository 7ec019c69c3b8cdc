//! Convolution in 1, 2 and 3 spatial dimensions.
//!
//! ```text
//! x [N, C_in, *I]          input, I = (W) | (H, W) | (D, H, W)
//! w [C_out, C_in/G, *F]    K = C_out filters, each spanning the full depth of its group
//! b [C_out]                optional bias
//! y [N, C_out, *O]         O from the size rule (crate::geometry), output depth D2 = K
//! ```
//!
//! `y[n, k, o] = b[k] + Σ_{c ∈ group(k)} Σ_f w[k, c, f] · x[n, c, o·S − P_begin + f·D]`
//!
//! This is cross-correlation, the deep-learning convention and PyTorch's. The lecture's first
//! formula, `s_t = Σ_a x_{t−a} w_{−a}`, is the true convolution: the same sum with the kernel
//! flipped along every spatial axis ([`KernelMode::Convolution`]).
//!
//! 1D, 2D and 3D share one implementation: the geometry is lifted to three spatial axes (a 1D
//! width `W` becomes `1 × 1 × W`) and the kernels loop over `D, H, W`.
//! - `reference`: the plain loops that define the operation.
//! - `fast`: the production path (im2col tiles + GEMM; 1×1 convolution as a plain GEMM).
//! - `winograd`: Winograd's F(2×2, 3×3) for the 3×3 stride-1 2D layers where it is faster
//!   (the fast path picks it by the geometry alone; see `winograd::chosen`).
//!
//! The backward ([`conv_backward`]) takes `dy [N, C_out, *O]` and gives `dx`, `dw` and `db` in
//! the shapes of `x`, `w` and `b`; it is a kernel, with no knowledge of any autograd.

mod dot;
pub(crate) mod fast;
pub mod reference;
#[cfg(test)]
mod tests;
mod winograd;

use crate::error::{Error, Result};
use crate::geometry::{self, AxisParams, PerAxis, Rounding};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Zero padding of the spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding<const N: usize> {
    /// `begin[i]` zeros before and `end[i]` after axis `i`.
    Explicit { begin: [usize; N], end: [usize; N] },
    /// Whatever keeps `O = ⌈I/S⌉` (the input size at stride 1); the odd element goes at the end.
    Same,
}

impl<const N: usize> Padding<N> {
    /// No padding ("valid" convolution).
    pub fn valid() -> Self {
        Padding::Explicit { begin: [0; N], end: [0; N] }
    }

    pub fn symmetric(pad: [usize; N]) -> Self {
        Padding::Explicit { begin: pad, end: pad }
    }

    pub fn asymmetric(begin: [usize; N], end: [usize; N]) -> Self {
        Padding::Explicit { begin, end }
    }
}

impl<const N: usize> Default for Padding<N> {
    fn default() -> Self {
        Self::valid()
    }
}

impl<const N: usize> From<usize> for Padding<N> {
    fn from(pad: usize) -> Self {
        Padding::symmetric([pad; N])
    }
}

impl<const N: usize> From<[usize; N]> for Padding<N> {
    fn from(pad: [usize; N]) -> Self {
        Padding::symmetric(pad)
    }
}

/// Cross-correlation (the default, as PyTorch) or the textbook convolution with a flipped kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelMode {
    #[default]
    CrossCorrelation,
    Convolution,
}

/// How a convolution slides its filters: everything but the weights themselves.
///
/// ```
/// use stride_tensor::ops::conv::ConvSpec;
/// let alexnet_conv1 = ConvSpec::<2>::new().stride(4).padding(2);
/// let shape = alexnet_conv1.output_shape(&[1, 3, 224, 224], &[64, 3, 11, 11]).unwrap();
/// assert_eq!(shape.dims(), &[1, 64, 55, 55]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec<const N: usize> {
    pub stride: [usize; N],
    pub padding: Padding<N>,
    pub dilation: [usize; N],
    pub groups: usize,
    pub mode: KernelMode,
}

impl<const N: usize> Default for ConvSpec<N> {
    fn default() -> Self {
        ConvSpec {
            stride: [1; N],
            padding: Padding::valid(),
            dilation: [1; N],
            groups: 1,
            mode: KernelMode::CrossCorrelation,
        }
    }
}

impl<const N: usize> ConvSpec<N> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stride(mut self, stride: impl PerAxis<N>) -> Self {
        self.stride = stride.per_axis();
        self
    }

    pub fn padding(mut self, padding: impl Into<Padding<N>>) -> Self {
        self.padding = padding.into();
        self
    }

    pub fn dilation(mut self, dilation: impl PerAxis<N>) -> Self {
        self.dilation = dilation.per_axis();
        self
    }

    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    pub fn mode(mut self, mode: KernelMode) -> Self {
        self.mode = mode;
        self
    }

    fn op_name() -> &'static str {
        match N {
            1 => "conv1d",
            2 => "conv2d",
            3 => "conv3d",
            _ => "conv",
        }
    }

    /// Checks the input and weight shapes against each other and the spec, and computes the
    /// output geometry. Needs no data: layers use it to answer their output shape.
    pub fn geometry(&self, input: &[usize], weight: &[usize]) -> Result<ConvGeometry> {
        let op = Self::op_name();
        if !(1..=3).contains(&N) {
            return Err(Error::invalid(op, format!("{N} spatial dimensions; stride supports 1 to 3")));
        }
        let layout = ["NCW", "NCHW", "NCDHW"][N - 1];
        if input.len() != N + 2 {
            return Err(Error::shape(
                op,
                format!(
                    "input must be a {}-d tensor laid out as {layout}, got shape {} (rank {})",
                    N + 2,
                    Shape::from(input),
                    input.len()
                ),
            ));
        }
        if weight.len() != N + 2 {
            return Err(Error::shape(
                op,
                format!(
                    "weight must be a {}-d tensor [C_out, C_in/groups, {}], got shape {}",
                    N + 2,
                    ["W", "H, W", "D, H, W"][N - 1],
                    Shape::from(weight)
                ),
            ));
        }
        let (batch, in_channels) = (input[0], input[1]);
        let (out_channels, weight_depth) = (weight[0], weight[1]);
        let groups = self.groups;
        if groups == 0 {
            return Err(Error::invalid(op, "groups must be at least 1, got 0"));
        }
        if in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(Error::shape(
                op,
                format!(
                    "groups {groups} must divide both the input channels ({in_channels}) and the \
                     output channels ({out_channels}); input {}, weight {}",
                    Shape::from(input),
                    Shape::from(weight)
                ),
            ));
        }
        if weight_depth * groups != in_channels {
            return Err(Error::shape(
                op,
                format!(
                    "the filters span {weight_depth} channels (weight {}, groups {groups}) so the \
                     input needs {} channels, but it has {in_channels} (input {})",
                    Shape::from(weight),
                    weight_depth * groups,
                    Shape::from(input)
                ),
            ));
        }
        let names = geometry::axis_names(N);
        let mut g = ConvGeometry {
            spatial_rank: N,
            batch,
            in_channels,
            out_channels,
            groups,
            input: [1; 3],
            kernel: [1; 3],
            output: [1; 3],
            stride: [1; 3],
            pad_begin: [0; 3],
            pad_end: [0; 3],
            dilation: [1; 3],
        };
        for i in 0..N {
            let lifted = 3 - N + i;
            let (kernel, stride, dilation) = (weight[2 + i], self.stride[i], self.dilation[i]);
            let (pad_begin, pad_end) = match self.padding {
                Padding::Explicit { begin, end } => (begin[i], end[i]),
                Padding::Same => geometry::same_padding(input[2 + i], kernel, stride, dilation),
            };
            let axis = AxisParams { input: input[2 + i], kernel, stride, pad_begin, pad_end, dilation };
            g.output[lifted] = geometry::output_size(op, names[i], axis, Rounding::Floor)
                .map_err(|e| with_shapes(e, input, weight))?;
            g.input[lifted] = input[2 + i];
            g.kernel[lifted] = kernel;
            g.stride[lifted] = stride;
            g.pad_begin[lifted] = pad_begin;
            g.pad_end[lifted] = pad_end;
            g.dilation[lifted] = dilation;
        }
        g.output_shape().checked_numel()?;
        Ok(g)
    }

    /// The output shape `[N, C_out, *O]` for an input and weight shape, without computing.
    pub fn output_shape(&self, input: &[usize], weight: &[usize]) -> Result<Shape> {
        Ok(self.geometry(input, weight)?.output_shape())
    }
}

fn with_shapes(err: Error, input: &[usize], weight: &[usize]) -> Error {
    match err {
        Error::Shape { op, message } => Error::Shape {
            op,
            message: format!("{message} (input {}, weight {})", Shape::from(input), Shape::from(weight)),
        },
        other => other,
    }
}

/// A fully resolved convolution, lifted to three spatial axes `[D, H, W]` (a 2D convolution has
/// `D = 1`, a 1D one `D = H = 1`). This is what kernels consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub spatial_rank: usize,
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub output: [usize; 3],
    pub stride: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub dilation: [usize; 3],
}

impl ConvGeometry {
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    pub fn kernel_volume(&self) -> usize {
        self.kernel.iter().product()
    }

    pub fn input_volume(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_volume(&self) -> usize {
        self.output.iter().product()
    }

    /// Multiply-adds of the forward pass, counted on the padded input (as the benchmarks do).
    pub fn macs(&self) -> u64 {
        self.batch as u64
            * self.out_channels as u64
            * self.output_volume() as u64
            * self.in_per_group() as u64
            * self.kernel_volume() as u64
    }

    fn spatial(&self, lifted: &[usize; 3]) -> Vec<usize> {
        lifted[3 - self.spatial_rank..].to_vec()
    }

    pub fn input_shape(&self) -> Shape {
        let mut dims = vec![self.batch, self.in_channels];
        dims.extend(self.spatial(&self.input));
        Shape::new(dims)
    }

    pub fn weight_shape(&self) -> Shape {
        let mut dims = vec![self.out_channels, self.in_per_group()];
        dims.extend(self.spatial(&self.kernel));
        Shape::new(dims)
    }

    pub fn output_shape(&self) -> Shape {
        let mut dims = vec![self.batch, self.out_channels];
        dims.extend(self.spatial(&self.output));
        Shape::new(dims)
    }

    /// The size-rule parameters of spatial axis `axis` (0 = the first axis of the caller's rank).
    pub fn axis(&self, axis: usize) -> AxisParams {
        let i = 3 - self.spatial_rank + axis;
        AxisParams {
            input: self.input[i],
            kernel: self.kernel[i],
            stride: self.stride[i],
            pad_begin: self.pad_begin[i],
            pad_end: self.pad_end[i],
            dilation: self.dilation[i],
        }
    }

    /// A 1×1 convolution without stride or padding: a plain matrix product per image and group.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.stride == [1; 3] && self.pad_begin == [0; 3] && self.pad_end == [0; 3]
    }
}

/// A forward kernel: geometry, input, weights (already flipped if asked), optional bias → output.
type ForwardKernel = fn(&ConvGeometry, &[f32], &[f32], Option<&[f32]>) -> Vec<f32>;

/// Validates the operands, flips the kernel for [`KernelMode::Convolution`], and hands the
/// geometry to a kernel.
fn run<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec<N>,
    kernel: ForwardKernel,
) -> Result<Tensor> {
    let g = spec.geometry(x.dims(), w.dims())?;
    check_bias::<N>(&g, bias)?;
    let weights = oriented(w, &g, spec.mode);
    let y = kernel(&g, x.data(), &weights, bias.map(Tensor::data));
    Ok(Tensor::from_parts(g.output_shape(), y))
}

/// A bias must hold one value per filter.
fn check_bias<const N: usize>(g: &ConvGeometry, bias: Option<&Tensor>) -> Result<()> {
    if let Some(b) = bias
        && b.dims() != [g.out_channels]
    {
        return Err(Error::shape(
            ConvSpec::<N>::op_name(),
            format!("bias must have shape [{}] (one per filter), got {}", g.out_channels, b.shape()),
        ));
    }
    Ok(())
}

/// The weights as the kernels correlate with them: as given, or flipped for
/// [`KernelMode::Convolution`].
fn oriented<'w>(w: &'w Tensor, g: &ConvGeometry, mode: KernelMode) -> std::borrow::Cow<'w, [f32]> {
    match mode {
        KernelMode::CrossCorrelation => std::borrow::Cow::Borrowed(w.data()),
        KernelMode::Convolution => std::borrow::Cow::Owned(flip_kernel(w.data(), g.kernel_volume())),
    }
}

/// Reverses every filter along all its spatial axes at once (which, in row-major order, is
/// reversing each contiguous block of `kernel_volume` taps).
fn flip_kernel(w: &[f32], kernel_volume: usize) -> Vec<f32> {
    w.chunks(kernel_volume).flat_map(|taps| taps.iter().rev().copied()).collect()
}

/// Convolution over `N` spatial axes with the fast kernels. See the module docs for the shapes.
pub fn conv<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec<N>,
) -> Result<Tensor> {
    run(x, w, bias, spec, fast::forward)
}

/// `max(conv(x, w) + bias, 0)` in one pass: the ReLU is applied as each output is written, the
/// inference path's fused epilogue. Equal, bit for bit, to [`conv`] followed by ReLU.
pub fn conv_relu<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec<N>,
) -> Result<Tensor> {
    run(x, w, bias, spec, fast::forward_relu)
}

/// The same result from the plain loops of [`reference`]; slow, kept to define and test.
pub fn conv_reference<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    spec: &ConvSpec<N>,
) -> Result<Tensor> {
    run(x, w, bias, spec, reference::forward)
}

/// A layer's filters packed once for the fast kernels, for a network that runs many times over
/// the same weights (inference): [`conv_prepacked`] then skips the packing [`conv`] does on every
/// call (ResNet-18 at batch 1: 47 MB of filters rewritten per image otherwise). Built for one
/// weight shape, group count and kernel mode; it holds a copy of the weights, so a change to
/// them needs a new one.
///
/// 3×3 stride-1 layers on large enough inputs run through Winograd's F(2×2, 3×3), whose filters
/// are packed transformed: [`PackedFilters::for_input`] packs for the algorithm [`conv`] would
/// use on that input, [`PackedFilters::suits`] tells whether a packing still matches a new one.
pub struct PackedFilters {
    packed: fast::Packed,
    weight_shape: Shape,
    groups: usize,
    mode: KernelMode,
}

impl std::fmt::Debug for PackedFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedFilters")
            .field("weight_shape", &self.weight_shape)
            .field("groups", &self.groups)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PackedFilters {
    /// Packs `w [C_out, C_in/G, *F]` for convolutions with `spec`'s groups and mode (its
    /// stride, padding and dilation do not enter). The weights are checked as [`conv`] checks
    /// them, against an input of one image that just fits.
    pub fn new<const N: usize>(w: &Tensor, spec: &ConvSpec<N>) -> Result<Self> {
        let dims = w.dims();
        if dims.len() != N + 2 {
            return Err(Error::shape(
                ConvSpec::<N>::op_name(),
                format!("the weight must be [C_out, C_in/groups, {N} kernel sizes], got {}", w.shape()),
            ));
        }
        // The smallest input the filters fit, to reuse the geometry's checks and numbers.
        let span = |a: usize| spec.dilation[a] * dims[2 + a].saturating_sub(1) + 1;
        let mut input = vec![1, dims[1] * spec.groups.max(1)];
        input.extend((0..N).map(|a| span(a) * spec.stride[a].max(1)));
        let g = ConvSpec::<N> { padding: Padding::valid(), ..*spec }.geometry(&input, dims)?;
        Ok(PackedFilters {
            packed: fast::Packed::Direct(fast::pack_filters(&g, &oriented(w, &g, spec.mode))),
            weight_shape: w.shape().clone(),
            groups: spec.groups,
            mode: spec.mode,
        })
    }

    /// Packs `w` for the algorithm [`conv`] uses on an input of shape `input` (Winograd's
    /// transformed filters for a large enough 3×3 stride-1 layer, the plain packing otherwise),
    /// so that [`conv_prepacked`] on that input gives [`conv`]'s results bit for bit.
    pub fn for_input<const N: usize>(w: &Tensor, spec: &ConvSpec<N>, input: &[usize]) -> Result<Self> {
        let g = spec.geometry(input, w.dims())?;
        Ok(PackedFilters {
            packed: fast::Packed::for_geometry(&g, &oriented(w, &g, spec.mode)),
            weight_shape: w.shape().clone(),
            groups: spec.groups,
            mode: spec.mode,
        })
    }

    /// Whether these filters are what [`PackedFilters::for_input`] would pack for `input` (false
    /// also when `input` does not fit them).
    pub fn suits<const N: usize>(&self, spec: &ConvSpec<N>, input: &[usize]) -> bool {
        (spec.groups, spec.mode) == (self.groups, self.mode)
            && spec.geometry(input, self.weight_shape.dims()).is_ok_and(|g| self.packed.suits(&g))
    }

    /// The shape of the weights these filters were packed from.
    pub fn weight_shape(&self) -> &Shape {
        &self.weight_shape
    }
}

/// [`conv`], or with `relu` [`conv_relu`], over filters packed beforehand: the same results, bit
/// for bit, when the filters [`PackedFilters::suits`] the input (otherwise the other algorithm's
/// rounding). `spec` must have the groups and mode the filters were packed for.
pub fn conv_prepacked<const N: usize>(
    x: &Tensor,
    filters: &PackedFilters,
    bias: Option<&Tensor>,
    spec: &ConvSpec<N>,
    relu: bool,
) -> Result<Tensor> {
    if (spec.groups, spec.mode) != (filters.groups, filters.mode) {
        return Err(Error::invalid(
            ConvSpec::<N>::op_name(),
            format!(
                "the filters were packed for groups={} and {:?}, the convolution has groups={} and {:?}",
                filters.groups, filters.mode, spec.groups, spec.mode
            ),
        ));
    }
    let g = spec.geometry(x.dims(), filters.weight_shape.dims())?;
    check_bias::<N>(&g, bias)?;
    if !filters.packed.can_compute(&g) {
        return Err(Error::invalid(
            ConvSpec::<N>::op_name(),
            "the filters were packed for Winograd's F(2×2, 3×3), which needs a 2D 3×3 convolution with \
             stride 1, dilation 1 and no groups; pack them with PackedFilters::new for this one"
                .to_string(),
        ));
    }
    let y = fast::forward_prepacked(&g, x.data(), &filters.packed, bias.map(Tensor::data), relu);
    Ok(Tensor::from_parts(g.output_shape(), y))
}

/// `x [N, C_in, W]`, `w [C_out, C_in/G, F]`.
pub fn conv1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, spec: &ConvSpec<1>) -> Result<Tensor> {
    conv(x, w, bias, spec)
}

/// `x [N, C_in, H, W]`, `w [C_out, C_in/G, F_h, F_w]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, spec: &ConvSpec<2>) -> Result<Tensor> {
    conv(x, w, bias, spec)
}

/// `x [N, C_in, D, H, W]`, `w [C_out, C_in/G, F_d, F_h, F_w]`.
pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, spec: &ConvSpec<3>) -> Result<Tensor> {
    conv(x, w, bias, spec)
}

/// The gradients of a convolution with respect to its three operands, for an upstream gradient
/// `dy` of the output's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGrads {
    /// `dx [N, C_in, *I]`.
    pub input: Tensor,
    /// `dw [C_out, C_in/G, *F]`, with respect to the weight as given (unflipped, whatever the mode).
    pub weight: Tensor,
    /// `db [C_out]`: `dy` summed over the images and the output positions, whether or not the
    /// forward had a bias ([`conv_backward_wanted`] skips it).
    pub bias: Tensor,
}

/// The gradients of a convolution with respect to its parameters only, for a layer whose input
/// needs none (a network's first layer reads the images).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvParamGrads {
    /// `dw [C_out, C_in/G, *F]`, as in [`ConvGrads::weight`].
    pub weight: Tensor,
    /// `db [C_out]`, as in [`ConvGrads::bias`].
    pub bias: Tensor,
}

/// Which gradients a backward pass computes besides the weight's: `dx` only where the input
/// needs one (not at a network's first layer), `db` only where the layer has a bias (not before a
/// batch norm). Each skipped one is a pass over `dy` or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGradsWanted {
    /// Compute `dx`.
    pub input: bool,
    /// Compute `db`.
    pub bias: bool,
}

/// The gradients a [`ConvGradsWanted`] asked for: `None` where it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGradsSome {
    /// `dx`, as in [`ConvGrads::input`].
    pub input: Option<Tensor>,
    /// `dw`, as in [`ConvGrads::weight`].
    pub weight: Tensor,
    /// `db`, as in [`ConvGrads::bias`].
    pub bias: Option<Tensor>,
}

/// A backward kernel: geometry, input, weights (already flipped if asked), `dy`, which gradients
/// are wanted → `(dx, dw, db)`; `dx` and `db` may be empty when they were not wanted.
type BackwardKernel =
    fn(&ConvGeometry, &[f32], &[f32], &[f32], ConvGradsWanted) -> (Vec<f32>, Vec<f32>, Vec<f32>);

/// Validates the operands and `dy`, and runs a backward kernel. For [`KernelMode::Convolution`]
/// the forward correlates with the flipped kernel, so the kernel sees the flipped weights and the
/// gradient it returns is flipped back onto the weights as given.
fn run_backward<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
    kernel: BackwardKernel,
    wanted: ConvGradsWanted,
) -> Result<ConvGradsSome> {
    let g = spec.geometry(x.dims(), w.dims())?;
    check_output_gradient::<N>(&g, dy, w)?;
    let (dx, dw, db) = match spec.mode {
        KernelMode::CrossCorrelation => kernel(&g, x.data(), w.data(), dy.data(), wanted),
        KernelMode::Convolution => {
            let flipped = flip_kernel(w.data(), g.kernel_volume());
            let (dx, dw_flipped, db) = kernel(&g, x.data(), &flipped, dy.data(), wanted);
            (dx, flip_kernel(&dw_flipped, g.kernel_volume()), db)
        }
    };
    Ok(ConvGradsSome {
        input: wanted.input.then(|| Tensor::from_parts(g.input_shape(), dx)),
        weight: Tensor::from_parts(g.weight_shape(), dw),
        bias: wanted.bias.then(|| Tensor::from_parts(Shape::new(vec![g.out_channels]), db)),
    })
}

/// `dy` must have the shape the size rule gives the output.
fn check_output_gradient<const N: usize>(g: &ConvGeometry, dy: &Tensor, w: &Tensor) -> Result<()> {
    let output = g.output_shape();
    if dy.dims() != output.dims() {
        return Err(Error::shape(
            ConvSpec::<N>::op_name(),
            format!(
                "the output gradient must have the output's shape {output}, got {} (input {}, weight {})",
                dy.shape(),
                g.input_shape(),
                w.shape()
            ),
        ));
    }
    Ok(())
}

/// The gradients of a backward run that asked for all three.
fn all_three(grads: ConvGradsSome) -> ConvGrads {
    let (Some(input), Some(bias)) = (grads.input, grads.bias) else {
        unreachable!("`run_backward` returns every gradient it was asked for")
    };
    ConvGrads { input, weight: grads.weight, bias }
}

const ALL: ConvGradsWanted = ConvGradsWanted { input: true, bias: true };

/// The gradients of [`conv`] with the fast kernels: `x` and `w` as in the forward, `dy` of the
/// output's shape. The bias does not enter: the gradients do not depend on it.
///
/// ```
/// use stride_tensor::Tensor;
/// use stride_tensor::ops::conv::{ConvSpec, conv_backward};
/// let x = Tensor::new([1, 1, 3], vec![1.0, 2.0, 3.0]).unwrap();
/// let w = Tensor::new([1, 1, 2], vec![1.0, 10.0]).unwrap();
/// let dy = Tensor::new([1, 1, 2], vec![1.0, 1.0]).unwrap();
/// let grads = conv_backward(&x, &w, &dy, &ConvSpec::<1>::new()).unwrap();
/// assert_eq!(grads.input.data(), &[1.0, 11.0, 10.0]);
/// assert_eq!(grads.weight.data(), &[3.0, 5.0]);
/// assert_eq!(grads.bias.data(), &[2.0]);
/// ```
pub fn conv_backward<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
) -> Result<ConvGrads> {
    Ok(all_three(run_backward(x, w, dy, spec, fast::backward, ALL)?))
}

/// The weight and bias gradients of [`conv`] without the input's, with the fast kernels: what
/// backpropagation needs at a layer whose input is data, where `dx` would be thrown away.
pub fn conv_backward_params<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
) -> Result<ConvParamGrads> {
    let grads = run_backward(x, w, dy, spec, fast::backward, ConvGradsWanted { input: false, bias: true })?;
    let Some(bias) = grads.bias else {
        unreachable!("`run_backward` returns every gradient it was asked for")
    };
    Ok(ConvParamGrads { weight: grads.weight, bias })
}

/// The gradients a [`ConvGradsWanted`] asks for, with the fast kernels (the weight's always):
/// what backpropagation computes at a layer, skipping `dx` where the input is data and `db`
/// where the layer has no bias.
pub fn conv_backward_wanted<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
    wanted: ConvGradsWanted,
) -> Result<ConvGradsSome> {
    run_backward(x, w, dy, spec, fast::backward, wanted)
}

/// The input gradient of [`conv`] alone, with the fast kernels: what backpropagation needs at a
/// layer whose weights are frozen. Only the input's shape enters, not its values.
///
/// ```
/// use stride_tensor::Tensor;
/// use stride_tensor::ops::conv::{ConvSpec, conv_backward_input};
/// let w = Tensor::new([1, 1, 2], vec![1.0, 10.0]).unwrap();
/// let dy = Tensor::new([1, 1, 2], vec![1.0, 1.0]).unwrap();
/// let dx = conv_backward_input(&[1, 1, 3], &w, &dy, &ConvSpec::<1>::new()).unwrap();
/// assert_eq!(dx.data(), &[1.0, 11.0, 10.0]);
/// ```
pub fn conv_backward_input<const N: usize>(
    input_shape: &[usize],
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
) -> Result<Tensor> {
    let g = spec.geometry(input_shape, w.dims())?;
    check_output_gradient::<N>(&g, dy, w)?;
    let dx = match spec.mode {
        KernelMode::CrossCorrelation => fast::backward_input_only(&g, w.data(), dy.data()),
        KernelMode::Convolution => {
            fast::backward_input_only(&g, &flip_kernel(w.data(), g.kernel_volume()), dy.data())
        }
    };
    Ok(Tensor::from_parts(g.input_shape(), dx))
}

/// The same gradients from the plain loops of [`reference`]; slow, kept to define and test.
pub fn conv_backward_reference<const N: usize>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    spec: &ConvSpec<N>,
) -> Result<ConvGrads> {
    Ok(all_three(run_backward(x, w, dy, spec, reference::backward, ALL)?))
}
