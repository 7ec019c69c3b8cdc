//! Gradient checking by central finite differences, for every differentiable operation.
//!
//! The scalar checked is `L = Σ y ⊙ r` for a fixed pseudo-random `r` (so every output element
//! matters), accumulated in f64. Each input element is nudged by ±ε and
//! `(L(x+ε) − L(x−ε)) / 2ε` is compared with the gradient `backward_with(r)` produced.

use super::Var;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Tolerances of a check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    pub epsilon: f32,
    pub absolute: f64,
    pub relative: f64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { epsilon: 1e-2, absolute: 2e-3, relative: 2e-2 }
    }
}

fn projection(shape: &crate::Shape, seed: u64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from_fn(shape.clone(), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn weighted_sum(y: &Tensor, r: &Tensor) -> f64 {
    y.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Checks the gradients of `f` with respect to each of `inputs` (all treated as parameters).
/// Returns an error naming the input, the element, and both values at the first mismatch.
pub fn check_gradients(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    tolerances: GradCheck,
) -> Result<()> {
    let vars: Vec<Var> = inputs.iter().cloned().map(Var::parameter).collect();
    let y = f(&vars)?;
    let r = projection(y.value().shape(), 7)?;
    y.backward_with(r.clone())?;
    for (index, (input, var)) in inputs.iter().zip(&vars).enumerate() {
        let analytic = var.grad().unwrap_or(Tensor::zeros(input.shape().clone())?);
        for element in 0..input.numel() {
            let evaluate = |delta: f32| -> Result<f64> {
                let nudged: Vec<Var> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let mut t = t.clone();
                        if i == index {
                            t.data_mut()[element] += delta;
                        }
                        Var::constant(t)
                    })
                    .collect();
                Ok(weighted_sum(f(&nudged)?.value(), &r))
            };
            let eps = tolerances.epsilon;
            let numeric = (evaluate(eps)? - evaluate(-eps)?) / (2.0 * eps as f64);
            let got = analytic.data()[element] as f64;
            if (got - numeric).abs() > tolerances.absolute + tolerances.relative * numeric.abs() {
                return Err(Error::invalid(
                    "check_gradients",
                    format!(
                        "input {index} (shape {}), element {element}: backward gives {got:.6}, \
                         finite differences give {numeric:.6}",
                        input.shape()
                    ),
                ));
            }
        }
    }
    Ok(())
}
