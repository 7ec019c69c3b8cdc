//! LeNet-5 (LeCun et al. 1998), the lecture's first network: two 5×5 convolutions with
//! subsampling, then three fully connected layers (C1–S2–C3–S4–C5–F6–output).
//!
//! The modern form used here takes 28×28 MNIST-style images and pads the first convolution by 2
//! (the paper padded the images to 32×32 instead, so the sizes are the same: 28×28×6 after C1),
//! uses ReLU and max pooling, and names its layers as the PyTorch tutorial's `Net` does:
//!
//! ```text
//! conv1  Conv2d(C, 6, 5, padding=2)   28×28×6     → ReLU → MaxPool 2 → 14×14×6
//! conv2  Conv2d(6, 16, 5)             10×10×16    → ReLU → MaxPool 2 → 5×5×16
//! fc1    Linear(400, 120) → ReLU      (C5: 5×5 kernels over a 5×5 map are a full connection)
//! fc2    Linear(120, 84)  → ReLU      (F6)
//! fc3    Linear(84, classes)
//! ```
//!
//! Weights start as PyTorch's `nn.Conv2d`/`nn.Linear` defaults, so the same network in PyTorch
//! (tools/bench_lenet.py) starts from the same distribution.

use stride_nn::init::{pytorch_default_conv_or_linear, rng};
use stride_nn::layers::{Activation, Conv2d, Flatten, Linear, Pool};
use stride_nn::module::{Module, Sequential};
use stride_tensor::Result;
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;

use crate::BuildOptions;

pub(crate) fn lenet5(options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    let mut conv = |cin: usize, cout: usize, padding: usize| -> Result<Box<dyn Module>> {
        let (w, b) = pytorch_default_conv_or_linear([cout, cin, 5, 5], &mut rng)?;
        Ok(Box::new(Conv2d::from_parts(w, Some(b), ConvSpec::new().padding(padding))?))
    };
    let conv1 = conv(options.in_channels, 6, 2)?;
    let conv2 = conv(6, 16, 0)?;
    let mut linear = |inputs: usize, outputs: usize| -> Result<Box<dyn Module>> {
        let (w, b) = pytorch_default_conv_or_linear([outputs, inputs], &mut rng)?;
        Ok(Box::new(Linear::from_parts(w, Some(b))?))
    };
    let (fc1, fc2, fc3) = (linear(400, 120)?, linear(120, 84)?, linear(84, options.classes)?);
    let pool = || -> Box<dyn Module> { Box::new(Pool::<2>::max(PoolSpec::new(2))) };
    let relu = || -> Box<dyn Module> { Box::new(Activation::ReLU) };
    Ok(Box::new(Sequential::named(vec![
        ("conv1", conv1),
        ("relu1", relu()),
        ("pool1", pool()),
        ("conv2", conv2),
        ("relu2", relu()),
        ("pool2", pool()),
        ("flatten", Box::new(Flatten::default())),
        ("fc1", fc1),
        ("relu3", relu()),
        ("fc2", fc2),
        ("relu4", relu()),
        ("fc3", fc3),
    ])))
}

#[cfg(test)]
mod tests {
    use stride_nn::module::named_parameters;

    use super::*;

    #[test]
    fn names_follow_the_pytorch_tutorial_and_seeds_reproduce() {
        let options = BuildOptions { in_channels: 1, classes: 10, seed: 3 };
        let mut a = lenet5(&options).unwrap();
        let names: Vec<String> = named_parameters(a.as_mut()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias",
                "fc3.weight",
                "fc3.bias"
            ]
        );
        let mut b = lenet5(&options).unwrap();
        let mut c = lenet5(&BuildOptions { seed: 4, ..options }).unwrap();
        let first = |m: &mut Box<dyn Module>| named_parameters(m.as_mut())[0].1.value().clone();
        assert_eq!(first(&mut a), first(&mut b));
        assert_ne!(first(&mut a), first(&mut c));
        let err = a.output_shape(&[1, 1, 20, 20]).unwrap_err().to_string();
        assert!(err.starts_with("fc1 (Linear): expects [N, 400]"), "{err}");
    }
}
