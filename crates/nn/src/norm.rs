//! Batch normalisation layers (`BatchNorm1d/2d/3d`), with torchvision's parameter and buffer
//! names: `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
//!
//! In [`Mode::Train`] a forward pass normalises with the batch's statistics and folds them into
//! the running ones (PyTorch's momentum convention); in [`Mode::Eval`] it uses the running ones.

use stride_tensor::autograd::{self, Var};
use stride_tensor::{Error, Result, Shape, Tensor};

use crate::layers::Conv;
use crate::module::{Mode, Module, NamedBuffer, NamedVar, join};

/// Batch normalisation over the channel axis of `[N, C, *S]`, `S` of rank `N_SPATIAL`
/// (`BatchNorm1d` also takes `[N, C]`).
pub struct BatchNorm<const N_SPATIAL: usize> {
    pub weight: Option<Var>,
    pub bias: Option<Var>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// Kept as a one-element tensor so it saves and loads like PyTorch's buffer.
    pub num_batches_tracked: Tensor,
    pub eps: f32,
    pub momentum: f32,
    /// Folded into the convolution before it ([`BatchNorm::fold_into`]): evaluation passes the
    /// input through, training is refused.
    pub folded: bool,
}

pub type BatchNorm1d = BatchNorm<1>;
pub type BatchNorm2d = BatchNorm<2>;
pub type BatchNorm3d = BatchNorm<3>;

impl<const N_SPATIAL: usize> BatchNorm<N_SPATIAL> {
    /// PyTorch's defaults: γ = 1, β = 0, running mean 0 and variance 1, eps 1e-5, momentum 0.1.
    pub fn new(channels: usize) -> Result<Self> {
        Ok(BatchNorm {
            weight: Some(Var::parameter(Tensor::ones([channels])?)),
            bias: Some(Var::parameter(Tensor::zeros([channels])?)),
            running_mean: Tensor::zeros([channels])?,
            running_var: Tensor::ones([channels])?,
            num_batches_tracked: Tensor::scalar(0.0),
            eps: 1e-5,
            momentum: 0.1,
            folded: false,
        })
    }

    fn channels(&self) -> usize {
        self.running_mean.numel()
    }

    /// Folds this batch norm's evaluation-mode transform into `conv`, the convolution before it:
    /// per output channel k, with `s = γ_k / √(running_var_k + ε)`, the filter is scaled by `s`
    /// and the bias becomes `(b_k − running_mean_k)·s + β_k`. Afterwards this layer passes its
    /// input through in evaluation and refuses to train.
    pub fn fold_into(&mut self, conv: &mut Conv<N_SPATIAL>) -> Result<()> {
        let channels = self.channels();
        let weight = conv.weight.value();
        if weight.dims()[0] != channels || self.folded {
            return Err(Error::invalid(
                "fold_batch_norm",
                format!(
                    "cannot fold a batch norm of {channels} channels{} into a convolution of {} filters",
                    if self.folded { " that is already folded" } else { "" },
                    weight.dims()[0]
                ),
            ));
        }
        let per_filter = weight.numel() / channels.max(1);
        let gamma =
            self.weight.as_ref().map(|w| w.value().data().to_vec()).unwrap_or_else(|| vec![1.0; channels]);
        let beta =
            self.bias.as_ref().map(|b| b.value().data().to_vec()).unwrap_or_else(|| vec![0.0; channels]);
        let bias =
            conv.bias.as_ref().map(|b| b.value().data().to_vec()).unwrap_or_else(|| vec![0.0; channels]);
        let mut w = weight.data().to_vec();
        let mut b = vec![0.0f32; channels];
        for k in 0..channels {
            let scale = gamma[k] / (self.running_var.data()[k] + self.eps).sqrt();
            for v in &mut w[k * per_filter..(k + 1) * per_filter] {
                *v *= scale;
            }
            b[k] = (bias[k] - self.running_mean.data()[k]) * scale + beta[k];
        }
        conv.weight = Var::parameter(Tensor::new(weight.dims().to_vec(), w)?);
        conv.bias = Some(Var::parameter(Tensor::new([channels], b)?));
        self.folded = true;
        Ok(())
    }

