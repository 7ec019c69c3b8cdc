//! The `Module` trait: a layer or a network that runs forward on `Var`s (optionally reporting
//! every leaf layer's output by path, [`forward_with_activations`]), answers its output shape
//! without computing, and exposes its parameters and buffers under torchvision's state_dict
//! paths (`features.0.weight`, `layer1.0.bn1.running_mean`).

use stride_tensor::autograd::Var;
use stride_tensor::{Result, Tensor};

/// Training or evaluation behaviour (batch norm statistics, dropout), always passed explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A named learnable parameter, borrowed for an optimiser step or a checkpoint.
pub type NamedVar<'a> = (String, &'a mut Var);
/// A named buffer (running statistics), borrowed for a checkpoint.
pub type NamedBuffer<'a> = (String, &'a mut Tensor);

/// One row of a network's summary: a leaf layer, what it makes of its input, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSummary {
    /// The torchvision path (`layer1.0.conv1`).
    pub path: String,
    /// [`Module::describe`] of the layer.
    pub layer: String,
    pub output: Vec<usize>,
    /// Learnable values of this layer alone.
    pub parameters: usize,
    /// Multiply-adds of one forward pass at this input (convolutions and linear layers).
    pub mult_adds: u64,
    /// The size rule's division left a remainder that was dropped: the last rows or columns of
    /// the input (with its padding) are never read.
    pub floored: bool,
}

/// What [`Module::forward_tapped`] calls with each leaf layer's path and output.
pub type Tap<'a> = dyn FnMut(&str, &Var) + 'a;

/// A tap that looks at nothing: what a container's plain `forward` passes.
pub fn no_tap(_: &str, _: &Var) {}

/// A layer or a network.
pub trait Module: Send {
    /// The layer's type and settings, as PyTorch prints them (`Conv2d(1, 6, kernel_size=(5, 5))`).
    fn describe(&self) -> String;

    /// Runs the layer. `&mut self` because training updates running statistics.
    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var>;

    /// The output shape for an input shape, without allocating or computing: a wrong input is
    /// rejected with the size rule's error before any work.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;

    /// Appends the learnable parameters, named `prefix` + their path.
    fn parameters<'a>(&'a mut self, _prefix: &str, _out: &mut Vec<NamedVar<'a>>) {}

    /// Appends the buffers (batch norm running statistics, batches tracked).
    fn buffers<'a>(&'a mut self, _prefix: &str, _out: &mut Vec<NamedBuffer<'a>>) {}

    /// Learnable values held by this layer itself, not by its children.
    fn own_parameters(&self) -> usize {
        0
    }

    /// Multiply-adds of one forward pass of this layer itself for `input` (with `output` its
    /// output shape). Only the layers that multiply weights count, as in published figures.
    fn mult_adds(&self, _input: &[usize], _output: &[usize]) -> u64 {
        0
    }

    /// Prepares the network for inference only: folds every batch norm into the convolution
    /// before it (`w' = w·γ/σ`, `b' = (b − μ)·γ/σ + β`, σ = √(running var + ε)), after which the
    /// batch norm passes its input through, and moves each ReLU that follows a convolution into
    /// the convolution's output loop (`Conv::fuse_relu`): bias and ReLU in one pass. Evaluation outputs stay the same up to rounding;
    /// training a folded network is an error, and so is saving it as a training checkpoint (its
    /// weights are no longer those of the unfolded layers). Containers fold their children.
    fn fold_batch_norm(&mut self) -> Result<()> {
        Ok(())
    }

    /// The layer as `Any`, for the containers that look for a convolution followed by a batch
    /// norm among their children; `None` for layers nobody looks for.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }

    /// Whether the size rule floors for this input (see [`LayerSummary::floored`]).
    fn floors(&self, _input: &[usize]) -> bool {
        false
    }

    /// Runs the layer like [`Module::forward`] and reports every leaf layer's output to `tap`
    /// under its path (`prefix` + the torchvision path within this module: `layer1.0.conv1`,
    /// `features.3`), in forward order, the same paths [`Module::summarize`] lists. A leaf layer
    /// keeps this default, which reports its own output under `prefix`; a container overrides it
    /// to run each child's `forward_tapped` with the child's path. Its `forward` is this with a
    /// tap that does nothing, except where it fuses layers whose intermediate output a tap would
    /// see (`Sequential` and the residual blocks run a batch norm and the ReLU after it as one
    /// operation): the values are the same either way, which the zoo's tests check bit for bit.
    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        let y = self.forward(x, mode)?;
        tap(prefix, &y);
        Ok(y)
    }

    /// Appends one row per leaf layer for an input of shape `input`, named `prefix` + path,
    /// without computing anything, and returns the output shape. A leaf layer keeps this default;
    /// a container calls it on each child with the child's path and shape, in forward order.
    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let output = self.output_shape(input)?;
        rows.push(LayerSummary {
            path: prefix.to_string(),
            layer: self.describe(),
            output: output.clone(),
            parameters: self.own_parameters(),
            mult_adds: self.mult_adds(input, &output),
            floored: self.floors(input),
        });
        Ok(output)
    }
}

