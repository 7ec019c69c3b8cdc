//! GoogLeNet (Inception v1; Szegedy et al. 2014, *Going deeper with convolutions*), laid out and
//! named exactly as torchvision's `googlenet` (`transform_input=False`), so a torchvision
//! state_dict loads by name, with or without the auxiliary classifiers:
//!
//! ```text
//! conv1        BasicConv2d(C, 64, 7, stride 2, padding 3)   112×112×64
//! maxpool1     MaxPool 3, stride 2, ceil_mode                56×56×64
//! conv2        BasicConv2d(64, 64, 1)                        56×56×64
//! conv3        BasicConv2d(64, 192, 3, padding 1)            56×56×192
//! maxpool2     MaxPool 3, stride 2, ceil_mode                28×28×192
//! inception3a  Inception(192, 64, 96, 128, 16, 32, 32)       28×28×256
//! inception3b  Inception(256, 128, 128, 192, 32, 96, 64)     28×28×480
//! maxpool3     MaxPool 3, stride 2, ceil_mode                14×14×480
//! inception4a  Inception(480, 192, 96, 208, 16, 48, 64)      14×14×512   → aux1 (training)
//! inception4b  Inception(512, 160, 112, 224, 24, 64, 64)     14×14×512
//! inception4c  Inception(512, 128, 128, 256, 24, 64, 64)     14×14×512
//! inception4d  Inception(512, 112, 144, 288, 32, 64, 64)     14×14×528   → aux2 (training)
//! inception4e  Inception(528, 256, 160, 320, 32, 128, 128)   14×14×832
//! maxpool4     MaxPool 2, stride 2, ceil_mode                7×7×832
//! inception5a  Inception(832, 256, 160, 320, 32, 128, 128)   7×7×832
//! inception5b  Inception(832, 384, 192, 384, 48, 128, 128)   7×7×1024
//! avgpool      AdaptiveAvgPool2d(1×1), flatten               1024
//! dropout      Dropout(0.2)
//! fc           Linear(1024, classes)
//! ```
//!
//! A `BasicConv2d` is a convolution without bias, batch norm with eps 0.001, and ReLU
//! (`conv1.conv.weight`, `conv1.bn.running_mean`). An Inception block runs four branches on the
//! same input and concatenates their channels: `branch1` (1×1), `branch2` (1×1 then 3×3),
//! `branch3` (1×1 then 3×3 — torchvision's known deviation from the paper's 5×5, kept for weight
//! compatibility), `branch4` (3×3 max pooling, stride 1, then 1×1).
//!
//! The auxiliary classifiers (`aux1` after inception4a, `aux2` after inception4d) exist only in
//! [`googlenet_aux`]. [`Module::forward`] always returns the main logits alone, in both modes: the
//! `Module` interface has one output, and a caller that trains with the auxiliary losses (the
//! paper weights them by 0.3) uses [`GoogLeNet::forward_with_aux`], torchvision's
//! `GoogLeNetOutputs`. The heads' parameters and buffers are always listed, so a torchvision
//! state_dict saved with `aux_logits=True` loads, and the parameter count is torchvision's.
//!
//! Initial weights follow torchvision: every convolution and linear weight from
//! `trunc_normal_(w, mean=0.0, std=0.01, a=-2, b=2)` (`a` and `b` are absolute bounds, ±200 σ
//! here, so in practice a plain N(0, 0.01²)), batch norm γ = 1 and β = 0, and the linear biases
//! left at PyTorch's default `U(−1/√in, 1/√in)`. The auxiliary heads draw after the main network,
//! so [`googlenet`] and [`googlenet_aux`] with the same seed share every main-network weight.

use stride_nn::init;
use stride_nn::layers::{AdaptiveAvgPool, Conv2d, Dropout, Linear, Pool};
use stride_nn::module::{LayerSummary, Mode, Module, NamedBuffer, NamedVar, Sequential, Tap, join, no_tap};
use stride_nn::norm::BatchNorm2d;
use stride_tensor::autograd::{self, Var};
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;
use stride_tensor::{Error, Result, Shape, Tensor};

use crate::BuildOptions;

/// GoogLeNet without auxiliary classifiers: torchvision's `googlenet(aux_logits=False)`,
/// 6,624,904 parameters for 3 channels and 1000 classes.
pub fn googlenet(options: &BuildOptions) -> Result<Box<dyn Module>> {
    Ok(Box::new(GoogLeNet::new(options, false)?))
}

