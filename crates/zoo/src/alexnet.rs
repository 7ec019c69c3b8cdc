//! AlexNet and ZFNet: the ImageNet winners of 2012 and 2013, five convolutions and three fully
//! connected layers each.
//!
//! - [`alexnet`]: torchvision's single-tower `alexnet` (the "one weird trick" variant of
//!   Krizhevsky 2014: 64-192-384-256-256 filters, no LRN, adaptive 6×6 pooling), with its names
//!   and PyTorch's default initialisation, so torchvision's weights load by name.
//! - [`alexnet2012`]: the network of Krizhevsky, Sutskever & Hinton 2012 as it ran on two GPUs:
//!   96-256-384-384-256 filters, with the towers' split kept as `groups = 2` in conv2, conv4 and
//!   conv5, and local response normalisation after conv1 and conv2.
//! - [`zfnet`]: Zeiler & Fergus 2013, AlexNet re-tuned after visualising it: 7×7 stride-2 first
//!   filters, stride-2 conv2, dense connections (one GPU), normalisation after the pooling.
//!
//! All three are laid out as torchvision's AlexNet, `features` (a `Sequential` numbered from 0),
//! the flattening, and `classifier` (a `Sequential`), and all start from PyTorch's default
//! `nn.Conv2d`/`nn.Linear` initialisation, as torchvision's `alexnet` does. (The papers drew
//! weights from N(0, 0.01²), AlexNet with some biases at 1; with LRN but no batch norm that start
//! is slow to leave, so the historical forms keep the same start as the modern one.)
//!
//! Local response normalisation is `LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)` with
//! PyTorch's and Caffe's convention `x / (k + α/n · Σ x²)^β`; the two historical classifiers put
//! dropout after the ReLUs of the first two fully connected layers ("dropout in the first two
//! fully-connected layers", as in Caffe's reference AlexNet), where torchvision's puts it before
//! them.

use stride_nn::init::{pytorch_default_conv_or_linear, rng};
use stride_nn::layers::{
    Activation, AdaptiveAvgPool, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm, Pool,
};
use stride_nn::module::{Module, Sequential};
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;
use stride_tensor::{Result, Tensor};

use crate::BuildOptions;
use crate::vgg::dropout_seed;

/// Draws a `(weight, bias)` pair for a weight shape `[out, in, *k]`.
trait Draw: FnMut(&[usize]) -> Result<(Tensor, Tensor)> {}
impl<F: FnMut(&[usize]) -> Result<(Tensor, Tensor)>> Draw for F {}

/// `Conv2d(in_channels, out_channels, kernel)` with `spec` (its groups included).
fn conv(
    draw: &mut impl Draw,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    spec: ConvSpec<2>,
) -> Result<Box<dyn Module>> {
    let (weight, bias) = draw(&[out_channels, in_channels / spec.groups, kernel, kernel])?;
    Ok(Box::new(Conv2d::from_parts(weight, Some(bias), spec)?))
}

fn linear(draw: &mut impl Draw, inputs: usize, outputs: usize) -> Result<Box<dyn Module>> {
    let (weight, bias) = draw(&[outputs, inputs])?;
    Ok(Box::new(Linear::from_parts(weight, Some(bias))?))
}

fn relu() -> Box<dyn Module> {
    Box::new(Activation::ReLU)
}

/// Overlapping max pooling, 3×3 windows at stride 2 (AlexNet §3.4).
fn max_pool() -> PoolSpec<2> {
    PoolSpec::new(3).stride(2)
}

fn pool(spec: PoolSpec<2>) -> Box<dyn Module> {
    Box::new(Pool::<2>::max(spec))
}

/// AlexNet §3.3's normalisation: n = 5 channels, α = 10⁻⁴, β = 0.75, k = 2.
fn lrn() -> Box<dyn Module> {
    Box::new(LocalResponseNorm { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 })
}

fn dropout(seed: u64, index: u64) -> Result<Box<dyn Module>> {
    Ok(Box::new(Dropout::new(0.5, dropout_seed(seed, index))?))
}

/// The historical classifier: fc6 9216 → 4096, fc7 4096 → 4096, each with ReLU and dropout,
/// fc8 4096 → classes (`classifier.0`, `.3`, `.6`).
fn classifier_2012(draw: &mut impl Draw, classes: usize, seed: u64) -> Result<Sequential> {
    Ok(Sequential::new(vec![
        linear(draw, 256 * 6 * 6, 4096)?,
        relu(),
        dropout(seed, 0)?,
        linear(draw, 4096, 4096)?,
        relu(),
        dropout(seed, 1)?,
        linear(draw, 4096, classes)?,
    ]))
}

