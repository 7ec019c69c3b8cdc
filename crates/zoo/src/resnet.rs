//! Residual networks (He et al. 2015, Deep residual learning for image recognition): a stack of
//! blocks that each learn a residual `F(x)` added to a shortcut `x`, so that very deep networks
//! still train.
//!
//! Two families, both built from [`ResidualBlock`]s:
//!
//! - The ImageNet ResNets `resnet18/34/50/101/152`, laid out and named exactly as torchvision's
//!   (`torchvision.models.resnet`), so their parameters and buffers carry torchvision's state_dict
//!   names and shapes and the parameter counts are torchvision's:
//!
//!   ```text
//!   conv1    Conv2d(C, 64, 7, stride=2, padding=3, bias=False)  → bn1 → relu    112×112×64
//!   maxpool  MaxPool2d(3, stride=2, padding=1)                                   56×56×64
//!   layer1   blocks of 64 planes                                                 56×56×64·e
//!   layer2   blocks of 128 planes, the first with stride 2                       28×28×128·e
//!   layer3   blocks of 256 planes, the first with stride 2                       14×14×256·e
//!   layer4   blocks of 512 planes, the first with stride 2                         7×7×512·e
//!   avgpool  AdaptiveAvgPool2d((1, 1)) → flatten → fc Linear(512·e, classes)
//!   ```
//!
//!   with BasicBlocks (expansion e = 1: 3×3, 3×3) for resnet18 [2, 2, 2, 2] and resnet34
//!   [3, 4, 6, 3], and Bottlenecks (e = 4: 1×1, 3×3, 1×1; torchvision's "v1.5", whose stride sits
//!   on the 3×3) for resnet50 [3, 4, 6, 3], resnet101 [3, 4, 23, 3] and resnet152 [3, 8, 36, 3].
//!   Where a block changes the shape, its shortcut is the projection `downsample.0` (1×1
//!   convolution with the block's stride, no bias) and `downsample.1` (BatchNorm2d).
//!   Initialisation as torchvision: convolutions `kaiming_normal_(mode='fan_out',
//!   nonlinearity='relu')`, batch norm γ = 1, β = 0, `fc` PyTorch's default.
//!
//! - The CIFAR-10 ResNets of the paper's §4.2, `resnet20/32/44/56/110` (6n + 2 layers, n = 3, 5,
//!   7, 9, 18): conv1 3×3 with 16 filters → bn1 → relu, then three stages of n BasicBlocks at
//!   32×32×16, 16×16×32 and 8×8×64 (the first block of stages 2 and 3 with stride 2), global
//!   average pooling and `fc` Linear(64, classes). Shortcuts are the paper's option A, free of
//!   parameters: the identity, or where the shape changes `x[:, :, ::2, ::2]` with the new channels
//!   zero-padded equally before and after (`planes/4` each side), as the common PyTorch
//!   implementation (akamaster/pytorch_resnet_cifar10) does; layers are named as there, except
//!   that its `linear` is called `fc` here. Its initialisation too: `kaiming_normal_` with the
//!   default `mode='fan_in'` (gain √2) for the convolutions and the weight of `fc`, whose bias
//!   keeps PyTorch's default.

use stride_nn::init::{FanMode, Nonlinearity, kaiming_normal, pytorch_default_conv_or_linear, rng};
use stride_nn::layers::{Activation, AdaptiveAvgPool, Conv2d, Flatten, Linear, Pool};
use stride_nn::module::{LayerSummary, Mode, Module, NamedBuffer, NamedVar, Sequential, Tap, join, no_tap};
use stride_nn::norm::BatchNorm2d;
use stride_tensor::autograd::{self, Var};
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;
use stride_tensor::{Error, Result, Shape, Tensor};

use crate::BuildOptions;

/// ResNet-18 (torchvision): BasicBlocks [2, 2, 2, 2], 11,689,512 parameters for 3×224×224 and
/// 1000 classes.
pub fn resnet18(options: &BuildOptions) -> Result<Box<dyn Module>> {
    imagenet_resnet(BlockKind::Basic, [2, 2, 2, 2], options)
}

/// ResNet-34 (torchvision): BasicBlocks [3, 4, 6, 3], 21,797,672 parameters.
pub fn resnet34(options: &BuildOptions) -> Result<Box<dyn Module>> {
    imagenet_resnet(BlockKind::Basic, [3, 4, 6, 3], options)
}

/// ResNet-50 (torchvision v1.5): Bottlenecks [3, 4, 6, 3], 25,557,032 parameters.
pub fn resnet50(options: &BuildOptions) -> Result<Box<dyn Module>> {
    imagenet_resnet(BlockKind::Bottleneck, [3, 4, 6, 3], options)
}

/// ResNet-101 (torchvision v1.5): Bottlenecks [3, 4, 23, 3], 44,549,160 parameters.
pub fn resnet101(options: &BuildOptions) -> Result<Box<dyn Module>> {
    imagenet_resnet(BlockKind::Bottleneck, [3, 4, 23, 3], options)
}

/// ResNet-152 (torchvision v1.5): Bottlenecks [3, 8, 36, 3], 60,192,808 parameters.
pub fn resnet152(options: &BuildOptions) -> Result<Box<dyn Module>> {
    imagenet_resnet(BlockKind::Bottleneck, [3, 8, 36, 3], options)
}

/// The CIFAR ResNet-20 (n = 3), 269,722 parameters for 3×32×32 and 10 classes (the paper's 0.27M).
pub fn resnet20(options: &BuildOptions) -> Result<Box<dyn Module>> {
    cifar_resnet(3, options)
}