/// One Inception block on its own, `Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red,
/// ch5x5, pool_proj)` as torchvision's, weights drawn as in [`googlenet`] from `seed`: for
/// building other networks from the same part, and for checking one block against PyTorch.
/// `channels` lists the seven numbers in that order.
pub fn inception(channels: [usize; 7], seed: u64) -> Result<Inception> {
    let [cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj] = channels;
    Inception::new(&mut Init::new(seed), cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
}

/// GoogLeNet with the auxiliary classifiers `aux1` and `aux2`: torchvision's
/// `googlenet(aux_logits=True)`, 13,004,888 parameters for 3 channels and 1000 classes. Its
/// `forward` returns the main logits only; see [`GoogLeNet::forward_with_aux`].
pub fn googlenet_aux(options: &BuildOptions) -> Result<Box<dyn Module>> {
    Ok(Box::new(GoogLeNet::new(options, true)?))
}

/// torchvision's batch norm eps for GoogLeNet (PyTorch's default is 1e-5).
const BN_EPS: f32 = 0.001;

/// Salts that give each dropout layer a stream of its own, apart from the weights' stream.
const DROPOUT_SALT: u64 = 0x6f6f_676c_654e_6574;
const AUX1_DROPOUT_SALT: u64 = 0x6175_7831_6472_6f70;
const AUX2_DROPOUT_SALT: u64 = 0x6175_7832_6472_6f70;

/// The distributions [`Init`] draws from.
enum Dist {
    Normal { mean: f64, std: f64 },
    Uniform { low: f64, high: f64 },
}

/// Draws a tensor of the given shape from a distribution, continuing one seeded stream.
type Draw = Box<dyn FnMut(&[usize], Dist) -> Result<Tensor>>;

/// torchvision's GoogLeNet initialisation, drawn from one seeded ChaCha8 stream
/// ([`init::rng`]) in construction order.
struct Init {
    draw: Draw,
}

impl Init {
    /// Redraws allowed for one value before [`Init::trunc_normal`] gives up on an interval that
    /// holds too little of the distribution for rejection sampling.
    const MAX_REDRAWS: usize = 10_000;

    fn new(seed: u64) -> Self {
        let mut rng = init::rng(seed);
        Init {
            draw: Box::new(move |dims: &[usize], dist: Dist| match dist {
                Dist::Normal { mean, std } => init::normal(dims, mean, std, &mut rng),
                Dist::Uniform { low, high } => init::uniform(dims, low, high, &mut rng),
            }),
        }
    }

    /// `torch.nn.init.trunc_normal_(w, mean, std, a, b)`: N(mean, std²) restricted to `[a, b]`
    /// (absolute bounds, as PyTorch's), by rejection: a value outside is drawn again. PyTorch
    /// inverts the CDF instead; the distribution is the same.
    fn trunc_normal(&mut self, dims: &[usize], mean: f64, std: f64, a: f64, b: f64) -> Result<Tensor> {
        const OP: &str = "trunc_normal";
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(Error::invalid(OP, format!("needs finite bounds a < b, got [{a}, {b}]")));
        }
        let mut t = (self.draw)(dims, Dist::Normal { mean, std })?;
        for v in t.data_mut() {
            let mut redraws = 0;
            while !(a..=b).contains(&(*v as f64)) {
                if redraws == Self::MAX_REDRAWS {
                    return Err(Error::invalid(
                        OP,
                        format!("[{a}, {b}] holds too little of N({mean}, {std}²) for rejection sampling"),
                    ));
                }
                *v = (self.draw)(&[1], Dist::Normal { mean, std })?.data()[0];
                redraws += 1;
            }
        }
        Ok(t)
    }

    /// A convolution or linear weight: `trunc_normal_(w, mean=0.0, std=0.01, a=-2, b=2)`.
    fn weight(&mut self, dims: &[usize]) -> Result<Tensor> {
        self.trunc_normal(dims, 0.0, 0.01, -2.0, 2.0)
    }

    /// A linear layer: the weight as torchvision's GoogLeNet, the bias PyTorch's default.
    fn linear(&mut self, inputs: usize, outputs: usize) -> Result<Linear> {
        let weight = self.weight(&[outputs, inputs])?;
        let bound = if inputs == 0 { 0.0 } else { 1.0 / (inputs as f64).sqrt() };
        let bias = (self.draw)(&[outputs], Dist::Uniform { low: -bound, high: bound })?;
        Linear::from_parts(weight, Some(bias))
    }
}

/// `PyTorchName(\n  (child): …\n)`, as PyTorch prints a module with children.
fn describe_children(kind: &str, children: &[(&str, &dyn Module)]) -> String {
    let inner: Vec<String> = children
        .iter()
        .map(|(name, m)| format!("  ({name}): {}", m.describe().replace('\n', "\n  ")))
        .collect();
    format!("{kind}(\n{}\n)", inner.join("\n"))
}

/// `[N, C·H·W]`, `torch.flatten(x, 1)` of a 4-d shape.
fn flatten_shape(shape: &[usize]) -> Vec<usize> {
    vec![shape[0], shape[1..].iter().product()]
}

/// torchvision's `BasicConv2d`: convolution without bias, batch norm (eps 0.001), ReLU.
pub struct BasicConv2d {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl BasicConv2d {
    fn new(
        init: &mut Init,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let weight = init.weight(&[cout, cin, kernel, kernel])?;
        let conv = Conv2d::from_parts(weight, None, ConvSpec::new().stride(stride).padding(pad))?;
        // γ = 1, β = 0 (torchvision's constant_ initialisation, also BatchNorm's default).
        let mut bn = BatchNorm2d::new(cout)?;
        bn.eps = BN_EPS;
        Ok(BasicConv2d { conv, bn })
    }

    fn boxed(init: &mut Init, cin: usize, cout: usize, kernel: usize, pad: usize) -> Result<Box<dyn Module>> {
        Ok(Box::new(Self::new(init, cin, cout, kernel, 1, pad)?))
    }
}

impl Module for BasicConv2d {
    fn describe(&self) -> String {
        describe_children("BasicConv2d", &[("conv", &self.conv), ("bn", &self.bn)])
    }

    fn fold_batch_norm(&mut self) -> Result<()> {
        self.bn.fold_into(&mut self.conv).map_err(|e| e.within("bn"))?;
        self.conv.fuse_relu();
        Ok(())
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_tapped("", x, mode, &mut no_tap)
    }

    /// Reports `conv` and `bn`; the ReLU after them is functional in torchvision, without a path.
    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        let y =
            self.conv.forward_tapped(&join(prefix, "conv"), x, mode, tap).map_err(|e| e.within("conv"))?;
        let y = self.bn.forward_tapped(&join(prefix, "bn"), &y, mode, tap).map_err(|e| e.within("bn"))?;
        // Folded for inference, the convolution applies the ReLU itself.
        Ok(if self.conv.relu_fused() { y } else { autograd::relu(&y) })
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let shape = self.conv.output_shape(input).map_err(|e| e.within("conv"))?;
        self.bn.output_shape(&shape).map_err(|e| e.within("bn"))
    }

    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let shape = self.conv.summarize(&join(prefix, "conv"), input, rows).map_err(|e| e.within("conv"))?;
        self.bn.summarize(&join(prefix, "bn"), &shape, rows).map_err(|e| e.within("bn"))
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        self.conv.parameters(&join(prefix, "conv"), out);
        self.bn.parameters(&join(prefix, "bn"), out);
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        self.bn.buffers(&join(prefix, "bn"), out);
    }
}