/// The summary rows of a whole network for one input shape.
pub fn summarize(module: &dyn Module, input: &[usize]) -> Result<(Vec<LayerSummary>, Vec<usize>)> {
    let mut rows = Vec::new();
    let output = module.summarize("", input, &mut rows)?;
    Ok((rows, output))
}

/// Runs `module` forward on `x` and keeps a copy of the output of every leaf layer for which
/// `keep(path, output dims)` says yes, in forward order: the activations that feature-map
/// pictures and probes look at. The result is [`Module::forward`]'s, bit for bit.
///
/// ```
/// use stride_nn::layers::{Activation, Conv2d};
/// use stride_nn::module::{Mode, Sequential, forward_with_activations};
/// use stride_tensor::autograd::Var;
/// use stride_tensor::ops::conv::ConvSpec;
/// use stride_tensor::Tensor;
///
/// let conv = Conv2d::from_parts(Tensor::ones([2, 1, 3, 3])?, None, ConvSpec::new())?;
/// let mut net = Sequential::named(vec![("conv", Box::new(conv)), ("relu", Box::new(Activation::ReLU))]);
/// let x = Var::constant(Tensor::ones([1, 1, 5, 5])?);
/// let (y, maps) = forward_with_activations(&mut net, &x, Mode::Eval, |_, dims| dims.len() == 4)?;
/// assert_eq!(y.value().dims(), &[1, 2, 3, 3]);
/// let paths: Vec<&str> = maps.iter().map(|(path, _)| path.as_str()).collect();
/// assert_eq!(paths, ["conv", "relu"]);
/// # Ok::<(), stride_tensor::Error>(())
/// ```
pub fn forward_with_activations(
    module: &mut dyn Module,
    x: &Var,
    mode: Mode,
    mut keep: impl FnMut(&str, &[usize]) -> bool,
) -> Result<(Var, Vec<(String, Tensor)>)> {
    let mut kept = Vec::new();
    let y = module.forward_tapped("", x, mode, &mut |path: &str, y: &Var| {
        if keep(path, y.value().dims()) {
            kept.push((path.to_string(), y.value().clone()));
        }
    })?;
    Ok((y, kept))
}

/// `12,345,678`: thousands grouped, as summaries print parameter and multiply-add counts.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// Every parameter of a module with its path.
pub fn named_parameters(module: &mut dyn Module) -> Vec<NamedVar<'_>> {
    let mut out = Vec::new();
    module.parameters("", &mut out);
    out
}

/// The number of learnable values.
pub fn parameter_count(module: &mut dyn Module) -> usize {
    named_parameters(module).iter().map(|(_, v)| v.value().numel()).sum()
}

/// Layers applied in order, named `0`, `1`, … as `torch.nn.Sequential`, or by given names as
/// `Sequential(OrderedDict(...))`.
pub struct Sequential {
    layers: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    pub fn new(layers: Vec<Box<dyn Module>>) -> Self {
        Sequential { layers: layers.into_iter().enumerate().map(|(i, l)| (i.to_string(), l)).collect() }
    }

    /// Layers with names (`conv1`, `fc1`): their parameters are `conv1.weight`, ….
    pub fn named(layers: Vec<(&str, Box<dyn Module>)>) -> Self {
        Sequential { layers: layers.into_iter().map(|(n, l)| (n.to_string(), l)).collect() }
    }

    /// The layers with their names, in order.
    pub fn layers(&self) -> impl Iterator<Item = (&str, &dyn Module)> {
        self.layers.iter().map(|(n, l)| (n.as_str(), l.as_ref()))
    }
}

