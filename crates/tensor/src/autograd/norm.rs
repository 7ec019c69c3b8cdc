//! Differentiable batch normalisation: the kernels of `crate::ops::batch_norm` with a backward
//! struct that calls their backward kernel.
//!
//! Shapes: `x [N, C, *S]` with 0 to 3 spatial axes, `γ`, `β`, running statistics `[C]`. Train and
//! eval are two functions, never a flag stored somewhere: the caller (a layer) decides which to
//! call and, in training, folds the returned [`BatchStats`] into its running statistics.

use super::{Backward, Var};
use crate::error::Result;
use crate::ops::batch_norm::{self as kernels, Affine, batch_norm_backward, batch_norm_relu_backward};
use crate::tensor::Tensor;

/// The statistics of one training batch, for the running-statistics update.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// The batch mean per channel `[C]`.
    pub mean: Tensor,
    /// The unbiased batch variance per channel `[C]`, the one PyTorch folds into `running_var`.
    pub var: Tensor,
}

impl BatchStats {
    /// PyTorch's update, `running = (1 − momentum)·running + momentum·batch` (momentum 0.1 in
    /// `nn.BatchNorm2d`).
    pub fn update_running(
        &self,
        running_mean: &mut Tensor,
        running_var: &mut Tensor,
        momentum: f32,
    ) -> Result<()> {
        kernels::update_running_stats(running_mean, running_var, &self.mean, &self.var, momentum)
    }
}

/// What the backward needs: the statistics that normalised `x`, which mode used them, and which
/// of the optional inputs were recorded after `x` (so the input list can be read back).
struct BatchNormBackward {
    mean: Tensor,
    inv_std: Tensor,
    training: bool,
    has_weight: bool,
    has_bias: bool,
    /// With a fused ReLU ([`batch_norm_relu_train`]): the forward's per-channel map.
    relu: Option<Affine>,
}

impl Backward for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let weight = self.has_weight.then(|| inputs[1].value());
        let (x, mean, inv_std) = (inputs[0].value(), &self.mean, &self.inv_std);
        let grads = match &self.relu {
            Some(affine) => batch_norm_relu_backward(x, grad, weight, mean, inv_std, affine)?,
            None => batch_norm_backward(x, grad, weight, mean, inv_std, self.training)?,
        };
        let mut out = vec![Some(grads.input)];
        if self.has_weight {
            out.push(Some(grads.weight));
        }
        if self.has_bias {
            out.push(Some(grads.bias));
        }
        Ok(out)
    }
}

fn inputs(x: &Var, weight: Option<&Var>, bias: Option<&Var>) -> Vec<Var> {
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    inputs
}