/// torchvision's `Inception` block: four branches on the same input, their outputs concatenated
/// along the channels (`ch1x1 + ch3x3 + ch5x5 + pool_proj` channels).
pub struct Inception {
    /// 1×1 convolution.
    pub branch1: BasicConv2d,
    /// `0`: 1×1 reduction, `1`: 3×3 convolution.
    pub branch2: Sequential,
    /// `0`: 1×1 reduction, `1`: 3×3 convolution (the paper's 5×5; torchvision uses 3×3).
    pub branch3: Sequential,
    /// `0`: 3×3 max pooling, stride 1, padding 1, ceil_mode; `1`: 1×1 projection.
    pub branch4: Sequential,
}

impl Inception {
    /// `Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`, drawing its
    /// weights in torchvision's module order.
    #[allow(clippy::too_many_arguments)]
    fn new(
        init: &mut Init,
        cin: usize,
        ch1x1: usize,
        ch3x3red: usize,
        ch3x3: usize,
        ch5x5red: usize,
        ch5x5: usize,
        pool_proj: usize,
    ) -> Result<Self> {
        let branch1 = BasicConv2d::new(init, cin, ch1x1, 1, 1, 0)?;
        let branch2 = Sequential::new(vec![
            BasicConv2d::boxed(init, cin, ch3x3red, 1, 0)?,
            BasicConv2d::boxed(init, ch3x3red, ch3x3, 3, 1)?,
        ]);
        // torchvision's "5×5" branch uses a 3×3 kernel (a known quirk, kept for its
        // pretrained weights); the same here, so those weights load by name and shape.
        let branch3 = Sequential::new(vec![
            BasicConv2d::boxed(init, cin, ch5x5red, 1, 0)?,
            BasicConv2d::boxed(init, ch5x5red, ch5x5, 3, 1)?,
        ]);
        let pool = PoolSpec::new(3).stride(1).padding(1).ceil_mode(true);
        let branch4 = Sequential::new(vec![
            Box::new(Pool::<2>::max(pool)),
            BasicConv2d::boxed(init, cin, pool_proj, 1, 0)?,
        ]);
        Ok(Inception { branch1, branch2, branch3, branch4 })
    }

    fn branches(&self) -> [(&'static str, &dyn Module); 4] {
        [
            ("branch1", &self.branch1),
            ("branch2", &self.branch2),
            ("branch3", &self.branch3),
            ("branch4", &self.branch4),
        ]
    }

    /// The concatenation of the branches' output shapes along the channels, or an error if they
    /// differ in anything else.
    fn concat_shape(shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        let first = &shapes[0];
        let agree = shapes
            .iter()
            .all(|s| s.len() == first.len() && s.len() >= 2 && s[0] == first[0] && s[2..] == first[2..]);
        if !agree {
            let listed: Vec<String> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| format!("branch{} {}", i + 1, Shape::from(&s[..])))
                .collect();
            return Err(Error::shape(
                "Inception",
                format!(
                    "the branches' outputs must agree on all but the channels to be concatenated, got {}",
                    listed.join(", ")
                ),
            ));
        }
        let mut out = first.clone();
        out[1] = shapes.iter().map(|s| s[1]).sum();
        Ok(out)
    }
}

impl Module for Inception {
    fn describe(&self) -> String {
        describe_children("Inception", &self.branches())
    }

    fn fold_batch_norm(&mut self) -> Result<()> {
        self.branch1.fold_batch_norm().map_err(|e| e.within("branch1"))?;
        self.branch2.fold_batch_norm().map_err(|e| e.within("branch2"))?;
        self.branch3.fold_batch_norm().map_err(|e| e.within("branch3"))?;
        self.branch4.fold_batch_norm().map_err(|e| e.within("branch4"))
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_tapped("", x, mode, &mut no_tap)
    }

    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        let mut branch = |name: &str, module: &mut dyn Module| {
            module.forward_tapped(&join(prefix, name), x, mode, tap).map_err(|e| e.within(name))
        };
        let outputs = [
            branch("branch1", &mut self.branch1)?,
            branch("branch2", &mut self.branch2)?,
            branch("branch3", &mut self.branch3)?,
            branch("branch4", &mut self.branch4)?,
        ];
        let shapes: Vec<Vec<usize>> = outputs.iter().map(|y| y.value().dims().to_vec()).collect();
        Self::concat_shape(&shapes)?;
        autograd::concat(&outputs, 1)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let shapes = self
            .branches()
            .iter()
            .map(|(name, branch)| branch.output_shape(input).map_err(|e| e.within(name)))
            .collect::<Result<Vec<_>>>()?;
        Self::concat_shape(&shapes)
    }

    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let shapes = self
            .branches()
            .iter()
            .map(|(name, branch)| {
                branch.summarize(&join(prefix, name), input, rows).map_err(|e| e.within(name))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::concat_shape(&shapes)
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        self.branch1.parameters(&join(prefix, "branch1"), out);
        self.branch2.parameters(&join(prefix, "branch2"), out);
        self.branch3.parameters(&join(prefix, "branch3"), out);
        self.branch4.parameters(&join(prefix, "branch4"), out);
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        self.branch1.buffers(&join(prefix, "branch1"), out);
        self.branch2.buffers(&join(prefix, "branch2"), out);
        self.branch3.buffers(&join(prefix, "branch3"), out);
        self.branch4.buffers(&join(prefix, "branch4"), out);
    }
}

