//! Layers named and laid out as torchvision's: `Conv1d/2d/3d`, `Linear`, activations, pooling,
//! `LocalResponseNorm`, `Flatten`. Parameter shapes and paths follow PyTorch's state_dict
//! (`weight [out, in/groups, *k]`, `bias [out]`), so weights move between the two by name.

use stride_tensor::autograd::{self, Var};
use stride_tensor::ops::conv::{ConvSpec, PackedFilters, Padding, conv_prepacked};
use stride_tensor::ops::layout::flatten_shape;
use stride_tensor::ops::pool::{PoolKind, PoolSpec};
use stride_tensor::{Error, Result, Shape, Tensor};

use crate::module::{Mode, Module, NamedVar, join};

/// Convolution over `N` spatial axes with learnable filters and an optional bias.
pub struct Conv<const N: usize> {
    pub weight: Var,
    pub bias: Option<Var>,
    pub spec: ConvSpec<N>,
    /// The ReLU after this layer runs inside it ([`Conv::fuse_relu`]).
    fused_relu: bool,
    /// The filters packed for the fast kernels, kept between calls that record no gradients
    /// (inference, validation), with the weight's [`Var::value_version`] and the spec they were
    /// packed from: a new or updated weight, or another spec, packs again.
    packed: Option<((u64, u64), ConvSpec<N>, PackedFilters)>,
}

pub type Conv1d = Conv<1>;
pub type Conv2d = Conv<2>;
pub type Conv3d = Conv<3>;

impl<const N: usize> Conv<N> {
    /// A layer over given weights `[out, in/groups, *k]` and bias `[out]`, checked against each
    /// other and the spec.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, spec: ConvSpec<N>) -> Result<Self> {
        let name = ["Conv1d", "Conv2d", "Conv3d"][N.clamp(1, 3) - 1];
        if weight.rank() != N + 2 {
            return Err(Error::shape(
                name,
                format!("weight must have {} dimensions, got {}", N + 2, weight.shape()),
            ));
        }
        if let Some(b) = &bias
            && b.dims() != [weight.dims()[0]]
        {
            return Err(Error::shape(
                name,
                format!("bias {} does not match weight {}", b.shape(), weight.shape()),
            ));
        }
        Ok(Conv {
            weight: Var::parameter(weight),
            bias: bias.map(Var::parameter),
            spec,
            fused_relu: false,
            packed: None,
        })
    }

    /// Applies the ReLU that follows this layer as each output is written (the inference path's
    /// fused epilogue, [`stride_tensor::ops::conv::conv_relu`]): one pass over the output
    /// instead of two. The caller drops its own ReLU. While gradients are being recorded the
    /// layer runs the convolution and the ReLU as two differentiable steps, with the same result.
    pub fn fuse_relu(&mut self) {
        self.fused_relu = true;
    }

    /// Whether [`Conv::fuse_relu`] was called.
    pub fn relu_fused(&self) -> bool {
        self.fused_relu
    }
}

impl<const N: usize> Module for Conv<N> {
    fn describe(&self) -> String {
        let w = self.weight.value().dims();
        let mut text = format!(
            "Conv{N}d({}, {}, kernel_size={:?}, stride={:?}",
            w[1] * self.spec.groups,
            w[0],
            &w[2..],
            self.spec.stride
        );
        match self.spec.padding {
            Padding::Same => text.push_str(", padding=same"),
            Padding::Explicit { begin, end } if begin == end => {
                text.push_str(&format!(", padding={begin:?}"))
            }
            Padding::Explicit { begin, end } => text.push_str(&format!(", padding=({begin:?}, {end:?})")),
        }
        if self.spec.dilation != [1; N] {
            text.push_str(&format!(", dilation={:?}", self.spec.dilation));
        }
        if self.spec.groups != 1 {
            text.push_str(&format!(", groups={}", self.spec.groups));
        }
        if self.bias.is_none() {
            text.push_str(", bias=False");
        }
        text + ")"
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        let bias = self.bias.as_ref();
        if autograd::is_recording() {
            // Training: the weights change after every step, a cached packing would be stale.
            self.packed = None;
            let y = autograd::conv(x, &self.weight, bias, &self.spec)?;
            return Ok(if self.fused_relu { autograd::relu(&y) } else { y });
        }
        let key = (self.weight.value_version(), self.spec);
        let filters = match self.packed.take() {
            // A new input size can change the algorithm (and so the packing) the layer uses.
            Some((version, spec, filters))
                if (version, spec) == key && filters.suits(&self.spec, x.value().dims()) =>
            {
                filters
            }
            _ => PackedFilters::for_input(self.weight.value(), &self.spec, x.value().dims())?,
        };
        let y = conv_prepacked(x.value(), &filters, bias.map(Var::value), &self.spec, self.fused_relu);
        self.packed = Some((key.0, key.1, filters));
        Ok(Var::constant(y?))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(self.spec.output_shape(input, self.weight.value().dims())?.dims().to_vec())
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        out.push((join(prefix, "weight"), &mut self.weight));
        if let Some(b) = self.bias.as_mut() {
            out.push((join(prefix, "bias"), b));
        }
    }