/// `features`, the flattening and `classifier` under torchvision's names, with `avgpool`
/// between them where there is one.
fn assemble(features: Sequential, avgpool: Option<[usize; 2]>, classifier: Sequential) -> Box<dyn Module> {
    let mut layers: Vec<(&str, Box<dyn Module>)> = vec![("features", Box::new(features))];
    if let Some(output) = avgpool {
        layers.push(("avgpool", Box::new(AdaptiveAvgPool::<2> { output })));
    }
    layers.push(("flatten", Box::new(Flatten::default())));
    layers.push(("classifier", Box::new(classifier)));
    Box::new(Sequential::named(layers))
}

/// torchvision's `alexnet`, 61,100,840 parameters for 3 channels and 1000 classes:
///
/// ```text
/// features.0   Conv2d(C, 64, 11, stride 4, padding 2)  224 → 55   ReLU, MaxPool 3/2 → 27
/// features.3   Conv2d(64, 192, 5, padding 2)           27         ReLU, MaxPool 3/2 → 13
/// features.6   Conv2d(192, 384, 3, padding 1)          13         ReLU
/// features.8   Conv2d(384, 256, 3, padding 1)          13         ReLU
/// features.10  Conv2d(256, 256, 3, padding 1)          13         ReLU, MaxPool 3/2 → 6
/// avgpool      AdaptiveAvgPool2d((6, 6))               then flatten: 9216
/// classifier   Dropout, Linear(9216, 4096) (.1), ReLU, Dropout, Linear(4096, 4096) (.4), ReLU,
///              Linear(4096, classes) (.6)
/// ```
///
/// 0.71 G multiply-adds at 224×224 (655.6 M in the convolutions, 58.6 M in the classifier).
pub fn alexnet(options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    let draw = &mut |shape: &[usize]| pytorch_default_conv_or_linear(shape, &mut rng);
    let c = options.in_channels;
    let features = Sequential::new(vec![
        conv(draw, c, 64, 11, ConvSpec::new().stride(4).padding(2))?,
        relu(),
        pool(max_pool()),
        conv(draw, 64, 192, 5, ConvSpec::new().padding(2))?,
        relu(),
        pool(max_pool()),
        conv(draw, 192, 384, 3, ConvSpec::new().padding(1))?,
        relu(),
        conv(draw, 384, 256, 3, ConvSpec::new().padding(1))?,
        relu(),
        conv(draw, 256, 256, 3, ConvSpec::new().padding(1))?,
        relu(),
        pool(max_pool()),
    ]);
    let classifier = Sequential::new(vec![
        dropout(options.seed, 0)?,
        linear(draw, 256 * 6 * 6, 4096)?,
        relu(),
        dropout(options.seed, 1)?,
        linear(draw, 4096, 4096)?,
        relu(),
        linear(draw, 4096, options.classes)?,
    ]);
    Ok(assemble(features, Some([6, 6]), classifier))
}

fn alexnet2012_features(in_channels: usize, draw: &mut impl Draw) -> Result<Sequential> {
    let two_towers = ConvSpec::new().groups(2);
    Ok(Sequential::new(vec![
        conv(draw, in_channels, 96, 11, ConvSpec::new().stride(4))?,
        relu(),
        lrn(),
        pool(max_pool()),
        conv(draw, 96, 256, 5, two_towers.padding(2))?,
        relu(),
        lrn(),
        pool(max_pool()),
        conv(draw, 256, 384, 3, ConvSpec::new().padding(1))?,
        relu(),
        conv(draw, 384, 384, 3, two_towers.padding(1))?,
        relu(),
        conv(draw, 384, 256, 3, two_towers.padding(1))?,
        relu(),
        pool(max_pool()),
    ]))
}

