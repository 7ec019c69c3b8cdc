//! stride-zoo: the networks of the lecture's ImageNet story, each built from `stride-nn` layers
//! with torchvision's names and layouts, listed in one [`registry`] that the command line and the
//! tests read.
//!
//! ```
//! use stride_nn::module::{Module, parameter_count};
//!
//! let info = stride_zoo::find("lenet5")?;
//! let mut net = stride_zoo::build("lenet5", 10, 1, 42)?;
//! assert_eq!(net.output_shape(&[8, 1, 28, 28])?, vec![8, 10]);
//! assert_eq!(parameter_count(net.as_mut()), info.parameters);
//! # Ok::<(), stride_tensor::Error>(())
//! ```

pub mod lenet;

use stride_nn::module::Module;
use stride_tensor::{Error, Result};

/// How to build a network from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Channels of the input images (1 for MNIST-style data, 3 for colour).
    pub in_channels: usize,
    /// Classes the last layer scores.
    pub classes: usize,
    /// Seeds the initial weights: the same seed gives the same network.
    pub seed: u64,
}

/// One network of the zoo.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    /// The name the command line and checkpoints use.
    pub name: &'static str,
    /// One line for `stride models`.
    pub summary: &'static str,
    /// The input it was designed for, `[C, H, W]`.
    pub input: [usize; 3],
    /// The class count of its standard form.
    pub classes: usize,
    /// Where the architecture comes from.
    pub source: &'static str,
    /// Learnable values of the standard form (`input` channels, `classes` classes).
    pub parameters: usize,
    build: fn(&BuildOptions) -> Result<Box<dyn Module>>,
}

impl ModelInfo {
    /// A fresh network with seeded initial weights.
    pub fn build(&self, options: &BuildOptions) -> Result<Box<dyn Module>> {
        if options.in_channels == 0 || options.classes == 0 {
            return Err(Error::invalid(
                self.name,
                format!("needs at least 1 input channel and 1 class, got {options:?}"),
            ));
        }
        (self.build)(options)
    }
}

/// Every network stride ships.
pub fn registry() -> &'static [ModelInfo] {
    &REGISTRY
}

static REGISTRY: [ModelInfo; 1] = [ModelInfo {
    name: "lenet5",
    summary: "LeNet-5 in its common modern form: 28×28 input with padding 2, ReLU, max pooling",
    input: [1, 28, 28],
    classes: 10,
    source: "LeCun et al. 1998, Gradient-based learning applied to document recognition",
    parameters: 61_706,
    build: lenet::lenet5,
}];

/// The registry entry called `name`, or an error listing the names there are.
pub fn find(name: &str) -> Result<&'static ModelInfo> {
    registry().iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = registry().iter().map(|m| m.name).collect();
        Error::invalid("model zoo", format!("no model called {name:?}; the zoo has: {}", names.join(", ")))
    })
}

/// Builds the network `name` for `in_channels`-channel images and `classes` classes.
pub fn build(name: &str, classes: usize, in_channels: usize, seed: u64) -> Result<Box<dyn Module>> {
    find(name)?.build(&BuildOptions { in_channels, classes, seed })
}

#[cfg(test)]
mod tests {
    use stride_nn::module::parameter_count;

    use super::*;

    #[test]
    fn every_model_has_its_registered_parameter_count_and_output_shape() {
        for info in registry() {
            let options = BuildOptions { in_channels: info.input[0], classes: info.classes, seed: 0 };
            let mut net = info.build(&options).unwrap();
            assert_eq!(parameter_count(net.as_mut()), info.parameters, "{}", info.name);
            let [c, h, w] = info.input;
            assert_eq!(net.output_shape(&[2, c, h, w]).unwrap(), vec![2, info.classes], "{}", info.name);
        }
    }

    /// The summary walks every leaf layer: its rows add up to the network's parameter count.
    #[test]
    fn summaries_count_every_parameter() {
        for info in registry() {
            let options = BuildOptions { in_channels: info.input[0], classes: info.classes, seed: 0 };
            let net = info.build(&options).unwrap();
            let [c, h, w] = info.input;
            let (rows, output) = stride_nn::module::summarize(net.as_ref(), &[1, c, h, w]).unwrap();
            assert_eq!(output, vec![1, info.classes], "{}", info.name);
            assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), info.parameters, "{}", info.name);
        }
        let lenet = build("lenet5", 10, 1, 0).unwrap();
        let (rows, _) = stride_nn::module::summarize(lenet.as_ref(), &[1, 1, 28, 28]).unwrap();
        // conv1: 28·28·6 outputs × 25 taps; conv2: 10·10·16 × 150; fc: 48,000 + 10,080 + 840.
        let macs: Vec<(&str, u64)> =
            rows.iter().filter(|r| r.mult_adds > 0).map(|r| (r.path.as_str(), r.mult_adds)).collect();
        assert_eq!(
            macs,
            [("conv1", 117_600), ("conv2", 240_000), ("fc1", 48_000), ("fc2", 10_080), ("fc3", 840)]
        );
    }

    #[test]
    fn unknown_names_and_empty_options_are_errors() {
        assert_eq!(
            find("lenet6").unwrap_err().to_string(),
            "model zoo: invalid argument: no model called \"lenet6\"; the zoo has: lenet5"
        );
        assert!(build("lenet5", 0, 1, 0).is_err());
    }
}