    fn own_parameters(&self) -> usize {
        self.weight.value().numel() + self.bias.as_ref().map_or(0, |b| b.value().numel())
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn floors(&self, input: &[usize]) -> bool {
        let Padding::Explicit { begin, end } = self.spec.padding else { return false };
        let kernel = &self.weight.value().dims()[2..];
        (0..N).any(|a| {
            let reach = self.spec.dilation[a] * kernel[a].saturating_sub(1) + 1;
            let span = input.get(2 + a).map_or(0, |i| i + begin[a] + end[a]);
            span >= reach && !(span - reach).is_multiple_of(self.spec.stride[a].max(1))
        })
    }

    /// Every output value takes `C_in/G · |F|` multiply-adds (the bias is not counted).
    fn mult_adds(&self, _input: &[usize], output: &[usize]) -> u64 {
        let per_output: usize = self.weight.value().dims()[1..].iter().product();
        output.iter().product::<usize>() as u64 * per_output as u64
    }
}

/// `y = x·Wᵀ + b`, `W [out, in]`.
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
}

impl Linear {
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.rank() != 2 {
            return Err(Error::shape("Linear", format!("weight must be [out, in], got {}", weight.shape())));
        }
        if let Some(b) = &bias
            && b.dims() != [weight.dims()[0]]
        {
            return Err(Error::shape(
                "Linear",
                format!("bias {} does not match weight {}", b.shape(), weight.shape()),
            ));
        }
        Ok(Linear { weight: Var::parameter(weight), bias: bias.map(Var::parameter) })
    }
}

impl Module for Linear {
    fn describe(&self) -> String {
        let w = self.weight.value().dims();
        format!("Linear(in_features={}, out_features={}, bias={})", w[1], w[0], self.bias.is_some())
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        autograd::linear(x, &self.weight, self.bias.as_ref()).map_err(|e| e.within("Linear"))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (out, inp) = (self.weight.value().dims()[0], self.weight.value().dims()[1]);
        match input {
            [n, features] if *features == inp => Ok(vec![*n, out]),
            _ => {
                let hint = if input.len() > 2 { "; flatten the volume first" } else { "" };
                Err(Error::shape(
                    "Linear",
                    format!("expects [N, {inp}] (in_features = {inp}), got {}{hint}", Shape::from(input)),
                ))
            }
        }
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        out.push((join(prefix, "weight"), &mut self.weight));
        if let Some(b) = self.bias.as_mut() {
            out.push((join(prefix, "bias"), b));
        }
    }

    fn own_parameters(&self) -> usize {
        self.weight.value().numel() + self.bias.as_ref().map_or(0, |b| b.value().numel())
    }

    /// `in_features` multiply-adds per output value.
    fn mult_adds(&self, _input: &[usize], output: &[usize]) -> u64 {
        output.iter().product::<usize>() as u64 * self.weight.value().dims()[1] as u64
    }
}

/// Element-wise activations, each a layer without parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    ReLU,
    LeakyReLU(f32),
    Tanh,
    Sigmoid,
}

