//! Differentiable convolution, pooling and local response normalisation: the forward kernels of
//! `crate::ops`, with backward structs that call their backward kernels.

use super::{Backward, Var};
use crate::error::Result;
use crate::ops::conv::{ConvGradsWanted, ConvSpec, conv as conv_kernel, conv_backward_wanted};
use crate::ops::lrn::{local_response_norm as lrn_kernel, local_response_norm_backward};
use crate::ops::pool::{self, PoolSpec};
use crate::tensor::Tensor;

struct ConvBackward<const N: usize> {
    spec: ConvSpec<N>,
}

impl<const N: usize> Backward for ConvBackward<N> {
    fn name(&self) -> &'static str {
        ["conv1d", "conv2d", "conv3d"][N.clamp(1, 3) - 1]
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (inputs[0].value(), inputs[1].value());
        // A first layer's input is data, and a layer before a batch norm has no bias: their
        // gradients would be computed only to be dropped.
        let wanted = ConvGradsWanted { input: inputs[0].requires_grad(), bias: inputs.len() == 3 };
        let grads = conv_backward_wanted(x, w, grad, &self.spec, wanted)?;
        let mut out = vec![grads.input, Some(grads.weight)];
        if wanted.bias {
            out.push(grads.bias);
        }
        Ok(out)
    }
}

/// Convolution over `N` spatial axes (see `crate::ops::conv` for shapes and the spec).
pub fn conv<const N: usize>(x: &Var, w: &Var, bias: Option<&Var>, spec: &ConvSpec<N>) -> Result<Var> {
    let y = conv_kernel(x.value(), w.value(), bias.map(Var::value), spec)?;
    let mut inputs = vec![x.clone(), w.clone()];
    inputs.extend(bias.cloned());
    Ok(Var::from_op(y, inputs, ConvBackward { spec: *spec }))
}

struct MaxPoolBackward<const N: usize> {
    spec: PoolSpec<N>,
    indices: Vec<usize>,
}

impl<const N: usize> Backward for MaxPoolBackward<N> {
    fn name(&self) -> &'static str {
        "max_pool"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(pool::max_pool_backward(inputs[0].value(), &self.indices, grad, &self.spec)?)])
    }
}

/// Max pooling; the gradient goes to each window's maximum.
pub fn max_pool<const N: usize>(x: &Var, spec: &PoolSpec<N>) -> Result<Var> {
    // Without a graph to record (inference, or an input that needs no gradient) the indices
    // would be computed, and allocated, only to be dropped.
    if !super::is_recording() || !x.requires_grad() {
        return Ok(Var::constant(pool::max_pool(x.value(), spec)?));
    }
    let (y, indices) = pool::max_pool_with_indices(x.value(), spec)?;
    Ok(Var::from_op(y, vec![x.clone()], MaxPoolBackward { spec: *spec, indices }))
}

struct AvgPoolBackward<const N: usize> {
    spec: PoolSpec<N>,
}

impl<const N: usize> Backward for AvgPoolBackward<N> {
    fn name(&self) -> &'static str {
        "avg_pool"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(pool::avg_pool_backward(inputs[0].value().dims(), grad, &self.spec)?)])
    }
}

/// Average pooling; each window spreads its gradient over the inputs it averaged.
pub fn avg_pool<const N: usize>(x: &Var, spec: &PoolSpec<N>) -> Result<Var> {
    Ok(Var::from_op(pool::avg_pool(x.value(), spec)?, vec![x.clone()], AvgPoolBackward { spec: *spec }))
}

struct AdaptiveAvgPoolBackward<const N: usize>;

impl<const N: usize> Backward for AdaptiveAvgPoolBackward<N> {
    fn name(&self) -> &'static str {
        "adaptive_avg_pool"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(pool::adaptive_avg_pool_backward::<N>(inputs[0].value().dims(), grad)?)])
    }
}

/// Adaptive average pooling to a fixed output size (torchvision's `AdaptiveAvgPool2d`).
pub fn adaptive_avg_pool<const N: usize>(x: &Var, output: [usize; N]) -> Result<Var> {
    Ok(Var::from_op(
        pool::adaptive_avg_pool(x.value(), output)?,
        vec![x.clone()],
        AdaptiveAvgPoolBackward::<N>,
    ))
}

struct GlobalAvgPoolBackward;

impl Backward for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(pool::global_avg_pool_backward(inputs[0].value().dims(), grad)?)])
    }
}

/// Global average pooling `[N, C, *S] → [N, C, 1, …]` (GoogLeNet, ResNet).
pub fn global_avg_pool(x: &Var) -> Result<Var> {
    Ok(Var::from_op(pool::global_avg_pool(x.value())?, vec![x.clone()], GlobalAvgPoolBackward))
}

struct LrnBackward {
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
}

impl Backward for LrnBackward {
    fn name(&self) -> &'static str {
        "local_response_norm"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let dx =
            local_response_norm_backward(inputs[0].value(), grad, self.size, self.alpha, self.beta, self.k)?;
        Ok(vec![Some(dx)])
    }
}

/// Local response normalisation across channels (AlexNet, ZFNet), PyTorch's semantics.
pub fn local_response_norm(x: &Var, size: usize, alpha: f32, beta: f32, k: f32) -> Result<Var> {
    let y = lrn_kernel(x.value(), size, alpha, beta, k)?;
    Ok(Var::from_op(y, vec![x.clone()], LrnBackward { size, alpha, beta, k }))
}