/// The CIFAR ResNet-32 (n = 5), 464,154 parameters (0.46M).
pub fn resnet32(options: &BuildOptions) -> Result<Box<dyn Module>> {
    cifar_resnet(5, options)
}

/// The CIFAR ResNet-44 (n = 7), 658,586 parameters (0.66M).
pub fn resnet44(options: &BuildOptions) -> Result<Box<dyn Module>> {
    cifar_resnet(7, options)
}

/// The CIFAR ResNet-56 (n = 9), 853,018 parameters (0.85M).
pub fn resnet56(options: &BuildOptions) -> Result<Box<dyn Module>> {
    cifar_resnet(9, options)
}

/// The CIFAR ResNet-110 (n = 18), 1,727,962 parameters (1.7M).
pub fn resnet110(options: &BuildOptions) -> Result<Box<dyn Module>> {
    cifar_resnet(18, options)
}

/// Which residual block a network stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (resnet18/34 and the CIFAR nets); expansion 1.
    Basic,
    /// 1×1 reducing, 3×3 (with the block's stride), 1×1 expanding to 4× the planes.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per plane: 1 for [`BlockKind::Basic`], 4 for [`BlockKind::Bottleneck`].
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// torchvision's class name.
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Basic => "BasicBlock",
            BlockKind::Bottleneck => "Bottleneck",
        }
    }
}

/// What a block's shortcut is where the shape changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShortcutStyle {
    /// torchvision's (the paper's option B): `downsample` = 1×1 convolution + batch norm.
    Projection,
    /// The paper's option A: subsample and zero-pad the channels, no parameters (`shortcut`).
    ZeroPad,
}

const CONV_NAMES: [&str; 3] = ["conv1", "conv2", "conv3"];
const BN_NAMES: [&str; 3] = ["bn1", "bn2", "bn3"];

/// A residual block: `relu(main(x) + shortcut(x))`, where the main path is `conv1 → bn1 → relu →
/// conv2 → bn2` ([`BlockKind::Basic`]) or the same with a third `conv3 → bn3`
/// ([`BlockKind::Bottleneck`]), and the shortcut is the identity unless the block changes the
/// shape.
pub struct ResidualBlock {
    kind: BlockKind,
    /// `(conv{i+1}, bn{i+1})`, with a ReLU after each pair but the last.
    main: Vec<(Conv2d, BatchNorm2d)>,
    /// `downsample` (torchvision) or `shortcut` (option A) with its name; the identity if `None`.
    shortcut: Option<(&'static str, Box<dyn Module>)>,
}

/// Draws a convolution weight `[out, in, k, k]` from the network's initialiser and generator.
type DrawWeight<'a> = dyn FnMut([usize; 4]) -> Result<Tensor> + 'a;

/// A bias-free `k×k` convolution with "same" padding `k/2` for odd `k` (torchvision's `conv1x1`,
/// `conv3x3` and the 7×7 stem).
fn conv(cin: usize, cout: usize, k: usize, stride: usize, draw: &mut DrawWeight) -> Result<Conv2d> {
    Conv2d::from_parts(draw([cout, cin, k, k])?, None, ConvSpec::new().stride(stride).padding(k / 2))
}

impl ResidualBlock {
    /// torchvision's `BasicBlock(inplanes, planes, stride, downsample)` or
    /// `Bottleneck(inplanes, planes, stride, downsample)`, the downsample made where `stride ≠ 1`
    /// or `inplanes ≠ planes·expansion` as `_make_layer` does. Weights are drawn in state_dict
    /// order.
    fn new(
        kind: BlockKind,
        inplanes: usize,
        planes: usize,
        stride: usize,
        style: ShortcutStyle,
        draw: &mut DrawWeight,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        // (in, out, kernel, stride) of each convolution of the main path.
        let convs = match kind {
            BlockKind::Basic => vec![(inplanes, planes, 3, stride), (planes, planes, 3, 1)],
            BlockKind::Bottleneck => {
                vec![(inplanes, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)]
            }
        };
        let main = convs
            .into_iter()
            .map(|(cin, cout, k, s)| Ok((conv(cin, cout, k, s, draw)?, BatchNorm2d::new(cout)?)))
            .collect::<Result<Vec<_>>>()?;
        let shortcut: Option<(&'static str, Box<dyn Module>)> = if stride != 1 || inplanes != out {
            Some(match style {
                ShortcutStyle::Projection => (
                    "downsample",
                    Box::new(Sequential::new(vec![
                        Box::new(conv(inplanes, out, 1, stride, draw)?),
                        Box::new(BatchNorm2d::new(out)?),
                    ])),
                ),
                ShortcutStyle::ZeroPad => {
                    ("shortcut", Box::new(ZeroPadShortcut::new(inplanes, out, stride)?))
                }
            })
        } else {
            None
        };
        Ok(ResidualBlock { kind, main, shortcut })
    }

    /// The residual sum needs the main path and the shortcut to give the same shape.
    fn check_agree(&self, main: &[usize], shortcut: &[usize]) -> Result<()> {
        if main != shortcut {
            return Err(Error::shape(
                self.kind.name(),
                format!(
                    "the main path gives {} but the shortcut gives {}; the residual sum needs equal shapes",
                    Shape::from(main),
                    Shape::from(shortcut)
                ),
            ));
        }
        Ok(())
    }