impl Module for Activation {
    fn describe(&self) -> String {
        match self {
            Activation::ReLU => "ReLU()".into(),
            Activation::LeakyReLU(slope) => format!("LeakyReLU(negative_slope={slope})"),
            Activation::Tanh => "Tanh()".into(),
            Activation::Sigmoid => "Sigmoid()".into(),
        }
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        Ok(match *self {
            Activation::ReLU => autograd::relu(x),
            Activation::LeakyReLU(slope) => autograd::leaky_relu(x, slope),
            Activation::Tanh => autograd::tanh(x),
            Activation::Sigmoid => autograd::sigmoid(x),
        })
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
}

/// Stands where a layer was whose work the layer before it now does (a ReLU fused into the
/// convolution before it, [`Conv::fuse_relu`]): passes its input through, and prints and
/// reports its output under the replaced layer's name.
pub struct FusedInto {
    replaced: String,
}

impl FusedInto {
    /// In place of the layer described as `replaced` (`ReLU()`).
    pub fn new(replaced: String) -> Self {
        FusedInto { replaced }
    }
}

impl Module for FusedInto {
    fn describe(&self) -> String {
        self.replaced.clone()
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        Ok(x.clone())
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
}

/// Max or average pooling over `N` spatial axes.
pub struct Pool<const N: usize> {
    pub kind: PoolKind,
    pub spec: PoolSpec<N>,
}

pub type MaxPool2d = Pool<2>;

impl<const N: usize> Pool<N> {
    pub fn max(spec: PoolSpec<N>) -> Self {
        Pool { kind: PoolKind::Max, spec }
    }

    pub fn avg(spec: PoolSpec<N>) -> Self {
        Pool { kind: PoolKind::Avg, spec }
    }
}

impl<const N: usize> Module for Pool<N> {
    fn describe(&self) -> String {
        let kind = if self.kind == PoolKind::Max { "Max" } else { "Avg" };
        format!(
            "{kind}Pool{N}d(kernel_size={:?}, stride={:?}, padding={:?}, ceil_mode={})",
            self.spec.kernel, self.spec.stride, self.spec.padding, self.spec.ceil_mode
        )
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        match self.kind {
            PoolKind::Max => autograd::max_pool(x, &self.spec),
            PoolKind::Avg => autograd::avg_pool(x, &self.spec),
        }
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(self.spec.output_shape(self.kind, input)?.dims().to_vec())
    }

    /// In ceil mode the remainder makes a last partial window instead of being dropped.
    fn floors(&self, input: &[usize]) -> bool {
        let s = &self.spec;
        !s.ceil_mode
            && (0..N).any(|a| {
                let reach = s.dilation[a] * s.kernel[a].saturating_sub(1) + 1;
                let span = input.get(2 + a).map_or(0, |i| i + 2 * s.padding[a]);
                span >= reach && !(span - reach).is_multiple_of(s.stride[a].max(1))
            })
    }
}

/// Average pooling to a fixed output size (`AdaptiveAvgPool2d((1, 1))` is global average
/// pooling, GoogLeNet's and ResNet's head).
pub struct AdaptiveAvgPool<const N: usize> {
    pub output: [usize; N],
}

impl<const N: usize> Module for AdaptiveAvgPool<N> {
    fn describe(&self) -> String {
        format!("AdaptiveAvgPool{N}d(output_size={:?})", self.output)
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        autograd::adaptive_avg_pool(x, self.output)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.len() != N + 2 {
            return Err(Error::shape(
                format!("adaptive_avg_pool{N}d"),
                format!("expects a {}-d input [N, C, …], got {}", N + 2, Shape::from(input)),
            ));
        }
        Ok([&input[..2], &self.output[..]].concat())
    }
}

/// Flattens axes `start..=end` (PyTorch's `nn.Flatten()` flattens all but the batch axis).
pub struct Flatten {
    pub start_axis: isize,
    pub end_axis: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_axis: 1, end_axis: -1 }
    }
}

impl Module for Flatten {
    fn describe(&self) -> String {
        format!("Flatten(start_dim={}, end_dim={})", self.start_axis, self.end_axis)
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        autograd::flatten(x, self.start_axis, self.end_axis)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(flatten_shape(&Shape::from(input), self.start_axis, self.end_axis)?.dims().to_vec())
    }
}