    /// This layer followed by a ReLU, what every batch norm but the last of a residual block
    /// is. In training one fused operation ([`autograd::batch_norm_relu_train`]: one pass over
    /// the output, and none for the ReLU's gradient), with the same values and gradients as the
    /// two in turn; in evaluation the two in turn.
    pub fn forward_relu(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_maybe_relu(x, mode, true)
    }

    fn forward_maybe_relu(&mut self, x: &Var, mode: Mode, relu: bool) -> Result<Var> {
        let op = format!("BatchNorm{N_SPATIAL}d");
        self.output_shape(x.value().dims())?;
        if self.folded {
            return match mode {
                Mode::Eval => Ok(if relu { autograd::relu(x) } else { x.clone() }),
                Mode::Train => Err(Error::invalid(
                    op,
                    "this batch norm was folded into the convolution before it for inference; \
                     rebuild the network or reload its weights to train it",
                )),
            };
        }
        match mode {
            Mode::Train => {
                let train = if relu { autograd::batch_norm_relu_train } else { autograd::batch_norm_train };
                let (y, stats) = train(x, self.weight.as_ref(), self.bias.as_ref(), self.eps)
                    .map_err(|e| e.within(&op))?;
                stats.update_running(&mut self.running_mean, &mut self.running_var, self.momentum)?;
                self.num_batches_tracked = Tensor::scalar(self.num_batches_tracked.item()? + 1.0);
                Ok(y)
            }
            Mode::Eval => {
                let y = autograd::batch_norm_eval(
                    x,
                    self.weight.as_ref(),
                    self.bias.as_ref(),
                    &self.running_mean,
                    &self.running_var,
                    self.eps,
                )
                .map_err(|e| e.within(&op))?;
                Ok(if relu { autograd::relu(&y) } else { y })
            }
        }
    }
}

/// The learnable γ and β, counted for summaries.
fn affine_parameters(weight: &Option<Var>, bias: &Option<Var>) -> usize {
    [weight, bias].iter().filter_map(|p| p.as_ref()).map(|p| p.value().numel()).sum()
}

impl<const N_SPATIAL: usize> Module for BatchNorm<N_SPATIAL> {
    fn describe(&self) -> String {
        format!(
            "BatchNorm{N_SPATIAL}d({}, eps={}, momentum={}, affine={})",
            self.channels(),
            self.eps,
            self.momentum,
            self.weight.is_some()
        )
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_maybe_relu(x, mode, false)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let op = format!("BatchNorm{N_SPATIAL}d");
        let rank_ok = input.len() == N_SPATIAL + 2 || (N_SPATIAL == 1 && input.len() == 2);
        if !rank_ok || input[1] != self.channels() {
            return Err(Error::shape(
                op,
                format!(
                    "expects [N, {}{}], got {}",
                    self.channels(),
                    ", …".repeat(N_SPATIAL.min(1)),
                    Shape::from(input)
                ),
            ));
        }
        Ok(input.to_vec())
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        if let Some(w) = self.weight.as_mut() {
            out.push((join(prefix, "weight"), w));
        }
        if let Some(b) = self.bias.as_mut() {
            out.push((join(prefix, "bias"), b));
        }
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        out.push((join(prefix, "running_mean"), &mut self.running_mean));
        out.push((join(prefix, "running_var"), &mut self.running_var));
        out.push((join(prefix, "num_batches_tracked"), &mut self.num_batches_tracked));
    }