/// AlexNet as Krizhevsky, Sutskever & Hinton 2012 trained it on two GPUs, on 227×227 input (the
/// paper says 224, but 11×11 filters at stride 4 give its 55×55 maps only from 227). A layer
/// whose kernels see only their own GPU's maps is a grouped convolution with `groups = 2`:
///
/// ```text
///                                                            output     parameters
/// features.0   Conv2d(C, 96, 11, stride 4)                   55×55×96   96·3·121 + 96       =     34,944
///              ReLU, LRN, MaxPool 3/2                        27×27×96
/// features.4   Conv2d(96, 256, 5, padding 2, groups 2)       27×27×256  256·48·25 + 256     =    307,456
///              ReLU, LRN, MaxPool 3/2                        13×13×256
/// features.8   Conv2d(256, 384, 3, padding 1) (all maps)     13×13×384  384·256·9 + 384     =    885,120
/// features.10  Conv2d(384, 384, 3, padding 1, groups 2)      13×13×384  384·192·9 + 384     =    663,936
/// features.12  Conv2d(384, 256, 3, padding 1, groups 2)      13×13×256  256·192·9 + 256     =    442,624
///              ReLU, MaxPool 3/2                             6×6×256 → flatten 9216
/// classifier.0 Linear(9216, 4096), ReLU, Dropout             4096       9216·4096 + 4096    = 37,752,832
/// classifier.3 Linear(4096, 4096), ReLU, Dropout             4096       4096·4096 + 4096    = 16,781,312
/// classifier.6 Linear(4096, classes)                         1000       4096·1000 + 1000    =  4,097,000
///                                                                   convolutions 2,334,080 + fc 58,631,144
///                                                                                           = 60,965,224
/// ```
///
/// for 3 channels and 1000 classes: the paper's "60 million parameters". 724.4 M multiply-adds
/// (conv1 105.4 M, conv2 223.9 M, conv3 149.5 M, conv4 112.1 M, conv5 74.8 M, fc 58.6 M).
pub fn alexnet2012(options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    let draw = &mut |shape: &[usize]| pytorch_default_conv_or_linear(shape, &mut rng);
    let features = alexnet2012_features(options.in_channels, draw)?;
    let classifier = classifier_2012(draw, options.classes, options.seed)?;
    Ok(assemble(features, None, classifier))
}

/// ZFNet's pooling: AlexNet's 3×3 windows at stride 2, with the output size rounded up (the
/// convention of cuda-convnet, which Zeiler & Fergus's sizes follow: 110 → 55 and 26 → 13,
/// where rounding down gives 54 and 12; 13 → 6 either way).
fn zf_pool() -> PoolSpec<2> {
    max_pool().ceil_mode(true)
}

fn zfnet_features(in_channels: usize, draw: &mut impl Draw) -> Result<Sequential> {
    Ok(Sequential::new(vec![
        conv(draw, in_channels, 96, 7, ConvSpec::new().stride(2).padding(1))?,
        relu(),
        pool(zf_pool()),
        lrn(),
        conv(draw, 96, 256, 5, ConvSpec::new().stride(2))?,
        relu(),
        pool(zf_pool()),
        lrn(),
        conv(draw, 256, 384, 3, ConvSpec::new().padding(1))?,
        relu(),
        conv(draw, 384, 384, 3, ConvSpec::new().padding(1))?,
        relu(),
        conv(draw, 384, 256, 3, ConvSpec::new().padding(1))?,
        relu(),
        pool(zf_pool()),
    ]))
}

/// ZFNet (Zeiler & Fergus 2013, "Visualizing and understanding convolutional networks"), the
/// sizes of their Fig. 3 on 224×224 input, on one GPU (dense conv3–conv5):
///
/// ```text
///                                                            output     parameters
/// features.0   Conv2d(C, 96, 7, stride 2, padding 1)         110×110×96     14,208
///              ReLU, MaxPool 3/2 (ceil), LRN                 55×55×96
/// features.4   Conv2d(96, 256, 5, stride 2)                  26×26×256     614,656
///              ReLU, MaxPool 3/2 (ceil), LRN                 13×13×256
/// features.8   Conv2d(256, 384, 3, padding 1)                13×13×384     885,120
/// features.10  Conv2d(384, 384, 3, padding 1)                13×13×384   1,327,488
/// features.12  Conv2d(384, 256, 3, padding 1)                13×13×256     884,992
///              ReLU, MaxPool 3/2 (ceil)                      6×6×256 → flatten 9216
/// classifier   as alexnet2012's: 9216 → 4096 → 4096 → classes            58,631,144
///                                                                       = 62,357,608
/// ```
///
/// The paper gives the sizes, not the paddings: conv1 pads 1 (⌊(224 + 2 − 7)/2⌋ + 1 = 110),
/// conv2 pads 0 (⌊(55 − 5)/2⌋ + 1 = 26), the pools pad 0 and round up (`ceil_mode`). Padding the
/// first two pools by 1 instead would give the same sizes. 1.17 G multiply-adds.
pub fn zfnet(options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    let draw = &mut |shape: &[usize]| pytorch_default_conv_or_linear(shape, &mut rng);
    let features = zfnet_features(options.in_channels, draw)?;
    let classifier = classifier_2012(draw, options.classes, options.seed)?;
    Ok(assemble(features, None, classifier))
}

#[cfg(test)]
mod tests {
    use stride_nn::module::{Mode, named_parameters, parameter_count, summarize};
    use stride_tensor::autograd::{self, Var};

