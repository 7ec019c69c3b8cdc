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

pub mod alexnet;
pub mod googlenet;
pub mod lenet;
pub mod resnet;
pub mod vgg;

use stride_nn::module::Module;
use stride_tensor::{Error, Result};

/// The 1000 ImageNet class names in class-index order, as torchvision's pretrained weights label
/// them (`tools/gen_imagenet_classes.py`).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("../assets/imagenet_classes.txt").lines().collect()
}

/// The per-channel mean and standard deviation of ImageNet's pixels in [0, 1] (R, G, B), with
/// which torchvision's pretrained networks normalise their input.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

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

static REGISTRY: [ModelInfo; 24] = [
    ModelInfo {
        name: "lenet5",
        summary: "LeNet-5 in its common modern form: 28×28 input with padding 2, ReLU, max pooling",
        input: [1, 28, 28],
        classes: 10,
        source: "LeCun et al. 1998, Gradient-based learning applied to document recognition",
        parameters: 61_706,
        build: lenet::lenet5,
    },
    ModelInfo {
        name: "alexnet",
        summary: "AlexNet as torchvision has it: one tower, 64-192-384-256-256 filters, no LRN, adaptive 6×6 pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "Krizhevsky 2014, One weird trick for parallelizing convolutional neural networks (torchvision's alexnet)",
        parameters: 61_100_840,
        build: alexnet::alexnet,
    },
    ModelInfo {
        name: "alexnet2012",
        summary: "AlexNet as trained in 2012: two GPU towers kept as groups=2 in conv2/4/5, LRN, 227×227 input",
        input: [3, 227, 227],
        classes: 1000,
        source: "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with deep convolutional neural networks",
        parameters: 60_965_224,
        build: alexnet::alexnet2012,
    },
    ModelInfo {
        name: "zfnet",
        summary: "ZFNet: AlexNet with 7×7 stride-2 first filters, stride-2 conv2, LRN after pooling, dense conv3–5",
        input: [3, 224, 224],
        classes: 1000,
        source: "Zeiler & Fergus 2013, Visualizing and understanding convolutional networks",
        parameters: 62_357_608,
        build: alexnet::zfnet,
    },
    ModelInfo {
        name: "vgg11",
        summary: "VGG-11 (configuration A): 8 3×3 convolutions in five max-pooled stages, 3 fully connected layers",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 132_863_336,
        build: vgg::vgg11,
    },
    ModelInfo {
        name: "vgg11_bn",
        summary: "VGG-11 with batch norm after every convolution (torchvision)",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 132_868_840,
        build: vgg::vgg11_bn,
    },
    ModelInfo {
        name: "vgg13",
        summary: "VGG-13 (configuration B): 10 3×3 convolutions in five max-pooled stages, 3 fully connected layers",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 133_047_848,
        build: vgg::vgg13,
    },
    ModelInfo {
        name: "vgg13_bn",
        summary: "VGG-13 with batch norm after every convolution (torchvision)",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 133_053_736,
        build: vgg::vgg13_bn,
    },
    ModelInfo {
        name: "vgg16",
        summary: "VGG-16 (configuration D): 13 3×3 convolutions in five max-pooled stages, 3 fully connected layers",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 138_357_544,
        build: vgg::vgg16,
    },
    ModelInfo {
        name: "vgg16_bn",
        summary: "VGG-16 with batch norm after every convolution (torchvision)",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 138_365_992,
        build: vgg::vgg16_bn,
    },
    ModelInfo {
        name: "vgg19",
        summary: "VGG-19 (configuration E): 16 3×3 convolutions in five max-pooled stages, 3 fully connected layers",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 143_667_240,
        build: vgg::vgg19,
    },
    ModelInfo {
        name: "vgg19_bn",
        summary: "VGG-19 with batch norm after every convolution (torchvision)",
        input: [3, 224, 224],
        classes: 1000,
        source: "Simonyan & Zisserman 2014, Very deep convolutional networks for large-scale image recognition",
        parameters: 143_678_248,
        build: vgg::vgg19_bn,
    },
    ModelInfo {
        name: "googlenet",
        summary: "GoogLeNet (Inception v1) as torchvision: 9 Inception blocks, 1×1 reductions, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "Szegedy et al. 2014, Going deeper with convolutions (torchvision's batch-norm variant)",
        parameters: 6_624_904,
        build: googlenet::googlenet,
    },
    ModelInfo {
        name: "googlenet_aux",
        summary: "GoogLeNet with the two auxiliary classifiers (used in training)",
        input: [3, 224, 224],
        classes: 1000,
        source: "Szegedy et al. 2014, Going deeper with convolutions (torchvision's batch-norm variant)",
        parameters: 13_004_888,
        build: googlenet::googlenet_aux,
    },
    ModelInfo {
        name: "resnet18",
        summary: "ResNet-18: 7×7 stem, BasicBlocks [2, 2, 2, 2] with projection shortcuts, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "He et al. 2015, Deep residual learning for image recognition (torchvision's layout)",
        parameters: 11_689_512,
        build: resnet::resnet18,
    },
    ModelInfo {
        name: "resnet34",
        summary: "ResNet-34: 7×7 stem, BasicBlocks [3, 4, 6, 3] with projection shortcuts, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "He et al. 2015, Deep residual learning for image recognition (torchvision's layout)",
        parameters: 21_797_672,
        build: resnet::resnet34,
    },
    ModelInfo {
        name: "resnet50",
        summary: "ResNet-50: 7×7 stem, Bottleneck blocks [3, 4, 6, 3] with projection shortcuts, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "He et al. 2015, Deep residual learning for image recognition (torchvision's layout)",
        parameters: 25_557_032,
        build: resnet::resnet50,
    },
    ModelInfo {
        name: "resnet101",
        summary: "ResNet-101: 7×7 stem, Bottleneck blocks [3, 4, 23, 3] with projection shortcuts, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "He et al. 2015, Deep residual learning for image recognition (torchvision's layout)",
        parameters: 44_549_160,
        build: resnet::resnet101,
    },
    ModelInfo {
        name: "resnet152",
        summary: "ResNet-152: 7×7 stem, Bottleneck blocks [3, 8, 36, 3] with projection shortcuts, global average pooling",
        input: [3, 224, 224],
        classes: 1000,
        source: "He et al. 2015, Deep residual learning for image recognition (torchvision's layout)",
        parameters: 60_192_808,
        build: resnet::resnet152,
    },
    ModelInfo {
        name: "resnet20",
        summary: "CIFAR ResNet-20 (6n+2, n=3): 16/32/64-channel stages, parameter-free option-A shortcuts",
        input: [3, 32, 32],
        classes: 10,
        source: "He et al. 2015, Deep residual learning for image recognition, §4.2 (CIFAR-10, option A)",
        parameters: 269_722,
        build: resnet::resnet20,
    },
    ModelInfo {
        name: "resnet32",
        summary: "CIFAR ResNet-32 (6n+2, n=5): 16/32/64-channel stages, parameter-free option-A shortcuts",
        input: [3, 32, 32],
        classes: 10,
        source: "He et al. 2015, Deep residual learning for image recognition, §4.2 (CIFAR-10, option A)",
        parameters: 464_154,
        build: resnet::resnet32,
    },
    ModelInfo {
        name: "resnet44",
        summary: "CIFAR ResNet-44 (6n+2, n=7): 16/32/64-channel stages, parameter-free option-A shortcuts",
        input: [3, 32, 32],
        classes: 10,
        source: "He et al. 2015, Deep residual learning for image recognition, §4.2 (CIFAR-10, option A)",
        parameters: 658_586,
        build: resnet::resnet44,
    },
    ModelInfo {
        name: "resnet56",
        summary: "CIFAR ResNet-56 (6n+2, n=9): 16/32/64-channel stages, parameter-free option-A shortcuts",
        input: [3, 32, 32],
        classes: 10,
        source: "He et al. 2015, Deep residual learning for image recognition, §4.2 (CIFAR-10, option A)",
        parameters: 853_018,
        build: resnet::resnet56,
    },
    ModelInfo {
        name: "resnet110",
        summary: "CIFAR ResNet-110 (6n+2, n=18): 16/32/64-channel stages, parameter-free option-A shortcuts",
        input: [3, 32, 32],
        classes: 10,
        source: "He et al. 2015, Deep residual learning for image recognition, §4.2 (CIFAR-10, option A)",
        parameters: 1_727_962,
        build: resnet::resnet110,
    },
];

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

    /// Every registered network, built once: its parameter count is the registry's, its output
    /// is one score per class, its summary rows add up to the count, and the multiply-adds of the
    /// networks with published figures match them (within 1%).
    #[test]
    fn every_model_matches_its_registry_entry_and_published_cost() {
        let published =
            [("alexnet", 0.71e9), ("vgg16", 15.47e9), ("googlenet", 1.50e9), ("resnet50", 4.09e9)];
        for info in registry() {
            let options = BuildOptions { in_channels: info.input[0], classes: info.classes, seed: 0 };
            // Shapes only: the values are the builders' own tests' business.
            let mut net = stride_nn::init::shape_only(|| info.build(&options)).unwrap();
            assert_eq!(parameter_count(net.as_mut()), info.parameters, "{}", info.name);
            let [c, h, w] = info.input;
            assert_eq!(net.output_shape(&[2, c, h, w]).unwrap(), vec![2, info.classes], "{}", info.name);
            let (rows, output) = stride_nn::module::summarize(net.as_ref(), &[1, c, h, w]).unwrap();
            assert_eq!(output, vec![1, info.classes], "{}", info.name);
            assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), info.parameters, "{}", info.name);
            if let Some((_, figure)) = published.iter().find(|(name, _)| *name == info.name) {
                let total = rows.iter().map(|r| r.mult_adds).sum::<u64>() as f64;
                assert!(
                    (total / figure - 1.0).abs() < 0.01,
                    "{}: {total} multiply-adds, published {figure}",
                    info.name
                );
            }
        }
    }

    #[test]
    fn imagenet_has_its_thousand_classes() {
        let classes = imagenet_classes();
        assert_eq!(classes.len(), 1000);
        assert_eq!((classes[0], classes[1], classes[999]), ("tench", "goldfish", "toilet tissue"));
    }

    #[test]
    fn lenet5_multiply_adds_layer_by_layer() {
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
            "model zoo: invalid argument: no model called \"lenet6\"; the zoo has: lenet5, alexnet, \
             alexnet2012, zfnet, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn, \
             googlenet, googlenet_aux, resnet18, resnet34, resnet50, resnet101, resnet152, resnet20, \
             resnet32, resnet44, resnet56, resnet110"
        );
        assert!(build("lenet5", 0, 1, 0).is_err());
    }
}
