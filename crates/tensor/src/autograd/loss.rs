//! Losses: numerically stable softmax cross-entropy (with optional label smoothing), negative
//! log-likelihood, mean squared error. All average over the batch, as PyTorch's defaults.
//!
//! ```text
//! logits    [N, C]   one row of class scores per example
//! targets   [N]      class indices in 0..C
//! ```

use super::{Backward, Var};
use crate::error::{Error, Result};
use crate::ops::reduce::{log_softmax as log_softmax_kernel, softmax};
use crate::tensor::Tensor;

fn check_classification(op: &str, scores: &Tensor, targets: &[usize]) -> Result<(usize, usize)> {
    scores.expect_rank(op, 2, "[N, C] (one row of class scores per example)")?;
    let (n, classes) = (scores.dims()[0], scores.dims()[1]);
    if targets.len() != n {
        return Err(Error::shape(
            op,
            format!("{} targets for {n} rows of scores (shape {})", targets.len(), scores.shape()),
        ));
    }
    if let Some((row, &t)) = targets.iter().enumerate().find(|&(_, &t)| t >= classes) {
        return Err(Error::shape(op, format!("target {t} of row {row} is not one of the {classes} classes")));
    }
    if n == 0 {
        return Err(Error::shape(op, "an empty batch has no mean loss"));
    }
    Ok((n, classes))
}

struct CrossEntropyBackward {
    /// softmax(logits) − smoothed one-hot targets, divided by N: the gradient for dL = 1.
    grad_logits: Tensor,
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.grad_logits.mul_scalar(grad.item()?))])
    }
}

/// Mean softmax cross-entropy of `logits [N, C]` against class `targets`, with the targets
/// smoothed to `(1 − ε)·one_hot + ε/C` (ε = `label_smoothing`, 0 for none), as
/// `torch.nn.functional.cross_entropy`. Computed through log-softmax, so large logits do not
/// overflow.
pub fn cross_entropy(logits: &Var, targets: &[usize], label_smoothing: f32) -> Result<Var> {
    let op = "cross_entropy";
    let (n, classes) = check_classification(op, logits.value(), targets)?;
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::invalid(op, format!("label smoothing must be in [0, 1), got {label_smoothing}")));
    }
    let log_p = log_softmax_kernel(logits.value(), 1)?;
    let off_target = label_smoothing as f64 / classes as f64;
    let mut total = 0.0f64;
    for (row, &t) in log_p.data().chunks_exact(classes).zip(targets) {
        let smooth: f64 = row.iter().map(|&v| v as f64).sum::<f64>() * off_target;
        total -= (1.0 - label_smoothing as f64) * row[t] as f64 + smooth;
    }
    let mut grad_logits = softmax(logits.value(), 1)?;
    let scale = 1.0 / n as f32;
    for (row, &t) in grad_logits.data_mut().chunks_exact_mut(classes).zip(targets) {
        for (c, v) in row.iter_mut().enumerate() {
            let q = off_target as f32 + if c == t { 1.0 - label_smoothing } else { 0.0 };
            *v = (*v - q) * scale;
        }
    }
    let loss = Tensor::scalar((total / n as f64) as f32);
    Ok(Var::from_op(loss, vec![logits.clone()], CrossEntropyBackward { grad_logits }))
}

struct NllBackward {
    grad_input: Tensor,
}

impl Backward for NllBackward {
    fn name(&self) -> &'static str {
        "nll_loss"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.grad_input.mul_scalar(grad.item()?))])
    }
}

/// Mean negative log-likelihood: `−mean_i log_probs[i, targets[i]]` (the input holds
/// log-probabilities, e.g. from [`log_softmax`]).
pub fn nll_loss(log_probs: &Var, targets: &[usize]) -> Result<Var> {
    let (n, classes) = check_classification("nll_loss", log_probs.value(), targets)?;
    let data = log_probs.value().data();
    let total: f64 = targets.iter().enumerate().map(|(i, &t)| -(data[i * classes + t] as f64)).sum();
    let mut grad_input = Tensor::zeros([n, classes])?;
    for (i, &t) in targets.iter().enumerate() {
        grad_input.data_mut()[i * classes + t] = -1.0 / n as f32;
    }
    Ok(Var::from_op(
        Tensor::scalar((total / n as f64) as f32),
        vec![log_probs.clone()],
        NllBackward { grad_input },
    ))
}

struct MseBackward {
    /// 2 (prediction − target) / count.
    scaled_difference: Tensor,
}

impl Backward for MseBackward {
    fn name(&self) -> &'static str {
        "mse_loss"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let g = self.scaled_difference.mul_scalar(grad.item()?);
        Ok(vec![Some(g.clone()), Some(g.neg())])
    }
}

/// Mean squared error over every element; `prediction` and `target` must have the same shape.
pub fn mse_loss(prediction: &Var, target: &Var) -> Result<Var> {
    if prediction.value().shape() != target.value().shape() {
        return Err(Error::shape(
            "mse_loss",
            format!(
                "prediction {} and target {} must have the same shape",
                prediction.value().shape(),
                target.value().shape()
            ),
        ));
    }
    let difference = prediction.value().sub(target.value())?;
    let count = difference.numel().max(1);
    let total: f64 = difference.data().iter().map(|&d| d as f64 * d as f64).sum();
    let scaled_difference = difference.mul_scalar(2.0 / count as f32);
    Ok(Var::from_op(
        Tensor::scalar((total / count as f64) as f32),
        vec![prediction.clone(), target.clone()],
        MseBackward { scaled_difference },
    ))
}

struct LogSoftmaxBackward {
    axis: isize,
    output: Tensor,
}

impl Backward for LogSoftmaxBackward {
    fn name(&self) -> &'static str {
        "log_softmax"
    }

    /// `dx = dy − softmax(x) · Σ_axis dy`.
    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let probabilities = self.output.exp();
        let total = grad.sum(self.axis, true)?;
        Ok(vec![Some(grad.sub(&probabilities.mul(&total)?)?)])
    }
}

/// `log softmax(x)` along `axis`, stable for large values.
pub fn log_softmax(x: &Var, axis: isize) -> Result<Var> {
    let output = log_softmax_kernel(x.value(), axis)?;
    Ok(Var::from_op(output.clone(), vec![x.clone()], LogSoftmaxBackward { axis, output }))
}