    use super::*;

    const IMAGENET: BuildOptions = BuildOptions { in_channels: 3, classes: 1000, seed: 0 };

    fn names(net: &mut Box<dyn Module>) -> Vec<String> {
        named_parameters(net.as_mut()).into_iter().map(|(n, _)| n).collect()
    }

    /// The output shape after each convolution and pooling layer of `features`, walked with
    /// `output_shape` alone.
    fn sizes(features: &Sequential, input: &[usize]) -> Vec<(String, Vec<usize>)> {
        let mut shape = input.to_vec();
        let mut out = Vec::new();
        for (name, layer) in features.layers() {
            shape = layer.output_shape(&shape).unwrap();
            let kind = layer.describe();
            if kind.starts_with("Conv2d") || kind.starts_with("MaxPool2d") {
                out.push((name.to_string(), shape.clone()));
            }
        }
        out
    }

    fn no_weights(shape: &[usize]) -> Result<(Tensor, Tensor)> {
        Ok((Tensor::zeros(shape)?, Tensor::zeros([shape[0]])?))
    }

    fn total_mult_adds(net: &dyn Module, input: &[usize]) -> u64 {
        summarize(net, input).unwrap().0.iter().map(|r| r.mult_adds).sum()
    }

    #[test]
    fn alexnet_matches_torchvision() {
        let mut net = alexnet(&IMAGENET).unwrap();
        assert_eq!(parameter_count(net.as_mut()), 61_100_840);
        assert_eq!(
            names(&mut net),
            [
                "features.0.weight",
                "features.0.bias",
                "features.3.weight",
                "features.3.bias",
                "features.6.weight",
                "features.6.bias",
                "features.8.weight",
                "features.8.bias",
                "features.10.weight",
                "features.10.bias",
                "classifier.1.weight",
                "classifier.1.bias",
                "classifier.4.weight",
                "classifier.4.bias",
                "classifier.6.weight",
                "classifier.6.bias"
            ]
        );
        assert_eq!(net.output_shape(&[1, 3, 224, 224]).unwrap(), [1, 1000]);
        let (rows, output) = summarize(net.as_ref(), &[1, 3, 224, 224]).unwrap();
        assert_eq!(output, [1, 1000]);
        let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
        assert_eq!(row("features.0").output, [1, 64, 55, 55]);
        assert_eq!(row("features.12").output, [1, 256, 6, 6]);
        assert_eq!(row("classifier.1").parameters, 9216 * 4096 + 4096);
        // Convolutions 655,566,528 + classifier 58,621,952: torchvision's 0.71 G.
        let total: u64 = rows.iter().map(|r| r.mult_adds).sum();
        assert_eq!(total, 714_188_480);
        assert!((total as f64 / 0.71e9 - 1.0).abs() < 0.01);

        // The same seed builds the same weights, another seed others.
        let first = |net: &mut Box<dyn Module>| named_parameters(net.as_mut())[0].1.value().clone();
        let mut again = alexnet(&IMAGENET).unwrap();
        let mut other = alexnet(&BuildOptions { seed: 1, ..IMAGENET }).unwrap();
        assert_eq!(first(&mut net), first(&mut again));
        assert_ne!(first(&mut net), first(&mut other));
    }