impl Sequential {
    /// Moves each ReLU that follows a convolution (directly, or after a batch norm folded into
    /// it) into the convolution's epilogue, leaving a pass-through under the ReLU's name.
    fn fuse_relus(&mut self) {
        use crate::layers::{Activation, Conv2d, FusedInto};
        use crate::norm::BatchNorm2d;
        let is = |layer: &mut Box<dyn Module>, test: &dyn Fn(&mut dyn std::any::Any) -> bool| {
            layer.as_any_mut().is_some_and(test)
        };
        for i in 0..self.layers.len() {
            if !is(&mut self.layers[i].1, &|a| a.is::<Conv2d>()) {
                continue;
            }
            let mut j = i + 1;
            while j < self.layers.len()
                && is(&mut self.layers[j].1, &|a| a.downcast_ref::<BatchNorm2d>().is_some_and(|bn| bn.folded))
            {
                j += 1;
            }
            if j < self.layers.len()
                && is(&mut self.layers[j].1, &|a| matches!(a.downcast_ref(), Some(Activation::ReLU)))
            {
                let replaced = self.layers[j].1.describe();
                self.layers[j].1 = Box::new(FusedInto::new(replaced));
                if let Some(conv) = self.layers[i].1.as_any_mut().and_then(|a| a.downcast_mut::<Conv2d>()) {
                    conv.fuse_relu();
                }
            }
        }
    }
}

impl Module for Sequential {
    fn describe(&self) -> String {
        let inner: Vec<String> = self
            .layers
            .iter()
            .map(|(name, l)| format!("  ({name}): {}", l.describe().replace('\n', "\n  ")))
            .collect();
        format!("Sequential(\n{}\n)", inner.join("\n"))
    }

    /// As [`Module::forward_tapped`] with no tap, except that a 2-d batch norm followed by a
    /// ReLU runs as one operation (the same values and gradients, fewer passes over the
    /// activations in training); a tap sees the batch norm's own output, so it keeps them apart.
    fn forward(&mut self, x: &Var, mode: Mode) -> Result<Var> {
        let mut h = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let (head, tail) = self.layers.split_at_mut(i + 1);
            let (name, layer) = &mut head[i];
            let relu_next = tail.first_mut().is_some_and(|(_, next)| {
                next.as_any_mut().and_then(|a| a.downcast_ref::<crate::layers::Activation>())
                    == Some(&crate::layers::Activation::ReLU)
            });
            let bn = layer.as_any_mut().and_then(|a| a.downcast_mut::<crate::norm::BatchNorm2d>());
            h = match bn {
                Some(bn) if relu_next => {
                    i += 1;
                    bn.forward_relu(&h, mode)
                }
                _ => layer.forward(&h, mode),
            }
            .map_err(|e| e.within(name))?;
            i += 1;
        }
        Ok(h)
    }

    fn forward_tapped(&mut self, prefix: &str, x: &Var, mode: Mode, tap: &mut Tap<'_>) -> Result<Var> {
        let mut h = x.clone();
        for (name, layer) in self.layers.iter_mut() {
            h = layer.forward_tapped(&join(prefix, name), &h, mode, tap).map_err(|e| e.within(name))?;
        }
        Ok(h)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (name, layer) in &self.layers {
            shape = layer.output_shape(&shape).map_err(|e| e.within(name))?;
        }
        Ok(shape)
    }

    fn fold_batch_norm(&mut self) -> Result<()> {
        for i in 0..self.layers.len() {
            if i + 1 < self.layers.len() {
                let (head, tail) = self.layers.split_at_mut(i + 1);
                let conv = head[i].1.as_any_mut().and_then(|a| a.downcast_mut::<crate::layers::Conv2d>());
                let bn = tail[0].1.as_any_mut().and_then(|a| a.downcast_mut::<crate::norm::BatchNorm2d>());
                if let (Some(conv), Some(bn)) = (conv, bn) {
                    bn.fold_into(conv).map_err(|e| e.within(&tail[0].0))?;
                    continue;
                }
            }
            let (name, layer) = &mut self.layers[i];
            layer.fold_batch_norm().map_err(|e| e.within(name))?;
        }
        self.fuse_relus();
        Ok(())
    }

    fn summarize(&self, prefix: &str, input: &[usize], rows: &mut Vec<LayerSummary>) -> Result<Vec<usize>> {
        let mut shape = input.to_vec();
        for (name, layer) in &self.layers {
            let path = join(prefix, name);
            shape = layer.summarize(&path, &shape, rows).map_err(|e| e.within(name))?;
        }
        Ok(shape)
    }

    fn parameters<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedVar<'a>>) {
        for (name, layer) in self.layers.iter_mut() {
            layer.parameters(&join(prefix, name), out);
        }
    }

    fn buffers<'a>(&'a mut self, prefix: &str, out: &mut Vec<NamedBuffer<'a>>) {
        for (name, layer) in self.layers.iter_mut() {
            layer.buffers(&join(prefix, name), out);
        }
    }
}