/// torchvision's `InceptionAux`: adaptive average pooling to 4×4, a 1×1 `BasicConv2d` to 128
/// channels, `fc1` (2048 → 1024) with ReLU, dropout 0.7, `fc2` (1024 → classes). The pooling,
/// ReLU and dropout are functional in torchvision and have no path of their own.
pub struct InceptionAux {
    pub conv: BasicConv2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pool: AdaptiveAvgPool<2>,
    dropout: Dropout,
}

impl InceptionAux {
    fn new(init: &mut Init, cin: usize, classes: usize, dropout_seed: u64) -> Result<Self> {
        Ok(InceptionAux {
            conv: BasicConv2d::new(init, cin, 128, 1, 1, 0)?,
            fc1: init.linear(2048, 1024)?,
            fc2: init.linear(1024, classes)?,
            pool: AdaptiveAvgPool { output: [4, 4] },
            dropout: Dropout::new(0.7, dropout_seed)?,
        })
    }
}

impl Module for InceptionAux {
    fn describe(&self) -> String {
        describe_children("InceptionAux", &[("conv", &self.conv), ("fc1", &self.fc1), ("fc2", &self.fc2)])
    }

    fn fold_batch_norm(&mut self) -> Result<()> {
        self.conv.fold_batch_norm().map_err(|e| e.within("conv"))
    }

    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_tapped("", x, mode, &mut no_tap)
    }

    /// Reports `conv.conv`, `conv.bn`, `fc1` (before its ReLU) and `fc2`; the pooling, ReLU and
    /// dropout have no path.
    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        let h = self.pool.forward(x, mode)?;
        let h =
            self.conv.forward_tapped(&join(prefix, "conv"), &h, mode, tap).map_err(|e| e.within("conv"))?;
        let h = autograd::flatten(&h, 1, -1)?;
        let h = self.fc1.forward_tapped(&join(prefix, "fc1"), &h, mode, tap).map_err(|e| e.within("fc1"))?;
        let h = self.dropout.forward(&autograd::relu(&h), mode)?;
        self.fc2.forward_tapped(&join(prefix, "fc2"), &h, mode, tap).map_err(|e| e.within("fc2"))
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let shape = self.pool.output_shape(input)?;
        let shape = self.conv.output_shape(&shape).map_err(|e| e.within("conv"))?;
        let shape = self.fc1.output_shape(&flatten_shape(&shape)).map_err(|e| e.within("fc1"))?;
        self.fc2.output_shape(&shape).map_err(|e| e.within("fc2"))
    }

    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let shape = self.pool.output_shape(input)?;
        let shape = self.conv.summarize(&join(prefix, "conv"), &shape, rows).map_err(|e| e.within("conv"))?;
        let shape = self
            .fc1
            .summarize(&join(prefix, "fc1"), &flatten_shape(&shape), rows)
            .map_err(|e| e.within("fc1"))?;
        self.fc2.summarize(&join(prefix, "fc2"), &shape, rows).map_err(|e| e.within("fc2"))
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        self.conv.parameters(&join(prefix, "conv"), out);
        self.fc1.parameters(&join(prefix, "fc1"), out);
        self.fc2.parameters(&join(prefix, "fc2"), out);
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        self.conv.buffers(&join(prefix, "conv"), out);
    }
}

/// What [`GoogLeNet::forward_with_aux`] returns, torchvision's `GoogLeNetOutputs`.
pub struct GoogLeNetOutputs {
    pub logits: Var,
    /// The head after inception4d; only in [`Mode::Train`] with auxiliary classifiers.
    pub aux_logits2: Option<Var>,
    /// The head after inception4a; only in [`Mode::Train`] with auxiliary classifiers.
    pub aux_logits1: Option<Var>,
}