    #[test]
    fn alexnet2012_has_two_towers_and_60_97_million_parameters() {
        let mut net = alexnet2012(&IMAGENET).unwrap();
        // By hand (see the doc table): 34,944 + 307,456 + 885,120 + 663,936 + 442,624
        // + 37,752,832 + 16,781,312 + 4,097,000.
        assert_eq!(parameter_count(net.as_mut()), 60_965_224);
        let params = named_parameters(net.as_mut());
        let shapes: Vec<(&str, &[usize])> = params
            .iter()
            .map(|(n, p)| (n.as_str(), p.value().dims()))
            .filter(|(n, _)| n.ends_with("weight"))
            .collect();
        assert_eq!(
            shapes,
            [
                ("features.0.weight", &[96, 3, 11, 11][..]),
                ("features.4.weight", &[256, 48, 5, 5][..]),
                ("features.8.weight", &[384, 256, 3, 3][..]),
                ("features.10.weight", &[384, 192, 3, 3][..]),
                ("features.12.weight", &[256, 192, 3, 3][..]),
                ("classifier.0.weight", &[4096, 9216][..]),
                ("classifier.3.weight", &[4096, 4096][..]),
                ("classifier.6.weight", &[1000, 4096][..]),
            ]
        );
        drop(params);
        assert_eq!(net.output_shape(&[1, 3, 227, 227]).unwrap(), [1, 1000]);
        let err = net.output_shape(&[1, 3, 224, 224]).unwrap_err().to_string();
        assert!(err.contains("expects [N, 9216]"), "{err}");
        assert_eq!(total_mult_adds(net.as_ref(), &[1, 3, 227, 227]), 724_406_816);

        let features = alexnet2012_features(3, &mut no_weights).unwrap();
        let sizes = sizes(&features, &[1, 3, 227, 227]);
        let expected: [(&str, [usize; 4]); 8] = [
            ("0", [1, 96, 55, 55]),
            ("3", [1, 96, 27, 27]),
            ("4", [1, 256, 27, 27]),
            ("7", [1, 256, 13, 13]),
            ("8", [1, 384, 13, 13]),
            ("10", [1, 384, 13, 13]),
            ("12", [1, 256, 13, 13]),
            ("14", [1, 256, 6, 6]),
        ];
        let expected: Vec<(String, Vec<usize>)> =
            expected.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
        assert_eq!(sizes, expected);
        let describe: Vec<String> = features.layers().map(|(_, l)| l.describe()).collect();
        assert!(
            describe[2].starts_with("LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=2"),
            "{}",
            describe[2]
        );
        assert!(describe[4].ends_with("groups=2)"), "{}", describe[4]);
        assert!(!describe[8].contains("groups"), "{}", describe[8]);
    }

    #[test]
    fn zfnet_follows_figure_3() {
        let mut net = zfnet(&IMAGENET).unwrap();
        assert_eq!(parameter_count(net.as_mut()), 62_357_608);
        let names = names(&mut net);
        assert_eq!(names[..2], ["features.0.weight", "features.0.bias"]);
        assert_eq!(names[names.len() - 2..], ["classifier.6.weight", "classifier.6.bias"]);
        assert_eq!(net.output_shape(&[1, 3, 224, 224]).unwrap(), [1, 1000]);
        // conv1 170.8 M, conv2 415.3 M, conv3 149.5 M, conv4 224.3 M, conv5 149.5 M, fc 58.6 M.
        assert_eq!(total_mult_adds(net.as_ref(), &[1, 3, 224, 224]), 1_168_032_896);

        // 224 → 110 → 55 → 26 → 13 → 13 → 13 → 13 → 6, the sizes of the paper's Fig. 3.
        let features = zfnet_features(3, &mut no_weights).unwrap();
        let sizes = sizes(&features, &[1, 3, 224, 224]);
        let expected: [(&str, [usize; 4]); 8] = [
            ("0", [1, 96, 110, 110]),
            ("2", [1, 96, 55, 55]),
            ("4", [1, 256, 26, 26]),
            ("6", [1, 256, 13, 13]),
            ("8", [1, 384, 13, 13]),
            ("10", [1, 384, 13, 13]),
            ("12", [1, 256, 13, 13]),
            ("14", [1, 256, 6, 6]),
        ];
        let expected: Vec<(String, Vec<usize>)> =
            expected.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
        assert_eq!(sizes, expected);
        let describe: Vec<String> = features.layers().map(|(_, l)| l.describe()).collect();
        assert!(describe[3].starts_with("LocalResponseNorm"), "{}", describe[3]);
        assert!(describe[2].ends_with("ceil_mode=true)"), "{}", describe[2]);
    }

    /// One training step through the LRN and grouped layers of the historical forms on a batch
    /// of two: finite scores of the right shape and a gradient on every parameter.
    #[test]
    fn historical_forms_run_forward_and_backward() {
        type Builder = fn(&BuildOptions) -> Result<Box<dyn Module>>;
        let cases: [(Builder, usize); 2] = [(alexnet2012, 227), (zfnet, 224)];
        for (build, size) in cases {
            let mut net = build(&BuildOptions { in_channels: 3, classes: 10, seed: 2 }).unwrap();
            let data = (0..2 * 3 * size * size).map(|i| ((i * 7 % 23) as f32 - 11.0) / 11.0).collect();
            let x = Var::constant(Tensor::new([2, 3, size, size], data).unwrap());
            let y = net.forward(&x, Mode::Train).unwrap();
            assert_eq!(y.value().dims(), [2, 10]);
            assert!(y.value().data().iter().all(|v| v.is_finite()));
            autograd::cross_entropy(&y, &[1, 7], 0.0).unwrap().backward().unwrap();
            for (name, p) in named_parameters(net.as_mut()) {
                let grad = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
                assert_eq!(grad.dims(), p.value().dims(), "{name}");
            }
        }
    }
}
