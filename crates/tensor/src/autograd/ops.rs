//! Differentiable element-wise, matrix and reduction operations.
//!
//! Each operation calls its forward kernel from `crate::ops` and records a backward struct that
//! names what it saved. Broadcasting follows NumPy/PyTorch; the gradient of a broadcast input is
//! summed back to the input's shape.

use super::{Backward, Var};
use crate::buffer::collect_blocks;
use crate::error::{Error, Result};
use crate::ops::elementwise::{CHUNK, zip_map};
use crate::ops::matmul::matmul_t;
use crate::ops::reduce::sum_to_shape;
use crate::tensor::Tensor;

fn reduce_to(grad: Tensor, input: &Var) -> Result<Option<Tensor>> {
    if !input.requires_grad() {
        return Ok(None);
    }
    if grad.shape() == input.value().shape() {
        return Ok(Some(grad));
    }
    Ok(Some(sum_to_shape(&grad, input.value().shape().clone())?))
}

struct AddBackward;

impl Backward for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![reduce_to(grad.clone(), &inputs[0])?, reduce_to(grad.clone(), &inputs[1])?])
    }
}

/// `a + b`, broadcasting.
pub fn add(a: &Var, b: &Var) -> Result<Var> {
    Ok(Var::from_op(a.value().add(b.value())?, vec![a.clone(), b.clone()], AddBackward))
}

struct AddReluBackward;

impl Backward for AddReluBackward {
    fn name(&self) -> &'static str {
        "add_relu"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (xa, xb, g) = (a.value().data(), b.value().data(), grad.data());
        // ReluBackward's rule on the sum, recomputed (the same f32 addition as the forward's),
        // so that the sum need not be kept.
        let gated = collect_blocks(g.len(), CHUNK, 1, |_, at| {
            g[at.clone()]
                .iter()
                .zip(&xa[at.clone()])
                .zip(&xb[at])
                .map(|((&g, &u), &v)| if u + v > 0.0 { g } else { 0.0 })
        });
        let gated = Tensor::from_parts(grad.shape().clone(), gated);
        Ok(match (a.requires_grad(), b.requires_grad()) {
            (true, true) => vec![Some(gated.clone()), Some(gated)],
            (true, false) => vec![Some(gated), None],
            (false, true) => vec![None, Some(gated)],
            (false, false) => vec![None, None],
        })
    }
}

/// `max(a + b, 0)` for two tensors of one shape (a residual block's end), as one operation: one
/// pass instead of two, the sum not kept, and in the backward no separate pass for the ReLU.
/// The same values and gradients as `relu(add(a, b))`, bit for bit.
pub fn add_relu(a: &Var, b: &Var) -> Result<Var> {
    if a.value().dims() != b.value().dims() {
        return Err(Error::shape(
            "add_relu",
            format!(
                "the operands have shapes {} and {}; add_relu does not broadcast",
                a.value().shape(),
                b.value().shape()
            ),
        ));
    }
    let y = zip_map("add_relu", a.value(), b.value(), |u, v| {
        let sum = u + v;
        // As `relu`: NaN kept.
        if sum < 0.0 { 0.0 } else { sum }
    })?;
    Ok(Var::from_op(y, vec![a.clone(), b.clone()], AddReluBackward))
}

struct SubBackward;

impl Backward for SubBackward {
    fn name(&self) -> &'static str {
        "sub"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![reduce_to(grad.clone(), &inputs[0])?, reduce_to(grad.neg(), &inputs[1])?])
    }
}

/// `a − b`, broadcasting.
pub fn sub(a: &Var, b: &Var) -> Result<Var> {
    Ok(Var::from_op(a.value().sub(b.value())?, vec![a.clone(), b.clone()], SubBackward))
}

struct MulBackward;

impl Backward for MulBackward {
    fn name(&self) -> &'static str {
        "mul"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let da = if a.requires_grad() { reduce_to(grad.mul(b.value())?, a)? } else { None };
        let db = if b.requires_grad() { reduce_to(grad.mul(a.value())?, b)? } else { None };
        Ok(vec![da, db])
    }
}

/// `a ⊙ b` (element-wise), broadcasting.
pub fn mul(a: &Var, b: &Var) -> Result<Var> {
    Ok(Var::from_op(a.value().mul(b.value())?, vec![a.clone(), b.clone()], MulBackward))
}

struct ScaleBackward {
    factor: f32,
}

impl Backward for ScaleBackward {
    fn name(&self) -> &'static str {
        "mul_scalar"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.mul_scalar(self.factor))])
    }
}

/// `x · s` for a constant `s`.
pub fn mul_scalar(x: &Var, factor: f32) -> Var {
    Var::from_op(x.value().mul_scalar(factor), vec![x.clone()], ScaleBackward { factor })
}

struct MatmulBackward;