    fn own_parameters(&self) -> usize {
        affine_parameters(&self.weight, &self.bias)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_updates_running_statistics_and_eval_uses_them() {
        let mut bn = BatchNorm2d::new(2).unwrap();
        // Channel 0 holds 1..4, channel 1 holds 10, 10, 10, 14 (one image, 2×2).
        let x = Var::constant(
            Tensor::new([1, 2, 2, 2], vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0]).unwrap(),
        );
        let y = bn.forward(&x, Mode::Train).unwrap();
        let channel0: f32 = y.value().data()[..4].iter().sum();
        assert!(channel0.abs() < 1e-5, "normalised to zero mean");
        // running = 0.9·initial + 0.1·batch, with the unbiased variance (PyTorch).
        assert!((bn.running_mean.data()[0] - 0.25).abs() < 1e-6);
        assert!((bn.running_var.data()[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
        assert_eq!(bn.num_batches_tracked.item().unwrap(), 1.0);
        let evaluated = bn.forward(&x, Mode::Eval).unwrap();
        let expected = (1.0 - 0.25) / (bn.running_var.data()[0] + 1e-5).sqrt();
        assert!((evaluated.value().data()[0] - expected).abs() < 1e-5);
        assert_eq!(bn.num_batches_tracked.item().unwrap(), 1.0, "evaluation does not count batches");
    }

    /// conv → batch norm → ReLU, folded: the batch norm goes into the convolution's weights, the
    /// ReLU into its output loop; the outputs stay those of the unfolded network, with and
    /// without gradients being recorded.
    #[test]
    fn folding_fuses_batch_norm_and_relu_into_the_convolution() {
        use crate::layers::{Activation, Conv2d};
        use crate::module::Sequential;
        use stride_tensor::autograd::no_grad;
        use stride_tensor::ops::conv::ConvSpec;

        let seeded = |dims: &[usize], k: f32| {
            Tensor::from_fn(dims, |i| (i.iter().sum::<usize>() as f32 * k).sin() * 0.7).unwrap()
        };
        let conv = Conv2d::from_parts(seeded(&[4, 3, 3, 3], 0.9), None, ConvSpec::new().padding(1)).unwrap();
        let mut bn = BatchNorm2d::new(4).unwrap();
        bn.running_mean = seeded(&[4], 1.3);
        bn.running_var = seeded(&[4], 0.4).map(|v| v.abs() + 0.5);
        let mut net = Sequential::new(vec![Box::new(conv), Box::new(bn), Box::new(Activation::ReLU)]);
        let x = Var::constant(seeded(&[2, 3, 6, 5], 0.31));
        let before = net.forward(&x, Mode::Eval).unwrap().value().clone();
        net.fold_batch_norm().unwrap();
        assert!(net.describe().contains("(2): ReLU()"), "the fused ReLU still prints: {}", net.describe());
        let fused = no_grad(|| net.forward(&x, Mode::Eval)).unwrap().value().clone();
        let recorded = net.forward(&x, Mode::Eval).unwrap().value().clone();
        assert_eq!(fused, recorded, "the recording fallback computes the same values");
        // The convolution's own output is now the ReLU's: nothing negative leaves it.
        let (_, maps) = no_grad(|| {
            crate::module::forward_with_activations(&mut net, &x, Mode::Eval, |path, _| path == "0")
        })
        .unwrap();
        assert!(maps[0].1.data().iter().all(|&v| v >= 0.0), "ReLU fused into the convolution");
        assert!(before.data().contains(&0.0), "the ReLU clips some outputs");
        for (a, b) in fused.data().iter().zip(before.data()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn names_follow_torchvision() {
        let mut bn = BatchNorm2d::new(3).unwrap();
        let mut params = Vec::new();
        bn.parameters("layer1.0.bn1", &mut params);
        let names: Vec<String> = params.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["layer1.0.bn1.weight", "layer1.0.bn1.bias"]);
        let mut buffers = Vec::new();
        bn.buffers("bn", &mut buffers);
        let names: Vec<String> = buffers.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]);
    }

    #[test]
    fn wrong_channels_are_rejected_before_computing() {
        let bn = BatchNorm2d::new(16).unwrap();
        assert_eq!(
            bn.output_shape(&[8, 6, 10, 10]).unwrap_err().to_string(),
            "BatchNorm2d: expects [N, 16, …], got [8, 6, 10, 10]"
        );
        assert!(BatchNorm1d::new(4).unwrap().output_shape(&[8, 4]).is_ok());
    }
}