    /// The forward, reporting to `tap` if there is one. Untapped, in training, each batch norm
    /// but the last runs as one operation with the ReLU after it (the same values and gradients,
    /// fewer passes over the activations); a tap sees the batch norm's own output, so a tapped
    /// run keeps the two apart.
    fn run(&mut self, prefix: &str, x: &Var, mode: Mode, tap: Option<&mut Tap<'_>>) -> Result<Var> {
        let fuse = tap.is_none();
        let mut silent = no_tap;
        let tap: &mut Tap<'_> = match tap {
            Some(tap) => tap,
            None => &mut silent,
        };
        let last = self.main.len() - 1;
        let mut h = x.clone();
        for (i, (conv, bn)) in self.main.iter_mut().enumerate() {
            let (conv_name, bn_name) = (CONV_NAMES[i], BN_NAMES[i]);
            h = conv
                .forward_tapped(&join(prefix, conv_name), &h, mode, tap)
                .map_err(|e| e.within(conv_name))?;
            // Folded for inference, the convolution applies the ReLU itself.
            let relu = i < last && !conv.relu_fused();
            h = if relu && fuse {
                bn.forward_relu(&h, mode)
            } else {
                bn.forward_tapped(&join(prefix, bn_name), &h, mode, tap)
            }
            .map_err(|e| e.within(bn_name))?;
            if relu && !fuse {
                h = autograd::relu(&h);
            }
        }
        let identity = match &mut self.shortcut {
            Some((name, shortcut)) => {
                shortcut.forward_tapped(&join(prefix, name), x, mode, tap).map_err(|e| e.within(name))?
            }
            None => x.clone(),
        };
        // The residual sum must not broadcast (add_relu refuses to, but this names the block).
        self.check_agree(h.value().dims(), identity.value().dims())?;
        autograd::add_relu(&h, &identity)
    }
}

impl Module for ResidualBlock {
    fn fold_batch_norm(&mut self) -> Result<()> {
        let last = self.main.len() - 1;
        for (i, (conv, bn)) in self.main.iter_mut().enumerate() {
            bn.fold_into(conv).map_err(|e| e.within(BN_NAMES[i]))?;
            if i < last {
                conv.fuse_relu();
            }
        }
        match &mut self.shortcut {
            Some((name, shortcut)) => shortcut.fold_batch_norm().map_err(|e| e.within(name)),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (i, (conv, bn)) in self.main.iter().enumerate() {
            lines.push(format!("  ({}): {}", CONV_NAMES[i], conv.describe()));
            lines.push(format!("  ({}): {}", BN_NAMES[i], bn.describe()));
        }
        lines.push(format!("  (relu): {}", Activation::ReLU.describe()));
        if let Some((name, shortcut)) = &self.shortcut {
            lines.push(format!("  ({name}): {}", shortcut.describe().replace('\n', "\n  ")));
        }
        format!("{}(\n{}\n)", self.kind.name(), lines.join("\n"))
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.run("", x, mode, None)
    }

    /// Reports the main path's convolutions and batch norms, then the shortcut's leaves; the
    /// ReLUs and the residual sum have no path.
    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        self.run(prefix, x, mode, Some(tap))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (i, (conv, bn)) in self.main.iter().enumerate() {
            shape = conv.output_shape(&shape).map_err(|e| e.within(CONV_NAMES[i]))?;
            shape = bn.output_shape(&shape).map_err(|e| e.within(BN_NAMES[i]))?;
        }
        let identity = match &self.shortcut {
            Some((name, shortcut)) => shortcut.output_shape(input).map_err(|e| e.within(name))?,
            None => input.to_vec(),
        };
        self.check_agree(&shape, &identity)?;
        Ok(shape)
    }

    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (i, (conv, bn)) in self.main.iter().enumerate() {
            let (conv_name, bn_name) = (CONV_NAMES[i], BN_NAMES[i]);
            shape =
                conv.summarize(&join(prefix, conv_name), &shape, rows).map_err(|e| e.within(conv_name))?;
            shape = bn.summarize(&join(prefix, bn_name), &shape, rows).map_err(|e| e.within(bn_name))?;
        }
        let identity = match &self.shortcut {
            Some((name, shortcut)) => {
                shortcut.summarize(&join(prefix, name), input, rows).map_err(|e| e.within(name))?
            }
            None => input.to_vec(),
        };
        self.check_agree(&shape, &identity)?;
        Ok(shape)
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        for (i, (conv, bn)) in self.main.iter_mut().enumerate() {
            conv.parameters(&join(prefix, CONV_NAMES[i]), out);
            bn.parameters(&join(prefix, BN_NAMES[i]), out);
        }
        if let Some((name, shortcut)) = &mut self.shortcut {
            shortcut.parameters(&join(prefix, name), out);
        }
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        for (i, (_, bn)) in self.main.iter_mut().enumerate() {
            bn.buffers(&join(prefix, BN_NAMES[i]), out);
        }
        if let Some((name, shortcut)) = &mut self.shortcut {
            shortcut.buffers(&join(prefix, name), out);
        }
    }
}

/// The paper's option A shortcut, as akamaster/pytorch_resnet_cifar10's `LambdaLayer`:
/// `F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, planes // 4, planes // 4))`, i.e. every `s`-th row and
/// column (`⌈H/s⌉ × ⌈W/s⌉`, the size a 3×3 convolution with stride `s` and padding 1 gives), and
/// `planes/4` zero channels before and after the input's. No parameters.
pub struct ZeroPadShortcut {
    in_channels: usize,
    /// Zero channels on each side.
    pad: usize,
    step: usize,
}