impl Backward for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }

    /// `C = A·B`: `dA = dC·Bᵀ`, `dB = Aᵀ·dC` (summed over a broadcast batch).
    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let da =
            if a.requires_grad() { reduce_to(matmul_t(grad, b.value(), false, true)?, a)? } else { None };
        let db =
            if b.requires_grad() { reduce_to(matmul_t(a.value(), grad, true, false)?, b)? } else { None };
        Ok(vec![da, db])
    }
}

/// Matrix product `[m, k]·[k, n]`, or batched `[b, m, k]·[b, k, n]`.
pub fn matmul(a: &Var, b: &Var) -> Result<Var> {
    Ok(Var::from_op(
        matmul_t(a.value(), b.value(), false, false)?,
        vec![a.clone(), b.clone()],
        MatmulBackward,
    ))
}

struct LinearBackward;

impl Backward for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }

    /// `y = x·Wᵀ + b`: `dx = dy·W`, `dW = dyᵀ·x`, `db = Σ_rows dy`.
    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let dx = if x.requires_grad() { Some(matmul_t(grad, w.value(), false, false)?) } else { None };
        let dw = if w.requires_grad() { Some(matmul_t(grad, x.value(), true, false)?) } else { None };
        let mut grads = vec![dx, dw];
        if let Some(b) = inputs.get(2) {
            grads.push(reduce_to(grad.clone(), b)?);
        }
        Ok(grads)
    }
}

/// A fully connected layer's product `x [N, in] · Wᵀ + b` with `W [out, in]` (PyTorch's
/// layout), without materialising the transpose.
pub fn linear(x: &Var, weight: &Var, bias: Option<&Var>) -> Result<Var> {
    let mut y = matmul_t(x.value(), weight.value(), false, true)?;
    if let Some(b) = bias {
        y = y.add(b.value())?;
    }
    let mut inputs = vec![x.clone(), weight.clone()];
    inputs.extend(bias.cloned());
    Ok(Var::from_op(y, inputs, LinearBackward))
}

/// Backward of an element-wise function through a saved mask or derivative.
struct PointwiseBackward {
    name: &'static str,
    /// dy/dx at every element, saved by the forward.
    derivative: Tensor,
}

impl Backward for PointwiseBackward {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.mul(&self.derivative)?)])
    }
}

/// Passes the gradient where the input was positive; reads the input itself, so the forward
/// saves nothing (a ReLU after every convolution would otherwise keep a mask as large as its
/// output).
struct ReluBackward;

impl Backward for ReluBackward {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0].value();
        Ok(vec![Some(zip_map("relu_backward", grad, x, |g, v| if v > 0.0 { g } else { 0.0 })?)])
    }
}

/// `max(x, 0)`; the gradient at exactly 0 is 0, as in PyTorch.
pub fn relu(x: &Var) -> Var {
    Var::from_op(x.value().relu(), vec![x.clone()], ReluBackward)
}

/// `x` where positive, `slope · x` elsewhere.
pub fn leaky_relu(x: &Var, slope: f32) -> Var {
    let derivative = x.value().map(|v| if v > 0.0 { 1.0 } else { slope });
    Var::from_op(
        x.value().leaky_relu(slope),
        vec![x.clone()],
        PointwiseBackward { name: "leaky_relu", derivative },
    )
}

/// `tanh(x)`, with derivative `1 − tanh²`.
pub fn tanh(x: &Var) -> Var {
    let y = x.value().tanh();
    let derivative = y.map(|t| 1.0 - t * t);
    Var::from_op(y, vec![x.clone()], PointwiseBackward { name: "tanh", derivative })
}

/// `1 / (1 + e^−x)`, with derivative `σ(1 − σ)`.
pub fn sigmoid(x: &Var) -> Var {
    let y = x.value().sigmoid();
    let derivative = y.map(|s| s * (1.0 - s));
    Var::from_op(y, vec![x.clone()], PointwiseBackward { name: "sigmoid", derivative })
}

struct SumAllBackward;

impl Backward for SumAllBackward {
    fn name(&self) -> &'static str {
        "sum"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::full(inputs[0].value().shape().clone(), grad.item()?)?)])
    }
}

/// The sum of every element, as a one-element tensor.
pub fn sum_all(x: &Var) -> Var {
    Var::from_op(Tensor::scalar(x.value().sum_all()), vec![x.clone()], SumAllBackward)
}

/// The mean of every element, as a one-element tensor.
pub fn mean_all(x: &Var) -> Var {
    let count = x.value().numel().max(1) as f32;
    mul_scalar(&sum_all(x), 1.0 / count)
}

/// Moves the gradient back to the input's shape (the elements keep their order).
pub(super) struct ReshapeBackward;

impl Backward for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::new(inputs[0].value().shape().clone(), grad.data().to_vec())?)])
    }
}

/// The same elements under another shape (one dimension may be −1).
pub fn reshape(x: &Var, dims: &[isize]) -> Result<Var> {
    Ok(Var::from_op(x.value().reshape(dims)?, vec![x.clone()], ReshapeBackward))
}