/// torchvision's `GoogLeNet`.
pub struct GoogLeNet {
    /// `conv1` … `inception5b`, `avgpool`, in forward order under torchvision's names.
    pub features: Vec<(&'static str, Box<dyn Module>)>,
    pub aux1: Option<InceptionAux>,
    pub aux2: Option<InceptionAux>,
    pub dropout: Dropout,
    pub fc: Linear,
}

impl GoogLeNet {
    /// `googlenet(num_classes=classes, aux_logits=aux_logits, transform_input=False)` for
    /// `in_channels`-channel images, with seeded initial weights.
    pub fn new(options: &BuildOptions, aux_logits: bool) -> Result<Self> {
        let &BuildOptions { in_channels, classes, seed } = options;
        if in_channels == 0 || classes == 0 {
            return Err(Error::invalid(
                "googlenet",
                format!("needs at least 1 input channel and 1 class, got {options:?}"),
            ));
        }
        let init = &mut Init::new(seed);
        let pool = |kernel: usize| -> Box<dyn Module> {
            Box::new(Pool::<2>::max(PoolSpec::new(kernel).stride(2).ceil_mode(true)))
        };
        let conv = |init: &mut Init, cin, cout, kernel, stride, pad| -> Result<Box<dyn Module>> {
            Ok(Box::new(BasicConv2d::new(init, cin, cout, kernel, stride, pad)?))
        };
        let inception = |init: &mut Init, c: [usize; 7]| -> Result<Box<dyn Module>> {
            Ok(Box::new(Inception::new(init, c[0], c[1], c[2], c[3], c[4], c[5], c[6])?))
        };
        let features: Vec<(&'static str, Box<dyn Module>)> = vec![
            ("conv1", conv(init, in_channels, 64, 7, 2, 3)?),
            ("maxpool1", pool(3)),
            ("conv2", conv(init, 64, 64, 1, 1, 0)?),
            ("conv3", conv(init, 64, 192, 3, 1, 1)?),
            ("maxpool2", pool(3)),
            ("inception3a", inception(init, [192, 64, 96, 128, 16, 32, 32])?),
            ("inception3b", inception(init, [256, 128, 128, 192, 32, 96, 64])?),
            ("maxpool3", pool(3)),
            ("inception4a", inception(init, [480, 192, 96, 208, 16, 48, 64])?),
            ("inception4b", inception(init, [512, 160, 112, 224, 24, 64, 64])?),
            ("inception4c", inception(init, [512, 128, 128, 256, 24, 64, 64])?),
            ("inception4d", inception(init, [512, 112, 144, 288, 32, 64, 64])?),
            ("inception4e", inception(init, [528, 256, 160, 320, 32, 128, 128])?),
            ("maxpool4", pool(2)),
            ("inception5a", inception(init, [832, 256, 160, 320, 32, 128, 128])?),
            ("inception5b", inception(init, [832, 384, 192, 384, 48, 128, 128])?),
            ("avgpool", Box::new(AdaptiveAvgPool { output: [1, 1] })),
        ];
        let fc = init.linear(1024, classes)?;
        // Drawn last, so the main network's weights do not depend on `aux_logits`.
        let (aux1, aux2) = if aux_logits {
            (
                Some(InceptionAux::new(init, 512, classes, seed ^ AUX1_DROPOUT_SALT)?),
                Some(InceptionAux::new(init, 528, classes, seed ^ AUX2_DROPOUT_SALT)?),
            )
        } else {
            (None, None)
        };
        Ok(GoogLeNet { features, aux1, aux2, dropout: Dropout::new(0.2, seed ^ DROPOUT_SALT)?, fc })
    }

    /// The main logits and, in [`Mode::Train`] with auxiliary classifiers, the two auxiliary
    /// heads' logits (torchvision's training output; the paper adds 0.3× each auxiliary loss).
    pub fn forward_with_aux(&mut self, x: &Var, mode: Mode) -> Result<GoogLeNetOutputs> {
        self.run("", x, mode, mode == Mode::Train, &mut no_tap)
    }

    /// The forward pass, with the auxiliary heads if `with_aux`, reporting each leaf to `tap`.
    fn run(
        &mut self,
        prefix: &str,
        x: &Var,
        mode: Mode,
        with_aux: bool,
        tap: &mut Tap<'_>,
    ) -> Result<GoogLeNetOutputs> {
        let (mut aux_logits1, mut aux_logits2) = (None, None);
        let mut h = x.clone();
        for (name, layer) in self.features.iter_mut() {
            h = layer.forward_tapped(&join(prefix, name), &h, mode, tap).map_err(|e| e.within(name))?;
            if !with_aux {
                continue;
            }
            match (*name, &mut self.aux1, &mut self.aux2) {
                ("inception4a", Some(aux), _) => {
                    aux_logits1 = Some(
                        aux.forward_tapped(&join(prefix, "aux1"), &h, mode, tap)
                            .map_err(|e| e.within("aux1"))?,
                    )
                }
                ("inception4d", _, Some(aux)) => {
                    aux_logits2 = Some(
                        aux.forward_tapped(&join(prefix, "aux2"), &h, mode, tap)
                            .map_err(|e| e.within("aux2"))?,
                    )
                }
                _ => {}
            }
        }
        let h = autograd::flatten(&h, 1, -1)?;
        let h = self.dropout.forward_tapped(&join(prefix, "dropout"), &h, mode, tap)?;
        let logits =
            self.fc.forward_tapped(&join(prefix, "fc"), &h, mode, tap).map_err(|e| e.within("fc"))?;
        Ok(GoogLeNetOutputs { logits, aux_logits2, aux_logits1 })
    }

    fn aux_at(&self, name: &str) -> Option<(&'static str, &InceptionAux)> {
        match name {
            "inception4a" => self.aux1.as_ref().map(|a| ("aux1", a)),
            "inception4d" => self.aux2.as_ref().map(|a| ("aux2", a)),
            _ => None,
        }
    }
}

impl Module for GoogLeNet {
    fn fold_batch_norm(&mut self) -> Result<()> {
        for (name, layer) in &mut self.features {
            layer.fold_batch_norm().map_err(|e| e.within(name))?;
        }
        for (name, aux) in [("aux1", &mut self.aux1), ("aux2", &mut self.aux2)] {
            if let Some(aux) = aux {
                aux.fold_batch_norm().map_err(|e| e.within(name))?;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut children: Vec<(&str, &dyn Module)> = Vec::new();
        for (name, layer) in &self.features {
            children.push((name, layer.as_ref()));
            if *name == "inception5b" {
                // torchvision registers aux1 and aux2 after inception5b.
                children.extend(self.aux1.as_ref().map(|a| ("aux1", a as &dyn Module)));
                children.extend(self.aux2.as_ref().map(|a| ("aux2", a as &dyn Module)));
            }
        }
        children.push(("dropout", &self.dropout));
        children.push(("fc", &self.fc));
        describe_children("GoogLeNet", &children)
    }

    /// The main logits only, in both modes; the auxiliary heads are not run (see
    /// [`GoogLeNet::forward_with_aux`]).
    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        self.forward_tapped("", x, mode, &mut no_tap)
    }

    /// The main network's leaves in forward order (the auxiliary heads are not run).
    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        Ok(self.run(prefix, x, mode, false, tap)?.logits)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (name, layer) in &self.features {
            shape = layer.output_shape(&shape).map_err(|e| e.within(name))?;
        }
        self.fc.output_shape(&flatten_shape(&shape)).map_err(|e| e.within("fc"))
    }

