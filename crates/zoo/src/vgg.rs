//! VGG (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale image
//! recognition"): stacks of 3×3 convolutions with padding 1, halved by 2×2 max pooling five
//! times, then three fully connected layers. Built from torchvision's configuration table, with
//! its names and initialisation:
//!
//! ```text
//! features    Sequential: per 'C(v)' Conv2d(·, v, 3, padding=1) [+ BatchNorm2d(v)] + ReLU,
//!                         per 'M' MaxPool2d(2, 2)                       224 → 7 after five pools
//! avgpool     AdaptiveAvgPool2d((7, 7))                                 any input ≥ 32 → 7×7×512
//! (flatten)   torch.flatten(x, 1)                                       25,088
//! classifier  Sequential: Linear(25088, 4096), ReLU, Dropout(0.5),
//!                         Linear(4096, 4096), ReLU, Dropout(0.5), Linear(4096, classes)
//! ```
//!
//! so the parameters are `features.0.weight`, `features.1.running_mean` (with batch norm),
//! `classifier.0.weight` … `classifier.6.bias`, exactly as torchvision's state_dict: weights move
//! between the two by name. The weights start as torchvision's `VGG.__init__` sets them: every
//! convolution `kaiming_normal_(mode="fan_out", nonlinearity="relu")` with bias 0, every batch
//! norm γ = 1, β = 0, every linear layer `normal_(0, 0.01)` with bias 0.
//!
//! | depth | configuration | parameters | with batch norm |
//! |---|---|---|---|
//! | 11 | A | 132,863,336 | 132,868,840 |
//! | 13 | B | 133,047,848 | 133,053,736 |
//! | 16 | D | 138,357,544 | 138,365,992 |
//! | 19 | E | 143,667,240 | 143,678,248 |
//!
//! 123,642,856 of each count sit in the classifier (102,764,544 in `classifier.0` alone); batch
//! norm adds γ and β per convolution channel.

use stride_nn::init::{FanMode, Nonlinearity, kaiming_normal, normal, rng, zeros};
use stride_nn::layers::{Activation, AdaptiveAvgPool, Conv2d, Dropout, Flatten, Linear, Pool};
use stride_nn::module::{Module, Sequential};
use stride_nn::norm::BatchNorm2d;
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;
use stride_tensor::{Error, Result, Tensor};

use crate::BuildOptions;

/// One entry of a VGG configuration: torchvision's `v` (a 3×3 convolution to `v` channels) or
/// `'M'` (2×2 max pooling, stride 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Conv(usize),
    MaxPool,
}

use Stage::{Conv as C, MaxPool as M};

/// torchvision's `cfgs["A"]`: VGG-11.
pub const CFG_A: &[Stage] = &[C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
/// `cfgs["B"]`: VGG-13.
pub const CFG_B: &[Stage] =
    &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
/// `cfgs["D"]`: VGG-16.
pub const CFG_D: &[Stage] = &[
    C(64),
    C(64),
    M,
    C(128),
    C(128),
    M,
    C(256),
    C(256),
    C(256),
    M,
    C(512),
    C(512),
    C(512),
    M,
    C(512),
    C(512),
    C(512),
    M,
];
/// `cfgs["E"]`: VGG-19.
pub const CFG_E: &[Stage] = &[
    C(64),
    C(64),
    M,
    C(128),
    C(128),
    M,
    C(256),
    C(256),
    C(256),
    C(256),
    M,
    C(512),
    C(512),
    C(512),
    C(512),
    M,
    C(512),
    C(512),
    C(512),
    C(512),
    M,
];

/// The configuration of VGG-`depth` (weight layers: convolutions plus the three linear ones).
pub fn config(depth: usize) -> Result<&'static [Stage]> {
    match depth {
        11 => Ok(CFG_A),
        13 => Ok(CFG_B),
        16 => Ok(CFG_D),
        19 => Ok(CFG_E),
        _ => Err(Error::invalid("vgg", format!("depth must be 11, 13, 16 or 19, got {depth}"))),
    }
}