/// Local response normalisation across channels (AlexNet: size 5, α 1e-4, β 0.75, k 2).
pub struct LocalResponseNorm {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl Module for LocalResponseNorm {
    fn describe(&self) -> String {
        format!("LocalResponseNorm({}, alpha={}, beta={}, k={})", self.size, self.alpha, self.beta, self.k)
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        autograd::local_response_norm(x, self.size, self.alpha, self.beta, self.k)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
}

/// Dropout: in training, zeroes each element with probability `p` and scales the rest by
/// `1/(1−p)`; in evaluation, the identity. Its own seeded generator makes a run reproducible.
pub struct Dropout {
    pub p: f32,
    rng: rand_chacha::ChaCha8Rng,
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("p must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p, rng: crate::init::rng(seed) })
    }
}

impl Module for Dropout {
    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        if mode == Mode::Eval || self.p == 0.0 {
            return Ok(x.clone());
        }
        use rand::Rng;
        let keep = 1.0 / (1.0 - self.p);
        let rng = &mut self.rng;
        let mask = Tensor::from_fn(x.value().shape().clone(), |_| {
            if rng.random::<f32>() < self.p { 0.0 } else { keep }
        })?;
        autograd::mul(x, &Var::constant(mask))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_the_expected_share_and_scale_and_is_off_in_eval() {
        let mut dropout = Dropout::new(0.25, 7).unwrap();
        let x = Var::constant(Tensor::ones([10_000]).unwrap());
        let y = dropout.forward(&x, Mode::Train).unwrap();
        let kept = y.value().data().iter().filter(|&&v| v != 0.0).count();
        assert!((7_200..7_800).contains(&kept), "{kept}");
        assert!(y.value().data().iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let mean = y.value().data().iter().sum::<f32>() / 10_000.0;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        assert_eq!(dropout.forward(&x, Mode::Eval).unwrap().value(), x.value());
        assert!(Dropout::new(1.0, 0).is_err());
    }

    /// Inference reuses the packed filters, and packs again whenever the weights or the spec
    /// change, however they change.
    #[test]
    fn conv_packed_filters_follow_the_weights() {
        use stride_tensor::autograd::no_grad;
        use stride_tensor::ops::conv::conv;
        let x = Tensor::from_fn([2, 3, 9, 9], |i| ((i[1] * 31 + i[2] * 7 + i[3]) % 13) as f32 - 6.0).unwrap();
        let w = Tensor::from_fn([4, 3, 3, 3], |i| ((i[0] * 5 + i[1] * 3 + i[2] + i[3]) % 7) as f32 - 3.0)
            .unwrap();
        let mut layer = Conv2d::from_parts(w.clone(), None, ConvSpec::new().padding(1)).unwrap();
        let run = |layer: &mut Conv2d| {
            no_grad(|| layer.forward(&Var::constant(x.clone()), Mode::Eval)).unwrap().value().clone()
        };
        let expected = |w: &Tensor, spec: &ConvSpec<2>| conv(&x, w, None, spec).unwrap();
        assert_eq!(run(&mut layer), expected(&w, &layer.spec));
        assert_eq!(run(&mut layer), expected(&w, &layer.spec), "from the cache");

        // In place, as an optimiser updates it.
        layer.weight.value_mut().unwrap().data_mut().iter_mut().for_each(|v| *v *= 2.0);
        let doubled = layer.weight.value().clone();
        assert_eq!(run(&mut layer), expected(&doubled, &layer.spec));
        // Replaced, as loading weights does.
        layer.weight = Var::parameter(w.clone());
        assert_eq!(run(&mut layer), expected(&w, &layer.spec));
        // Another spec over the same weights.
        layer.spec = ConvSpec::new().stride(2);
        assert_eq!(run(&mut layer), expected(&w, &layer.spec));
        // A training step's forward drops the cache and records the graph.
        let y = layer.forward(&Var::constant(x.clone()), Mode::Train).unwrap();
        assert_eq!(y.value(), &expected(&w, &layer.spec));
        assert!(y.requires_grad());
    }
}