impl ZeroPadShortcut {
    /// From `in_channels` to `out_channels = in_channels + 2·(out_channels/4)` (16 → 32, 32 → 64),
    /// subsampling by `step`.
    pub fn new(in_channels: usize, out_channels: usize, step: usize) -> Result<Self> {
        let pad = out_channels / 4;
        if in_channels + 2 * pad != out_channels || step == 0 {
            return Err(Error::invalid(
                "option A shortcut",
                format!(
                    "pads {pad} = {out_channels}/4 channels on each side, so it goes from {} channels to {out_channels} with a step of at least 1; got {in_channels} channels and step {step}",
                    out_channels - 2 * pad
                ),
            ));
        }
        Ok(ZeroPadShortcut { in_channels, pad, step })
    }
}

impl Module for ZeroPadShortcut {
    fn describe(&self) -> String {
        let (s, p) = (self.step, self.pad);
        format!("LambdaLayer(F.pad(x[:, :, ::{s}, ::{s}], (0, 0, 0, 0, {p}, {p})))")
    }

    fn forward(&mut self, x: &Var, _: Mode) -> Result<Var> {
        let dims = x.value().dims();
        self.output_shape(dims)?;
        let (h, w) = (dims[2], dims[3]);
        let sub = autograd::slice(x, 2, 0, h, self.step)?;
        let sub = autograd::slice(&sub, 3, 0, w, self.step)?;
        autograd::pad(&sub, &[(0, 0), (self.pad, self.pad), (0, 0), (0, 0)], 0.0)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [n, c, h, w] if c == self.in_channels => {
                Ok(vec![n, c + 2 * self.pad, h.div_ceil(self.step), w.div_ceil(self.step)])
            }
            _ => Err(Error::shape(
                "option A shortcut",
                format!("expects [N, {}, H, W], got {}", self.in_channels, Shape::from(input)),
            )),
        }
    }
}

/// torchvision's `_make_layer`: `blocks` blocks of `planes` planes, the first with `stride`;
/// `inplanes` is updated to the layer's output channels.
fn make_layer(
    kind: BlockKind,
    inplanes: &mut usize,
    planes: usize,
    blocks: usize,
    stride: usize,
    style: ShortcutStyle,
    draw: &mut DrawWeight,
) -> Result<Box<dyn Module>> {
    let mut layer: Vec<Box<dyn Module>> = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let stride = if i == 0 { stride } else { 1 };
        layer.push(Box::new(ResidualBlock::new(kind, *inplanes, planes, stride, style, draw)?));
        *inplanes = planes * kind.expansion();
    }
    Ok(Box::new(Sequential::new(layer)))
}

/// One stage of a torchvision ResNet (`layer1` … `layer4`) on its own: `blocks` blocks of
/// `planes` planes taking `in_channels` channels, the first with `stride` and a projection
/// shortcut where the shape changes, weights drawn as torchvision does from `seed`. For building
/// other residual networks from the same parts, and for checking one stage against PyTorch.
pub fn resnet_stage(
    kind: BlockKind,
    in_channels: usize,
    planes: usize,
    blocks: usize,
    stride: usize,
    seed: u64,
) -> Result<Box<dyn Module>> {
    let mut rng = rng(seed);
    let mut draw = |shape: [usize; 4]| kaiming_normal(shape, FanMode::FanOut, Nonlinearity::Relu, &mut rng);
    let mut inplanes = in_channels;
    make_layer(kind, &mut inplanes, planes, blocks, stride, ShortcutStyle::Projection, &mut draw)
}

fn imagenet_resnet(kind: BlockKind, blocks: [usize; 4], options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    let mut draw = |shape: [usize; 4]| kaiming_normal(shape, FanMode::FanOut, Nonlinearity::Relu, &mut rng);
    let mut net: Vec<(&str, Box<dyn Module>)> = vec![
        ("conv1", Box::new(conv(options.in_channels, 64, 7, 2, &mut draw)?)),
        ("bn1", Box::new(BatchNorm2d::new(64)?)),
        ("relu", Box::new(Activation::ReLU)),
        ("maxpool", Box::new(Pool::<2>::max(PoolSpec::new(3).stride(2).padding(1)))),
    ];
    let mut inplanes = 64;
    let stages = ["layer1", "layer2", "layer3", "layer4"].into_iter().zip(blocks).zip([64, 128, 256, 512]);
    for (i, ((name, count), planes)) in stages.enumerate() {
        let stride = if i == 0 { 1 } else { 2 };
        let style = ShortcutStyle::Projection;
        net.push((name, make_layer(kind, &mut inplanes, planes, count, stride, style, &mut draw)?));
    }
    let (weight, bias) = pytorch_default_conv_or_linear([options.classes, inplanes], &mut rng)?;
    net.push(("avgpool", Box::new(AdaptiveAvgPool::<2> { output: [1, 1] })));
    net.push(("flatten", Box::new(Flatten::default())));
    net.push(("fc", Box::new(Linear::from_parts(weight, Some(bias))?)));
    Ok(Box::new(Sequential::named(net)))
}