/// The seed of the `index`-th dropout layer of a network seeded with `seed`: a stream apart from
/// the weights' (`rng(seed)`) and from every other network's weights, so that a seed fixes the
/// masks of a run as it fixes its initial weights.
pub(crate) fn dropout_seed(seed: u64, index: u64) -> u64 {
    // SplitMix64's increment and finaliser: distinct (seed, index) pairs give unrelated seeds.
    let mut z = seed ^ 0xD809_0D80_0000_0000u64.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// torchvision's `make_layers(cfg, batch_norm)`, drawing convolution weights from `draw`.
fn features(
    cfg: &[Stage],
    in_channels: usize,
    batch_norm: bool,
    draw: &mut impl FnMut(&[usize]) -> Result<Tensor>,
) -> Result<Sequential> {
    let mut layers: Vec<Box<dyn Module>> = Vec::new();
    let mut channels = in_channels;
    for &stage in cfg {
        match stage {
            Stage::MaxPool => layers.push(Box::new(Pool::<2>::max(PoolSpec::new(2).stride(2)))),
            Stage::Conv(v) => {
                let weight = draw(&[v, channels, 3, 3])?;
                let spec = ConvSpec::new().padding(1);
                layers.push(Box::new(Conv2d::from_parts(weight, Some(zeros([v])?), spec)?));
                if batch_norm {
                    layers.push(Box::new(BatchNorm2d::new(v)?));
                }
                layers.push(Box::new(Activation::ReLU));
                channels = v;
            }
        }
    }
    Ok(Sequential::new(layers))
}

/// VGG-`depth` (11, 13, 16 or 19), with batch norm after every convolution if `batch_norm`,
/// laid out, named and initialised as torchvision's `vgg{depth}[_bn]`.
pub fn vgg(depth: usize, batch_norm: bool, options: &BuildOptions) -> Result<Box<dyn Module>> {
    let cfg = config(depth)?;
    let mut rng = rng(options.seed);
    // Convolutions (rank 4): He normal for the backward pass; linear layers: N(0, 0.01²).
    let mut draw = |shape: &[usize]| -> Result<Tensor> {
        if shape.len() == 4 {
            kaiming_normal(shape, FanMode::FanOut, Nonlinearity::Relu, &mut rng)
        } else {
            normal(shape, 0.0, 0.01, &mut rng)
        }
    };
    build(cfg, batch_norm, options, &mut draw)
}

/// The network of `cfg`, every weight drawn from `draw` in forward order (biases are zero).
fn build(
    cfg: &[Stage],
    batch_norm: bool,
    options: &BuildOptions,
    draw: &mut impl FnMut(&[usize]) -> Result<Tensor>,
) -> Result<Box<dyn Module>> {
    let features = features(cfg, options.in_channels, batch_norm, draw)?;
    let last = cfg.iter().rev().find_map(|s| if let Stage::Conv(v) = s { Some(*v) } else { None });
    let flat = last.unwrap_or(options.in_channels) * 7 * 7;
    let mut linear = |inputs: usize, outputs: usize| -> Result<Box<dyn Module>> {
        Ok(Box::new(Linear::from_parts(draw(&[outputs, inputs])?, Some(zeros([outputs])?))?))
    };
    let dropout = |index: u64| -> Result<Box<dyn Module>> {
        Ok(Box::new(Dropout::new(0.5, dropout_seed(options.seed, index))?))
    };
    let relu = || -> Box<dyn Module> { Box::new(Activation::ReLU) };
    let classifier = Sequential::new(vec![
        linear(flat, 4096)?,
        relu(),
        dropout(0)?,
        linear(4096, 4096)?,
        relu(),
        dropout(1)?,
        linear(4096, options.classes)?,
    ]);
    Ok(Box::new(Sequential::named(vec![
        ("features", Box::new(features)),
        ("avgpool", Box::new(AdaptiveAvgPool::<2> { output: [7, 7] })),
        ("flatten", Box::new(Flatten::default())),
        ("classifier", Box::new(classifier)),
    ])))
}

/// VGG-11 (configuration A), 132,863,336 parameters.
pub fn vgg11(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(11, false, options)
}

/// VGG-11 with batch norm, 132,868,840 parameters.
pub fn vgg11_bn(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(11, true, options)
}

/// VGG-13 (configuration B), 133,047,848 parameters.
pub fn vgg13(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(13, false, options)
}

/// VGG-13 with batch norm, 133,053,736 parameters.
pub fn vgg13_bn(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(13, true, options)
}

/// VGG-16 (configuration D), 138,357,544 parameters.
pub fn vgg16(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(16, false, options)
}

/// VGG-16 with batch norm, 138,365,992 parameters.
pub fn vgg16_bn(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(16, true, options)
}

/// VGG-19 (configuration E), 143,667,240 parameters.
pub fn vgg19(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(19, false, options)
}

/// VGG-19 with batch norm, 143,678,248 parameters.
pub fn vgg19_bn(options: &BuildOptions) -> Result<Box<dyn Module>> {
    vgg(19, true, options)
}

#[cfg(test)]
mod tests {
    use stride_nn::module::{Mode, named_parameters, parameter_count, summarize};
    use stride_tensor::autograd::Var;

    use super::*;

    const IMAGENET: BuildOptions = BuildOptions { in_channels: 3, classes: 1000, seed: 0 };

    fn names(net: &mut Box<dyn Module>) -> Vec<String> {
        named_parameters(net.as_mut()).into_iter().map(|(n, _)| n).collect()
    }

    fn buffer_names(net: &mut Box<dyn Module>) -> Vec<String> {
        let mut out = Vec::new();
        net.buffers("", &mut out);
        out.into_iter().map(|(n, _)| n).collect()
    }

    /// The ImageNet network of `depth` with zero weights: the same layers as [`vgg`] builds,
    /// without drawing 130-odd million normal samples (several seconds a network).
    fn zero_weighted(depth: usize, batch_norm: bool) -> Box<dyn Module> {
        build(config(depth).unwrap(), batch_norm, &IMAGENET, &mut |shape| Tensor::zeros(shape)).unwrap()
    }

    /// torchvision's counts (`sum(p.numel() for p in vgg16().parameters())` and so on). Each
    /// network is built and dropped in turn: the largest holds 143.7 M floats (575 MB).
    #[test]
    fn parameter_counts_match_torchvision() {
        let cases = [
            ("vgg11", 11, false, 132_863_336),
            ("vgg11_bn", 11, true, 132_868_840),
            ("vgg13", 13, false, 133_047_848),
            ("vgg13_bn", 13, true, 133_053_736),
            ("vgg16", 16, false, 138_357_544),
            ("vgg16_bn", 16, true, 138_365_992),
            ("vgg19", 19, false, 143_667_240),
            ("vgg19_bn", 19, true, 143_678_248),
        ];
        for (name, depth, batch_norm, parameters) in cases {
            let mut net = zero_weighted(depth, batch_norm);
            assert_eq!(parameter_count(net.as_mut()), parameters, "{name}");
            if name == "vgg16_bn" {
                let names = names(&mut net);
                assert_eq!(names.len(), 13 * 4 + 3 * 2);
                assert_eq!(
                    names[..6],
                    [
                        "features.0.weight",
                        "features.0.bias",
                        "features.1.weight",
                        "features.1.bias",
                        "features.3.weight",
                        "features.3.bias"
                    ]
                );
                // The last convolution sits at 40 (13 × conv-bn-relu + 5 pools = 44 layers).
                assert_eq!(
                    names[48..52],
                    ["features.40.weight", "features.40.bias", "features.41.weight", "features.41.bias"]
                );
                assert_eq!(
                    names[52..],
                    [
                        "classifier.0.weight",
                        "classifier.0.bias",
                        "classifier.3.weight",
                        "classifier.3.bias",
                        "classifier.6.weight",
                        "classifier.6.bias"
                    ]
                );
                let buffers = buffer_names(&mut net);
                assert_eq!(buffers.len(), 13 * 3);
                assert_eq!(
                    buffers[..3],
                    ["features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked"]
                );
                assert_eq!(buffers[38], "features.41.num_batches_tracked");
                assert_eq!(net.output_shape(&[1, 3, 224, 224]).unwrap(), [1, 1000]);
            }
        }
    }

    /// vgg16: torchvision's names, its output shape, and the summary's counts (the first fully
    /// connected layer holds three quarters of the parameters).
    #[test]
    fn vgg16_names_and_summary() {
        let mut net = zero_weighted(16, false);
        let names = names(&mut net);
        assert_eq!(names.len(), 16 * 2);
        assert_eq!(
            names[..4],
            ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
        );
        assert_eq!(names[8..10], ["features.10.weight", "features.10.bias"]);
        assert_eq!(names[24..26], ["features.28.weight", "features.28.bias"]);
        assert_eq!(
            names[26..],
            [
                "classifier.0.weight",
                "classifier.0.bias",
                "classifier.3.weight",
                "classifier.3.bias",
                "classifier.6.weight",
                "classifier.6.bias"
            ]
        );
        assert!(buffer_names(&mut net).is_empty());
        assert_eq!(net.output_shape(&[1, 3, 224, 224]).unwrap(), [1, 1000]);
        assert_eq!(
            net.output_shape(&[2, 3, 32, 32]).unwrap(),
            [2, 1000],
            "adaptive pooling takes 1×1 to 7×7"
        );

        let (rows, output) = summarize(net.as_ref(), &[1, 3, 224, 224]).unwrap();
        assert_eq!(output, [1, 1000]);
        let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
        assert_eq!(row("features.30").output, [1, 512, 7, 7]);
        assert_eq!(row("avgpool").output, [1, 512, 7, 7]);
        assert_eq!(row("flatten").output, [1, 25_088]);
        let fc1 = row("classifier.0");
        assert_eq!(fc1.parameters, 102_760_448 + 4_096);
        assert_eq!(fc1.mult_adds, 102_760_448);
        assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), 138_357_544);
        // Convolutions 15,346,630,656 + linear layers 123,633,664: the published 15.47 G.
        let total: u64 = rows.iter().map(|r| r.mult_adds).sum();
        assert!((total as f64 / 15.47e9 - 1.0).abs() < 0.005, "{total}");
        assert_eq!(total, 15_470_264_320);
    }

    /// The one real VGG of the tests: torchvision's initialisation, and a forward pass on a
    /// CIFAR-sized image, which adaptive pooling allows (32 → 1×1 after five pools → 7×7).
    #[test]
    fn vgg11_initialisation_and_forward_on_a_small_image() {
        let options = BuildOptions { in_channels: 3, classes: 10, seed: 1 };
        let mut net = vgg11(&options).unwrap();
        // 132,863,336 less the ImageNet head (4096·1000 + 1000) plus this one (4096·10 + 10).
        assert_eq!(parameter_count(net.as_mut()), 132_863_336 - 4_097_000 + 40_970);

        // He normal (fan out) for convolutions, N(0, 0.01²) for linear layers, zero biases.
        let params = named_parameters(net.as_mut());
        let std = |t: &Tensor| {
            let n = t.numel() as f64;
            let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
            (t.data().iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        let (name, conv) = (&params[4].0, params[4].1.value()); // Conv2d(128, 256, 3): fan_out 2304
        assert_eq!(name, "features.6.weight");
        assert!((std(conv) / (2.0f64 / 2304.0).sqrt() - 1.0).abs() < 0.02, "{}", std(conv));
        let (name, fc2) = (&params[18].0, params[18].1.value()); // 16.8 M values
        assert_eq!(name, "classifier.3.weight");
        assert!((std(fc2) / 0.01 - 1.0).abs() < 0.01, "{}", std(fc2));
        for (name, p) in &params {
            if name.ends_with("bias") {
                assert!(p.value().data().iter().all(|&v| v == 0.0), "{name}");
            }
        }
        drop(params);

        let data = (0..3 * 32 * 32).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let x = Var::constant(Tensor::new([1, 3, 32, 32], data).unwrap());
        let y = net.forward(&x, Mode::Eval).unwrap();
        assert_eq!(y.value().dims(), [1, 10]);
        assert!(y.value().data().iter().all(|v| v.is_finite()));
        assert!(y.value().data().iter().any(|&v| v != 0.0));
        // Eval mode has no dropout: the same input gives the same scores.
        assert_eq!(net.forward(&x, Mode::Eval).unwrap().value(), y.value());
    }

    #[test]
    fn configurations_and_errors() {
        let convs = |cfg: &[Stage]| cfg.iter().filter(|s| matches!(s, Stage::Conv(_))).count();
        for depth in [11, 13, 16, 19] {
            let cfg = config(depth).unwrap();
            assert_eq!(convs(cfg) + 3, depth);
            assert_eq!(cfg.iter().filter(|&&s| s == Stage::MaxPool).count(), 5);
        }
        let err = vgg(12, false, &IMAGENET).err().unwrap().to_string();
        assert_eq!(err, "vgg: invalid argument: depth must be 11, 13, 16 or 19, got 12");
        let seeds: Vec<u64> = (0..3).flat_map(|s| (0..2).map(move |i| dropout_seed(s, i))).collect();
        let mut unique = seeds.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len());
    }
}