/// Training-mode batch normalisation with the batch's statistics. Returns the output and the
/// statistics for the running-statistics update ([`BatchStats::update_running`]).
pub fn batch_norm_train(
    x: &Var,
    weight: Option<&Var>,
    bias: Option<&Var>,
    eps: f32,
) -> Result<(Var, BatchStats)> {
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, as one operation: one pass over the output instead
/// of two, and in the backward no separate pass for the ReLU's gradient. The same values and
/// gradients as `relu(batch_norm_train(x))`, bit for bit.
pub fn batch_norm_relu_train(
    x: &Var,
    weight: Option<&Var>,
    bias: Option<&Var>,
    eps: f32,
) -> Result<(Var, BatchStats)> {
    train(x, weight, bias, eps, true)
}

fn train(
    x: &Var,
    weight: Option<&Var>,
    bias: Option<&Var>,
    eps: f32,
    relu: bool,
) -> Result<(Var, BatchStats)> {
    let (w, b) = (weight.map(Var::value), bias.map(Var::value));
    let out = if relu {
        kernels::batch_norm_relu_train(x.value(), w, b, eps)?
    } else {
        kernels::batch_norm_train(x.value(), w, b, eps)?
    };
    let backward = BatchNormBackward {
        mean: out.mean.clone(),
        inv_std: out.inv_std,
        training: true,
        has_weight: weight.is_some(),
        has_bias: bias.is_some(),
        relu: relu.then_some(out.affine),
    };
    let y = Var::from_op(out.output, inputs(x, weight, bias), backward);
    Ok((y, BatchStats { mean: out.mean, var: out.unbiased_var }))
}

/// Evaluation-mode batch normalisation with the running statistics, which are constants here.
pub fn batch_norm_eval(
    x: &Var,
    weight: Option<&Var>,
    bias: Option<&Var>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Var> {
    let y = kernels::batch_norm_eval(
        x.value(),
        weight.map(Var::value),
        bias.map(Var::value),
        running_mean,
        running_var,
        eps,
    )?;
    let backward = BatchNormBackward {
        mean: running_mean.clone(),
        // The forward validated eps and the shapes; a negative running variance gives NaN as in
        // PyTorch rather than an error.
        inv_std: running_var.map(|v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32),
        training: false,
        has_weight: weight.is_some(),
        has_bias: bias.is_some(),
        relu: None,
    };
    Ok(Var::from_op(y, inputs(x, weight, bias), backward))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check::{GradCheck, check_gradients};

    fn seeded(shape: &[usize], seed: u64, scale: f32, offset: f32) -> Tensor {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Tensor::from_fn(shape.to_vec(), |_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale + offset
        })
        .unwrap()
    }

    #[test]
    fn batch_norm_train_gradients_for_x_gamma_beta() {
        for dims in [&[6, 3][..], &[3, 2, 5][..], &[2, 3, 3, 2][..], &[2, 2, 2, 2, 3][..]] {
            let c = dims[1];
            let inputs = [seeded(dims, 1, 1.5, 0.5), seeded(&[c], 2, 0.5, 1.0), seeded(&[c], 3, 1.0, 0.0)];
            let f = |v: &[Var]| batch_norm_train(&v[0], Some(&v[1]), Some(&v[2]), 1e-5).map(|(y, _)| y);
            check_gradients(f, &inputs, GradCheck::default()).unwrap();
            let plain = |v: &[Var]| batch_norm_train(&v[0], None, None, 1e-5).map(|(y, _)| y);
            check_gradients(plain, &inputs[..1], GradCheck::default()).unwrap();
            // Only a bias: the recorded inputs are [x, β], and β's gradient must land on β.
            let bias_only = |v: &[Var]| batch_norm_train(&v[0], None, Some(&v[1]), 1e-5).map(|(y, _)| y);
            check_gradients(bias_only, &[inputs[0].clone(), inputs[2].clone()], GradCheck::default())
                .unwrap();
        }
    }

    /// The fused operation against the two it replaces: the same output and the same gradients
    /// for x, γ and β, bit for bit, including a channel whose values are NaN (the ReLU keeps
    /// them and, as ReluBackward, passes them no gradient).
    #[test]
    fn batch_norm_relu_is_relu_of_batch_norm_bit_for_bit() {
        for dims in [&[6, 3][..], &[4, 3, 5][..], &[3, 2, 7, 9][..]] {
            let c = dims[1];
            let mut x = seeded(dims, 11, 1.5, 0.3);
            if dims.len() > 2 {
                // Channel 1 of image 0 gets a NaN: its whole channel normalises to NaN.
                x.data_mut()[dims[2..].iter().product::<usize>()] = f32::NAN;
            }
            let (gamma, beta) = (seeded(&[c], 12, 0.5, 1.0), seeded(&[c], 13, 1.0, 0.0));
            let upstream = seeded(dims, 14, 1.0, 0.0);
            let run = |fused: bool| {
                let (x, w, b) =
                    (Var::parameter(x.clone()), Var::parameter(gamma.clone()), Var::parameter(beta.clone()));
                let y = if fused {
                    batch_norm_relu_train(&x, Some(&w), Some(&b), 1e-5).unwrap().0
                } else {
                    crate::autograd::relu(&batch_norm_train(&x, Some(&w), Some(&b), 1e-5).unwrap().0)
                };
                y.backward_with(upstream.clone()).unwrap();
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                [y.value().clone(), x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()].map(|t| bits(&t))
            };
            let (fused, separate) = (run(true), run(false));
            for (what, (f, s)) in ["output", "dx", "dγ", "dβ"].iter().zip(fused.iter().zip(&separate)) {
                assert_eq!(f, s, "{what} differs for {dims:?}");
            }
        }
    }

    #[test]
    fn batch_norm_relu_gradients_against_finite_differences() {
        let inputs =
            [seeded(&[3, 2, 5], 21, 1.5, 0.5), seeded(&[2], 22, 0.5, 1.0), seeded(&[2], 23, 1.0, 0.2)];
        let f = |v: &[Var]| batch_norm_relu_train(&v[0], Some(&v[1]), Some(&v[2]), 1e-5).map(|(y, _)| y);
        check_gradients(f, &inputs, GradCheck::default()).unwrap();
    }

    #[test]
    fn batch_norm_eval_gradients_for_x_gamma_beta() {
        let (rm, rv) = (seeded(&[3], 4, 0.5, 0.0), seeded(&[3], 5, 0.5, 1.0));
        let inputs = [seeded(&[2, 3, 4], 6, 1.5, 0.5), seeded(&[3], 7, 0.5, 1.0), seeded(&[3], 8, 1.0, 0.0)];
        let f = |v: &[Var]| batch_norm_eval(&v[0], Some(&v[1]), Some(&v[2]), &rm, &rv, 1e-5);
        check_gradients(f, &inputs, GradCheck::default()).unwrap();
        let weight_only = |v: &[Var]| batch_norm_eval(&v[0], Some(&v[1]), None, &rm, &rv, 1e-5);
        check_gradients(weight_only, &inputs[..2], GradCheck::default()).unwrap();
    }

    #[test]
    fn batch_norm_stats_update_the_running_statistics() {
        let x = Var::constant(Tensor::new([4, 1], vec![1.0, 2.0, 3.0, 6.0]).unwrap());
        let (y, stats) = batch_norm_train(&x, None, None, 0.0).unwrap();
        assert!(!y.requires_grad());
        assert_eq!(stats.mean.data(), &[3.0]);
        // Σ (x − 3)² = 4 + 1 + 0 + 9 = 14; unbiased 14/3.
        assert!((stats.var.data()[0] - 14.0 / 3.0).abs() < 1e-6);
        let (mut rm, mut rv) = (Tensor::zeros([1]).unwrap(), Tensor::ones([1]).unwrap());
        stats.update_running(&mut rm, &mut rv, 0.1).unwrap();
        assert!((rm.data()[0] - 0.3).abs() < 1e-7);
        assert!((rv.data()[0] - (0.9 + 1.4 / 3.0)).abs() < 1e-6);
    }

    #[test]
    fn batch_norm_errors_pass_through() {
        let x = Var::constant(Tensor::zeros([1, 3]).unwrap());
        let err = batch_norm_train(&x, None, None, 1e-5).unwrap_err();
        assert!(err.to_string().contains("more than 1 value per channel"), "{err}");
        let w = Var::parameter(Tensor::ones([2]).unwrap());
        let stats = Tensor::ones([3]).unwrap();
        let err = batch_norm_eval(&x, Some(&w), None, &stats, &stats, 1e-5).unwrap_err();
        assert!(
            err.to_string().contains("weight has shape [2] but the input [1, 3] has 3 channels"),
            "{err}"
        );
    }
}