fn cifar_resnet(n: usize, options: &BuildOptions) -> Result<Box<dyn Module>> {
    let mut rng = rng(options.seed);
    // `init.kaiming_normal_(w)`: mode 'fan_in', leaky_relu with slope 0, i.e. ReLU's gain √2.
    let mut draw = |shape: [usize; 4]| kaiming_normal(shape, FanMode::FanIn, Nonlinearity::Relu, &mut rng);
    let conv1 = conv(options.in_channels, 16, 3, 1, &mut draw)?;
    let mut inplanes = 16;
    let layer1 = make_layer(BlockKind::Basic, &mut inplanes, 16, n, 1, ShortcutStyle::ZeroPad, &mut draw)?;
    let layer2 = make_layer(BlockKind::Basic, &mut inplanes, 32, n, 2, ShortcutStyle::ZeroPad, &mut draw)?;
    let layer3 = make_layer(BlockKind::Basic, &mut inplanes, 64, n, 2, ShortcutStyle::ZeroPad, &mut draw)?;
    // As in PyTorch: `nn.Linear` draws its default weight and bias, then the weight is redrawn.
    let (_, bias) = pytorch_default_conv_or_linear([options.classes, inplanes], &mut rng)?;
    let weight = kaiming_normal([options.classes, inplanes], FanMode::FanIn, Nonlinearity::Relu, &mut rng)?;
    Ok(Box::new(Sequential::named(vec![
        ("conv1", Box::new(conv1)),
        ("bn1", Box::new(BatchNorm2d::new(16)?)),
        ("relu", Box::new(Activation::ReLU)),
        ("layer1", layer1),
        ("layer2", layer2),
        ("layer3", layer3),
        ("avgpool", Box::new(AdaptiveAvgPool::<2> { output: [1, 1] })),
        ("flatten", Box::new(Flatten::default())),
        ("fc", Box::new(Linear::from_parts(weight, Some(bias))?)),
    ])))
}

#[cfg(test)]
mod tests {
    use stride_nn::init::uniform;
    use stride_nn::module::{named_parameters, parameter_count, summarize};
    use stride_tensor::autograd::cross_entropy;

    use super::*;

    type Builder = fn(&BuildOptions) -> Result<Box<dyn Module>>;

    const IMAGENET: BuildOptions = BuildOptions { in_channels: 3, classes: 1000, seed: 0 };
    const CIFAR: BuildOptions = BuildOptions { in_channels: 3, classes: 10, seed: 0 };

    fn names(net: &mut dyn Module) -> (Vec<String>, Vec<String>) {
        let params = named_parameters(net).into_iter().map(|(n, _)| n).collect();
        let mut buffers = Vec::new();
        net.buffers("", &mut buffers);
        (params, buffers.into_iter().map(|(n, _)| n).collect())
    }

    /// The keys of PyTorch's `state_dict()`: module by module in registration order, each
    /// module's parameters, then its buffers (every module here with buffers has parameters).
    fn state_dict_keys(params: &[String], buffers: &[String]) -> Vec<String> {
        let module = |name: &str| name.rsplit_once('.').map_or("", |(m, _)| m).to_string();
        let mut keys = Vec::new();
        let mut b = 0;
        for (i, p) in params.iter().enumerate() {
            keys.push(p.clone());
            let module_ends = params.get(i + 1).is_none_or(|next| module(next) != module(p));
            while module_ends && b < buffers.len() && module(&buffers[b]) == module(p) {
                keys.push(buffers[b].clone());
                b += 1;
            }
        }
        assert_eq!(b, buffers.len(), "every buffer follows its module's parameters");
        keys
    }