    /// Every leaf layer in forward order; the auxiliary heads' rows follow the block they branch
    /// from (their multiply-adds are spent in training only).
    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (name, layer) in &self.features {
            shape = layer.summarize(&join(prefix, name), &shape, rows).map_err(|e| e.within(name))?;
            if let Some((aux_name, aux)) = self.aux_at(name) {
                aux.summarize(&join(prefix, aux_name), &shape, rows).map_err(|e| e.within(aux_name))?;
            }
        }
        let shape = self.dropout.summarize(&join(prefix, "dropout"), &flatten_shape(&shape), rows)?;
        self.fc.summarize(&join(prefix, "fc"), &shape, rows).map_err(|e| e.within("fc"))
    }

    /// torchvision's state_dict order: the features, then `aux1`, `aux2`, then `fc`.
    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        for (name, layer) in self.features.iter_mut() {
            layer.parameters(&join(prefix, name), out);
        }
        if let Some(aux) = self.aux1.as_mut() {
            aux.parameters(&join(prefix, "aux1"), out);
        }
        if let Some(aux) = self.aux2.as_mut() {
            aux.parameters(&join(prefix, "aux2"), out);
        }
        self.fc.parameters(&join(prefix, "fc"), out);
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        for (name, layer) in self.features.iter_mut() {
            layer.buffers(&join(prefix, name), out);
        }
        if let Some(aux) = self.aux1.as_mut() {
            aux.buffers(&join(prefix, "aux1"), out);
        }
        if let Some(aux) = self.aux2.as_mut() {
            aux.buffers(&join(prefix, "aux2"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use stride_nn::module::{named_parameters, parameter_count, summarize};

    use super::*;

    const IMAGENET: BuildOptions = BuildOptions { in_channels: 3, classes: 1000, seed: 0 };

    fn names(net: &mut dyn Module) -> Vec<String> {
        named_parameters(net).into_iter().map(|(n, _)| n).collect()
    }

    fn buffer_names(net: &mut dyn Module) -> Vec<String> {
        let mut out = Vec::new();
        net.buffers("", &mut out);
        out.into_iter().map(|(n, _)| n).collect()
    }

    /// torchvision: `sum(p.numel() for p in googlenet(aux_logits=...).parameters())`.
    #[test]
    fn parameter_counts_match_torchvision() {
        assert_eq!(parameter_count(googlenet(&IMAGENET).unwrap().as_mut()), 6_624_904);
        // aux1: 512·128 + 256 + 2048·1024 + 1024 + 1024·1000 + 1000 = 3,188,968; aux2 (528 in):
        // 3,191,016; together 6,379,984 more.
        assert_eq!(parameter_count(googlenet_aux(&IMAGENET).unwrap().as_mut()), 13_004_888);
        let small = BuildOptions { in_channels: 1, classes: 10, seed: 0 };
        // conv1 loses 64·49·2 weights; fc 1024·990 + 990 values.
        assert_eq!(parameter_count(googlenet(&small).unwrap().as_mut()), 6_624_904 - 6_272 - 1_014_750);
    }

    #[test]
    fn names_follow_torchvision() {
        let mut net = googlenet(&IMAGENET).unwrap();
        let params = names(net.as_mut());
        // 57 BasicConv2d (3 stem + 9 blocks × 6) with 3 tensors each, and fc's 2.
        assert_eq!(params.len(), 57 * 3 + 2);
        assert_eq!(params[..3], ["conv1.conv.weight", "conv1.bn.weight", "conv1.bn.bias"]);
        for name in [
            "conv2.conv.weight",
            "conv3.bn.bias",
            "inception3a.branch1.conv.weight",
            "inception3a.branch2.1.conv.weight",
            "inception3a.branch3.0.bn.weight",
            "inception3a.branch4.1.conv.weight",
            "inception4e.branch2.0.bn.bias",
        ] {
            assert!(params.contains(&name.to_string()), "{name}");
        }
        assert_eq!(
            params[params.len() - 4..],
            ["inception5b.branch4.1.bn.weight", "inception5b.branch4.1.bn.bias", "fc.weight", "fc.bias"]
        );
        let buffers = buffer_names(net.as_mut());
        assert_eq!(buffers.len(), 57 * 3);
        assert_eq!(
            buffers[..3],
            ["conv1.bn.running_mean", "conv1.bn.running_var", "conv1.bn.num_batches_tracked"]
        );
        assert!(buffers.contains(&"inception3a.branch2.0.bn.running_var".to_string()));
        assert!(buffers.contains(&"inception5b.branch3.1.bn.num_batches_tracked".to_string()));
        assert_eq!(buffers.last().unwrap(), "inception5b.branch4.1.bn.num_batches_tracked");

        // With aux_logits, torchvision's state_dict has aux1 and aux2 between inception5b and fc.
        let mut net = googlenet_aux(&IMAGENET).unwrap();
        let params = names(net.as_mut());
        assert_eq!(params.len(), 59 * 3 + 4 * 2 + 2);
        let aux: Vec<&str> = params.iter().map(String::as_str).filter(|n| n.starts_with("aux")).collect();
        let expected: Vec<String> = ["aux1", "aux2"]
            .iter()
            .flat_map(|a| {
                [
                    "conv.conv.weight",
                    "conv.bn.weight",
                    "conv.bn.bias",
                    "fc1.weight",
                    "fc1.bias",
                    "fc2.weight",
                    "fc2.bias",
                ]
                .map(|p| format!("{a}.{p}"))
            })
            .collect();
        assert_eq!(aux, expected);
        let first_aux = params.iter().position(|n| n.starts_with("aux1")).unwrap();
        assert_eq!(params[first_aux - 1], "inception5b.branch4.1.bn.bias");
        assert_eq!(params[params.len() - 2..], ["fc.weight", "fc.bias"]);
        let buffers = buffer_names(net.as_mut());
        assert_eq!(
            buffers[buffers.len() - 3..],
            ["aux2.conv.bn.running_mean", "aux2.conv.bn.running_var", "aux2.conv.bn.num_batches_tracked"]
        );
    }

    #[test]
    fn shapes_and_summary_at_224() {
        let net = googlenet(&IMAGENET).unwrap();
        assert_eq!(net.output_shape(&[1, 3, 224, 224]).unwrap(), vec![1, 1000]);
        let (rows, output) = summarize(net.as_ref(), &[1, 3, 224, 224]).unwrap();
        assert_eq!(output, vec![1, 1000]);
        // 57 convolutions and batch norms, 4 stem and 9 branch4 max poolings, avgpool, dropout, fc.
        assert_eq!(rows.len(), 57 * 2 + 4 + 9 + 3);
        assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), 6_624_904);
        let output_of = |path: &str| rows.iter().find(|r| r.path == path).unwrap().output.clone();
        assert_eq!(output_of("conv1.conv"), [1, 64, 112, 112]);
        assert_eq!(output_of("maxpool1"), [1, 64, 56, 56]);
        assert_eq!(output_of("maxpool2"), [1, 192, 28, 28]);
        assert_eq!(output_of("maxpool3"), [1, 480, 14, 14]);
        assert_eq!(output_of("inception4a.branch4.0"), [1, 480, 14, 14]);
        assert_eq!(output_of("maxpool4"), [1, 832, 7, 7]);
        assert_eq!(output_of("inception5b.branch1.bn"), [1, 384, 7, 7]);
        assert_eq!(output_of("avgpool"), [1, 1024, 1, 1]);
        assert_eq!(output_of("fc"), [1, 1000]);
        // torchvision's figure: 1.50 G multiply-adds ("GFLOPS" 1.498 in its model table).
        let macs: u64 = rows.iter().map(|r| r.mult_adds).sum();
        assert!((macs as f64 - 1.50e9).abs() <= 0.01 * 1.50e9, "{macs}");
        assert_eq!(macs, 1_498_376_192);

        // The auxiliary heads' rows follow the blocks they branch from, and count every parameter.
        let aux = googlenet_aux(&IMAGENET).unwrap();
        let (rows, output) = summarize(aux.as_ref(), &[1, 3, 224, 224]).unwrap();
        assert_eq!(output, vec![1, 1000]);
        assert_eq!(rows.iter().map(|r| r.parameters).sum::<usize>(), 13_004_888);
        let at = |path: &str| rows.iter().position(|r| r.path == path).unwrap();
        assert_eq!(at("aux1.conv.conv"), at("inception4a.branch4.1.bn") + 1);
        assert_eq!(at("inception4b.branch1.conv"), at("aux1.fc2") + 1);
        assert_eq!(rows[at("aux2.conv.conv")].output, [1, 128, 4, 4]);
        assert_eq!(rows[at("aux2.fc2")].output, [1, 1000]);
        assert_eq!(aux.output_shape(&[2, 3, 224, 224]).unwrap(), vec![2, 1000]);
    }

    #[test]
    fn wrong_inputs_are_errors() {
        let net = googlenet(&IMAGENET).unwrap();
        let err = net.output_shape(&[1, 1, 224, 224]).unwrap_err().to_string();
        assert!(err.starts_with("conv1 (conv (conv2d))"), "{err}");
        assert!(GoogLeNet::new(&BuildOptions { classes: 0, ..IMAGENET }, false).is_err());
        // Branches that disagree on the spatial size cannot be concatenated.
        let err = Inception::concat_shape(&[
            vec![1, 8, 4, 4],
            vec![1, 8, 4, 4],
            vec![1, 8, 4, 4],
            vec![1, 8, 3, 3],
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "Inception: the branches' outputs must agree on all but the channels to be concatenated, got \
             branch1 [1, 8, 4, 4], branch2 [1, 8, 4, 4], branch3 [1, 8, 4, 4], branch4 [1, 8, 3, 3]"
        );
    }

    #[test]
    fn initialisation_follows_torchvision() {
        let mut a = googlenet(&IMAGENET).unwrap();
        let mut with_aux = googlenet_aux(&IMAGENET).unwrap();
        let mut other = googlenet(&BuildOptions { seed: 1, ..IMAGENET }).unwrap();
        let values = |net: &mut Box<dyn Module>| -> Vec<(String, Tensor)> {
            named_parameters(net.as_mut()).into_iter().map(|(n, v)| (n, v.value().clone())).collect()
        };
        let (a, with_aux, other) = (values(&mut a), values(&mut with_aux), values(&mut other));
        // The auxiliary heads draw last: the main network is the same with or without them.
        let main: Vec<_> = with_aux.iter().filter(|(n, _)| !n.starts_with("aux")).cloned().collect();
        assert_eq!(a, main);
        assert_ne!(a[0].1, other[0].1);
        for (name, t) in &with_aux {
            let data = t.data();
            if name.ends_with("bn.weight") {
                assert!(data.iter().all(|&v| v == 1.0), "{name}");
            } else if name.ends_with("bn.bias") {
                assert!(data.iter().all(|&v| v == 0.0), "{name}");
            } else if name.ends_with(".bias") {
                let bound = 1.0
                    / (if name.starts_with("aux") && name.contains("fc1") { 2048.0f32 } else { 1024.0 })
                        .sqrt();
                assert!(data.iter().all(|&v| v.abs() <= bound), "{name}");
                assert!(data.iter().any(|&v| v.abs() > 0.9 * bound), "{name}");
            } else {
                assert!(name.ends_with(".weight"), "{name}");
                assert!(data.iter().all(|&v| (-2.0..=2.0).contains(&v)), "{name}");
            }
        }
        // All convolution and linear weights together: N(0, 0.01²).
        let weights: Vec<f64> = a
            .iter()
            .filter(|(n, _)| n.ends_with("conv.weight") || n == "fc.weight")
            .flat_map(|(_, t)| t.data().iter().map(|&v| v as f64))
            .collect();
        let n = weights.len() as f64;
        let mean = weights.iter().sum::<f64>() / n;
        let std = (weights.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 4.0 * 0.01 / n.sqrt(), "{mean}");
        assert!((std - 0.01).abs() < 0.0005, "{std}");
    }

    /// Rejection keeps exactly the values inside `[a, b]`; N(0, 1) on [−1, 1] has standard
    /// deviation 0.5379 (`scipy.stats.truncnorm(-1, 1).std()`), and an empty-looking interval is
    /// an error, not an endless loop.
    #[test]
    fn truncated_normal_rejects_outside_the_bounds() {
        let mut init = Init::new(9);
        let t = init.trunc_normal(&[100_000], 0.0, 1.0, -1.0, 1.0).unwrap();
        assert!(t.data().iter().all(|&v| (-1.0..=1.0).contains(&v)));
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (t.data().iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((std - 0.5379).abs() < 0.005, "{std}");
        let err = init.trunc_normal(&[4], 0.0, 1.0, 50.0, 51.0).unwrap_err().to_string();
        assert_eq!(
            err,
            "trunc_normal: invalid argument: [50, 51] holds too little of N(0, 1²) for rejection sampling"
        );
        assert!(init.trunc_normal(&[4], 0.0, 1.0, 1.0, 1.0).is_err());
    }

    /// One Inception block (inception3a's configuration) forward and backward in training mode.
    #[test]
    fn inception_block_trains() {
        let mut init = Init::new(5);
        let mut block = Inception::new(&mut init, 192, 64, 96, 128, 16, 32, 32).unwrap();
        assert_eq!(block.output_shape(&[1, 192, 8, 8]).unwrap(), vec![1, 256, 8, 8]);
        let x = Var::constant(init::normal([1, 192, 8, 8], 0.0, 1.0, &mut init::rng(1)).unwrap());
        let y = block.forward(&x, Mode::Train).unwrap();
        assert_eq!(y.value().dims(), &[1, 256, 8, 8]);
        assert!(y.value().data().iter().all(|&v| v.is_finite() && v >= 0.0), "ReLU outputs");
        // A weighted sum, so that batch norm's gradients do not cancel.
        let weights = Var::constant(init::normal([1, 256, 8, 8], 0.0, 1.0, &mut init::rng(2)).unwrap());
        autograd::sum_all(&autograd::mul(&y, &weights).unwrap()).backward().unwrap();
        let params = named_parameters(&mut block);
        assert_eq!(params.len(), 6 * 3);
        for (name, p) in &params {
            let grad = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
            assert_eq!(grad.shape(), p.value().shape(), "{name}");
            assert!(grad.data().iter().all(|v| v.is_finite()), "{name}");
            assert!(grad.data().iter().any(|&v| v != 0.0), "{name}");
        }
        let mut buffers = Vec::new();
        block.buffers("", &mut buffers);
        let tracked = buffers.iter().find(|(n, _)| n == "branch4.1.bn.num_batches_tracked").unwrap();
        assert_eq!(tracked.1.item().unwrap(), 1.0);
    }

    /// The whole network with auxiliary heads on a small input: `forward` gives the main logits,
    /// `forward_with_aux` adds the heads in training only, and the paper's loss
    /// `main + 0.3·(aux1 + aux2)` reaches every parameter.
    #[test]
    fn auxiliary_heads_in_training_only() {
        let options = BuildOptions { in_channels: 3, classes: 10, seed: 3 };
        let mut net = GoogLeNet::new(&options, true).unwrap();
        let x = Var::constant(init::normal([2, 3, 64, 64], 0.0, 1.0, &mut init::rng(4)).unwrap());
        let eval = net.forward_with_aux(&x, Mode::Eval).unwrap();
        assert!(eval.aux_logits1.is_none() && eval.aux_logits2.is_none());
        assert_eq!(net.forward(&x, Mode::Eval).unwrap().value(), eval.logits.value());

        let out = net.forward_with_aux(&x, Mode::Train).unwrap();
        let (aux1, aux2) = (out.aux_logits1.unwrap(), out.aux_logits2.unwrap());
        for logits in [&out.logits, &aux1, &aux2] {
            assert_eq!(logits.value().dims(), &[2, 10]);
        }
        let targets = [1, 7];
        let main = autograd::cross_entropy(&out.logits, &targets, 0.0).unwrap();
        let aux = autograd::add(
            &autograd::cross_entropy(&aux1, &targets, 0.0).unwrap(),
            &autograd::cross_entropy(&aux2, &targets, 0.0).unwrap(),
        )
        .unwrap();
        let loss = autograd::add(&main, &autograd::mul_scalar(&aux, 0.3)).unwrap();
        assert!(loss.value().item().unwrap().is_finite());
        loss.backward().unwrap();
        for (name, p) in named_parameters(&mut net) {
            let grad = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(grad.data().iter().all(|v| v.is_finite()), "{name}");
        }

        // Plain `forward` in training runs the main network only.
        let mut plain = googlenet(&options).unwrap();
        assert_eq!(plain.forward(&x, Mode::Train).unwrap().value().dims(), &[2, 10]);
        assert_eq!(net.forward(&x, Mode::Train).unwrap().value().dims(), &[2, 10]);
    }
}