    fn std_of(t: &Tensor) -> f64 {
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        (t.data().iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    fn parameter(net: &mut dyn Module, name: &str) -> Tensor {
        let found = named_parameters(net).into_iter().find(|(n, _)| n == name);
        found.unwrap_or_else(|| panic!("no parameter {name}")).1.value().clone()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Counts, names and shapes against torchvision's (`sum(p.numel() for p in m.parameters())`,
    /// `len(list(m.parameters()))`, `m.state_dict().keys()`), and the summaries. Each network is
    /// built once; none runs forward.
    #[test]
    fn imagenet_resnets_match_torchvision() {
        let basic_head = strings(&[
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
            "layer1.0.bn2.bias",
            "layer1.1.conv1.weight",
        ]);
        let bottleneck_head = strings(&[
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
            "layer1.0.bn2.bias",
            "layer1.0.conv3.weight",
            "layer1.0.bn3.weight",
            "layer1.0.bn3.bias",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.weight",
            "layer1.0.downsample.1.bias",
            "layer1.1.conv1.weight",
        ]);
        let state_dict_head = strings(&[
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.bn1.running_mean",
        ]);
        // (name, build, parameters, parameter tensors, state_dict keys, last batch norm,
        // blocks of layer3)
        let cases: [(&str, Builder, usize, usize, usize, &str, usize); 5] = [
            ("resnet18", resnet18, 11_689_512, 62, 122, "layer4.1.bn2", 2),
            ("resnet34", resnet34, 21_797_672, 110, 218, "layer4.2.bn2", 6),
            ("resnet50", resnet50, 25_557_032, 161, 320, "layer4.2.bn3", 6),
            ("resnet101", resnet101, 44_549_160, 314, 626, "layer4.2.bn3", 23),
            ("resnet152", resnet152, 60_192_808, 467, 932, "layer4.2.bn3", 36),
        ];
        for (name, build, count, tensors, keys, last_bn, layer3_blocks) in cases {
            let mut net = build(&IMAGENET).unwrap();
            assert_eq!(parameter_count(net.as_mut()), count, "{name}");
            let (params, buffers) = names(net.as_mut());
            let bottleneck = last_bn.ends_with("bn3");
            let (head, expansion) = if bottleneck { (&bottleneck_head, 4) } else { (&basic_head, 1) };
            assert_eq!(params.len(), tensors, "{name}");
            assert_eq!(params[..head.len()], head[..], "{name}");
            let tail = [
                format!("{last_bn}.weight"),
                format!("{last_bn}.bias"),
                "fc.weight".into(),
                "fc.bias".into(),
            ];
            assert_eq!(params[tensors - 4..], tail, "{name}");

            let state_dict = state_dict_keys(&params, &buffers);
            assert_eq!(state_dict.len(), keys, "{name}");
            assert_eq!(state_dict[..state_dict_head.len()], state_dict_head[..], "{name}");
            let tail: Vec<String> = ["running_mean", "running_var", "num_batches_tracked"]
                .iter()
                .map(|b| format!("{last_bn}.{b}"))
                .chain(["fc.weight".to_string(), "fc.bias".to_string()])
                .collect();
            assert_eq!(state_dict[keys - 5..], tail, "{name}");

            let last = format!("layer3.{}.conv1.weight", layer3_blocks - 1);
            let beyond = format!("layer3.{layer3_blocks}.conv1.weight");
            assert!(params.contains(&last) && !params.contains(&beyond), "{name}");
            // Projections exactly where torchvision's `_make_layer` puts them.
            let downsampled: Vec<&str> =
                params.iter().filter_map(|p| p.strip_suffix(".downsample.0.weight")).collect();
            let expected = ["layer1.0", "layer2.0", "layer3.0", "layer4.0"];
            assert_eq!(downsampled, expected[usize::from(!bottleneck)..], "{name}");
            assert!(params.iter().all(|p| !p.contains("downsample.0.bias")), "{name}");

            assert_eq!(net.output_shape(&[2, 3, 224, 224]).unwrap(), [2, 1000], "{name}");
            let (rows, output) = summarize(net.as_ref(), &[1, 3, 224, 224]).unwrap();
            assert_eq!(output, [1, 1000], "{name}");
            assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), count, "{name}");
            let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap().output.clone();
            assert_eq!(row("maxpool"), [1, 64, 56, 56], "{name}");
            assert_eq!(row("layer1.0.bn1"), [1, 64, 56, 56], "{name}");
            assert_eq!(row("layer2.0.downsample.1"), [1, 128 * expansion, 28, 28], "{name}");
            assert_eq!(row(last_bn), [1, 512 * expansion, 7, 7], "{name}");
        }
    }

    /// He et al. 2015, Table 6: 0.27M, 0.46M, 0.66M, 0.85M and 1.7M parameters with option A.
    #[test]
    fn cifar_resnets_match_the_paper() {
        let cases: [(&str, Builder, usize, usize, f64); 5] = [
            ("resnet20", resnet20, 3, 269_722, 0.27),
            ("resnet32", resnet32, 5, 464_154, 0.46),
            ("resnet44", resnet44, 7, 658_586, 0.66),
            ("resnet56", resnet56, 9, 853_018, 0.85),
            ("resnet110", resnet110, 18, 1_727_962, 1.7),
        ];
        for (name, build, n, count, paper) in cases {
            let mut net = build(&CIFAR).unwrap();
            assert_eq!(parameter_count(net.as_mut()), count, "{name}");
            // 6n + 2 weighted layers: 16 + 32 + 64 channels of 3×3 filters, 97,216 per n.
            assert_eq!(count, 97_216 * n - 21_926, "{name}");
            let millions = count as f64 / 1e6;
            let digits = if paper < 1.0 { 100.0 } else { 10.0 };
            assert_eq!((millions * digits).round() / digits, paper, "{name}");

            let (params, buffers) = names(net.as_mut());
            assert_eq!(params.len(), 3 * (6 * n + 1) + 2, "{name}");
            assert_eq!(buffers.len(), 3 * (6 * n + 1), "{name}");
            assert_eq!(
                params[..7],
                strings(&[
                    "conv1.weight",
                    "bn1.weight",
                    "bn1.bias",
                    "layer1.0.conv1.weight",
                    "layer1.0.bn1.weight",
                    "layer1.0.bn1.bias",
                    "layer1.0.conv2.weight"
                ])[..],
                "{name}"
            );
            let last = n - 1;
            let tail = [format!("layer3.{last}.bn2.weight"), format!("layer3.{last}.bn2.bias")];
            assert_eq!(params[params.len() - 4..params.len() - 2], tail, "{name}");
            assert_eq!(params[params.len() - 2..], strings(&["fc.weight", "fc.bias"])[..], "{name}");
            assert!(params.iter().all(|p| !p.contains("shortcut") && !p.contains("downsample")), "{name}");

            assert_eq!(net.output_shape(&[2, 3, 32, 32]).unwrap(), [2, 10], "{name}");
            let (rows, output) = summarize(net.as_ref(), &[1, 3, 32, 32]).unwrap();
            assert_eq!(output, [1, 10], "{name}");
            assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), count, "{name}");
            let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
            assert_eq!(row(&format!("layer1.{last}.bn2")).output, [1, 16, 32, 32], "{name}");
            assert_eq!(row("layer2.0.shortcut").output, [1, 32, 16, 16], "{name}");
            assert_eq!(row("layer2.0.shortcut").parameters, 0, "{name}");
            assert_eq!(row("layer3.0.shortcut").output, [1, 64, 8, 8], "{name}");
            assert_eq!(row(&format!("layer3.{last}.bn2")).output, [1, 64, 8, 8], "{name}");
        }
    }

    /// One real training step of resnet20: a finite loss, and a finite gradient of the right
    /// shape for every parameter; batch norm counts the batch.
    #[test]
    fn resnet20_trains_one_step() {
        let mut net = resnet20(&CIFAR).unwrap();
        let images = uniform([2, 3, 32, 32], -1.0, 1.0, &mut rng(9)).unwrap();
        let logits = net.forward(&Var::constant(images), Mode::Train).unwrap();
        assert_eq!(logits.value().dims(), [2, 10]);
        let loss = cross_entropy(&logits, &[3, 7], 0.0).unwrap();
        let value = loss.value().item().unwrap();
        assert!(value.is_finite() && value > 0.0, "{value}");
        loss.backward().unwrap();
        let params = named_parameters(net.as_mut());
        assert_eq!(params.len(), 3 * 19 + 2);
        for (name, p) in &params {
            let grad = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
            assert_eq!(grad.dims(), p.value().dims(), "{name}");
            assert!(grad.data().iter().all(|g| g.is_finite()), "{name}");
            assert!(grad.data().iter().any(|&g| g != 0.0), "{name}");
        }
        drop(params);
        let mut buffers = Vec::new();
        net.buffers("", &mut buffers);
        let tracked = buffers.iter().find(|(n, _)| n == "layer3.2.bn2.num_batches_tracked").unwrap();
        assert_eq!(tracked.1.item().unwrap(), 1.0);
    }

    /// The untapped forward fuses each batch norm with the ReLU after it (in the blocks and in
    /// the stem's Sequential); a tapped one keeps them apart. Both give the same logits, the same
    /// gradients and the same running statistics, bit for bit.
    #[test]
    fn fused_and_separate_batch_norm_relu_train_alike() {
        let images = uniform([3, 3, 32, 32], -1.0, 1.0, &mut rng(5)).unwrap();
        let step = |tapped: bool| {
            let mut net = resnet20(&CIFAR).unwrap();
            let x = Var::constant(images.clone());
            let mut seen = 0;
            let logits = if tapped {
                net.forward_tapped("", &x, Mode::Train, &mut |_: &str, _: &Var| seen += 1).unwrap()
            } else {
                net.forward(&x, Mode::Train).unwrap()
            };
            assert_eq!(seen > 0, tapped);
            cross_entropy(&logits, &[1, 4, 9], 0.0).unwrap().backward().unwrap();
            let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            let mut all = vec![bits(logits.value())];
            all.extend(named_parameters(net.as_mut()).iter().map(|(_, p)| bits(&p.grad().unwrap())));
            let mut buffers = Vec::new();
            net.buffers("", &mut buffers);
            all.extend(buffers.iter().map(|(_, b)| bits(b)));
            all
        };
        let (fused, separate) = (step(false), step(true));
        assert_eq!(fused.len(), separate.len());
        for (i, (f, s)) in fused.iter().zip(&separate).enumerate() {
            assert!(f == s, "tensor {i} of the step differs between the fused and the separate forward");
        }
    }

    /// A Bottleneck with a projection (not exercised by resnet20's forward): the forward's shape
    /// is the one `output_shape` announced, and every parameter gets a gradient.
    #[test]
    fn a_bottleneck_with_projection_runs_forward_and_backward() {
        let mut generator = rng(1);
        let mut draw = |s: [usize; 4]| kaiming_normal(s, FanMode::FanOut, Nonlinearity::Relu, &mut generator);
        let mut block =
            ResidualBlock::new(BlockKind::Bottleneck, 8, 4, 2, ShortcutStyle::Projection, &mut draw).unwrap();
        assert_eq!(block.output_shape(&[2, 8, 5, 5]).unwrap(), [2, 16, 3, 3]);
        let x = Var::constant(uniform([2, 8, 5, 5], -1.0, 1.0, &mut rng(2)).unwrap());
        let y = block.forward(&x, Mode::Train).unwrap();
        assert_eq!(y.value().dims(), [2, 16, 3, 3]);
        assert!(y.value().data().iter().all(|&v| v >= 0.0), "the block ends with a ReLU");
        autograd::sum_all(&y).backward().unwrap();
        let mut params = Vec::new();
        block.parameters("layer2.0", &mut params);
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[9..],
            ["layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer2.0.downsample.1.bias"]
        );
        for (name, p) in &params {
            let grad = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(grad.data().iter().all(|g| g.is_finite()), "{name}");
        }
        let text = block.describe();
        assert!(text.starts_with("Bottleneck(\n  (conv1): Conv2d(8, 4, kernel_size=[1, 1]"), "{text}");
        assert!(
            text.contains(
                "  (downsample): Sequential(\n    (0): Conv2d(8, 16, kernel_size=[1, 1], stride=[2, 2]"
            ),
            "{text}"
        );
    }

    /// Option A: `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 1, 1))` for 2 → 4 channels, and its gradient
    /// reaches exactly the kept elements.
    #[test]
    fn option_a_subsamples_and_zero_pads_the_channels() {
        let mut shortcut = ZeroPadShortcut::new(2, 4, 2).unwrap();
        let x =
            Var::parameter(Tensor::from_fn([1, 2, 3, 3], |i| (i[1] * 9 + i[2] * 3 + i[3]) as f32).unwrap());
        assert_eq!(shortcut.output_shape(&[1, 2, 3, 3]).unwrap(), [1, 4, 2, 2]);
        let y = shortcut.forward(&x, Mode::Train).unwrap();
        assert_eq!(y.value().dims(), [1, 4, 2, 2]);
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 2.0, 6.0, 8.0,
            9.0, 11.0, 15.0, 17.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(y.value().data(), expected);
        autograd::sum_all(&y).backward().unwrap();
        let kept = |i: usize| (i % 9).is_multiple_of(2) && (i % 9 / 3).is_multiple_of(2);
        let grad: Vec<f32> = (0..18).map(|i| if kept(i) { 1.0 } else { 0.0 }).collect();
        assert_eq!(x.grad().unwrap().data(), grad);
        assert_eq!(shortcut.describe(), "LambdaLayer(F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 1, 1)))");
        assert_eq!(
            shortcut.output_shape(&[1, 3, 4, 4]).unwrap_err().to_string(),
            "option A shortcut: expects [N, 2, H, W], got [1, 3, 4, 4]"
        );
        assert!(ZeroPadShortcut::new(16, 48, 2).is_err());
    }

    #[test]
    fn main_path_and_shortcut_must_agree() {
        let mut generator = rng(1);
        let mut draw = |s: [usize; 4]| kaiming_normal(s, FanMode::FanOut, Nonlinearity::Relu, &mut generator);
        let mut block =
            ResidualBlock::new(BlockKind::Basic, 4, 4, 2, ShortcutStyle::Projection, &mut draw).unwrap();
        block.shortcut = None;
        let message = "BasicBlock: the main path gives [1, 4, 3, 3] but the shortcut gives [1, 4, 6, 6]; \
                       the residual sum needs equal shapes";
        assert_eq!(block.output_shape(&[1, 4, 6, 6]).unwrap_err().to_string(), message);
        let x = Var::constant(Tensor::ones([1, 4, 6, 6]).unwrap());
        assert_eq!(block.forward(&x, Mode::Eval).unwrap_err().to_string(), message);
    }

    #[test]
    fn wrong_inputs_are_shape_errors() {
        let net = resnet20(&CIFAR).unwrap();
        let err = net.output_shape(&[2, 1, 32, 32]).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().starts_with("conv1 (conv2d): "), "{err}");
        let err = net.output_shape(&[2, 3, 0, 0]).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().starts_with("conv1 (conv2d): "), "{err}");
        let err = net.output_shape(&[3, 32, 32]).unwrap_err();
        assert!(err.to_string().starts_with("conv1 (conv2d): input must be a 4-d tensor"), "{err}");
    }

    /// torchvision: convolutions from N(0, 2/fan_out), batch norm γ = 1, β = 0, fc PyTorch's
    /// default; the CIFAR nets: N(0, 2/fan_in) for convolutions and the fc weight.
    #[test]
    fn initialisation_follows_torchvision_and_the_cifar_implementation() {
        let mut net = resnet18(&IMAGENET).unwrap();
        // [128, 64, 1, 1]: fan_out 128 (fan_in would give 64).
        let w = parameter(net.as_mut(), "layer2.0.downsample.0.weight");
        let std = (2.0f64 / 128.0).sqrt();
        assert!((std_of(&w) - std).abs() < 0.05 * std, "{} vs {std}", std_of(&w));
        let w = parameter(net.as_mut(), "conv1.weight"); // fan_out 64·49
        let std = (2.0f64 / 3136.0).sqrt();
        assert!((std_of(&w) - std).abs() < 0.05 * std, "{} vs {std}", std_of(&w));
        assert!(parameter(net.as_mut(), "layer3.1.bn2.weight").data().iter().all(|&v| v == 1.0));
        assert!(parameter(net.as_mut(), "layer3.1.bn2.bias").data().iter().all(|&v| v == 0.0));
        let bound = 1.0 / 512f32.sqrt();
        let b = parameter(net.as_mut(), "fc.bias");
        assert!(b.data().iter().all(|v| v.abs() <= bound) && b.data().iter().any(|v| v.abs() > bound / 2.0));
        assert!(parameter(net.as_mut(), "fc.weight").data().iter().all(|v| v.abs() <= bound));

        let mut net = resnet20(&CIFAR).unwrap();
        // [32, 16, 3, 3]: fan_in 144 (fan_out would give 288).
        let w = parameter(net.as_mut(), "layer2.0.conv1.weight");
        let std = (2.0f64 / 144.0).sqrt();
        assert!((std_of(&w) - std).abs() < 0.05 * std, "{} vs {std}", std_of(&w));
        // [10, 64]: N(0, 2/64) has values past the default's bound 1/8.
        let w = parameter(net.as_mut(), "fc.weight");
        assert!(w.data().iter().any(|v| v.abs() > 0.125));
        assert!(parameter(net.as_mut(), "fc.bias").data().iter().all(|v| v.abs() <= 0.125));
    }

    #[test]
    fn seeds_reproduce_and_options_apply() {
        let first =
            |options: &BuildOptions| parameter(resnet20(options).unwrap().as_mut(), "layer3.2.conv2.weight");
        assert_eq!(first(&CIFAR), first(&CIFAR));
        assert_ne!(first(&CIFAR), first(&BuildOptions { seed: 1, ..CIFAR }));
        let mut net = resnet20(&BuildOptions { in_channels: 1, classes: 7, seed: 0 }).unwrap();
        assert_eq!(parameter(net.as_mut(), "conv1.weight").dims(), [16, 1, 3, 3]);
        assert_eq!(net.output_shape(&[4, 1, 28, 28]).unwrap(), [4, 7]);
    }
}
