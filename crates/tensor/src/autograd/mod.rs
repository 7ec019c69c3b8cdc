//! Reverse-mode automatic differentiation, define-by-run.
//!
//! A [`Var`] holds a tensor and, when it was computed from other `Var`s that need gradients, the
//! small named struct that knows how to send its output gradient back to its inputs
//! ([`Backward`]). Running the forward pass records the graph; [`Var::backward`] walks it once
//! in reverse topological order and accumulates the gradients of the leaves created with
//! [`Var::parameter`] (PyTorch's semantics: gradients add up until [`Var::zero_grad`]).
//!
//! Kernels know nothing of this module: each differentiable operation lives in a file here that
//! calls the forward kernel, saves what its backward needs, and calls the backward kernel.
//! Whether a value needs a gradient is a property of the value, and a graph is freed when its
//! last `Var` is dropped. The one switch is [`no_grad`], PyTorch's `torch.no_grad()`: inside it,
//! on the calling thread, operations record nothing, so inference keeps no activation alive
//! longer than the next layer needs it.

pub mod check;
mod cnn;
mod layout;
mod loss;
mod norm;
mod ops;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use cnn::*;
pub use layout::*;
pub use loss::*;
pub use norm::*;
pub use ops::*;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording any graph on this thread: every result is a constant, whatever its
/// inputs. For evaluation and inference, where no backward pass follows. Nests, and restores the
/// previous state even if `f` panics.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RECORDING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RECORDING.with(|r| r.replace(false)));
    f()
}

/// Whether operations on this thread record their graph (false inside [`no_grad`]).
pub fn is_recording() -> bool {
    RECORDING.with(Cell::get)
}

/// Sends the gradient of an operation's output back to its inputs.
pub trait Backward: Send + Sync {
    /// The operation's name, for error messages (`conv2d`, `add`, ...).
    fn name(&self) -> &'static str;

    /// The gradient for each input (in the order the inputs were recorded), or `None` for an
    /// input that needs none. `inputs` are the recorded inputs; `grad_output` has the output's
    /// shape.
    fn backward(&self, grad_output: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>>;
}

struct Node {
    id: u64,
    /// Bumped by every [`Var::value_mut`]: with `id`, names the value a cache was built from.
    version: u64,
    value: Tensor,
    requires_grad: bool,
    /// The accumulated gradient of a leaf parameter.
    grad: Mutex<Option<Tensor>>,
    backward: Option<Box<dyn Backward>>,
    inputs: Vec<Var>,
}

/// A tensor in a differentiable computation. Cloning a `Var` is cheap and shares the node.
#[derive(Clone)]
pub struct Var {
    node: Arc<Node>,
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Var {
    fn leaf(value: Tensor, requires_grad: bool) -> Self {
        Var {
            node: Arc::new(Node {
                id: next_id(),
                version: 0,
                value,
                requires_grad,
                grad: Mutex::new(None),
                backward: None,
                inputs: Vec::new(),
            }),
        }
    }

    /// A value that needs no gradient (an input image, a label, a constant).
    pub fn constant(value: Tensor) -> Self {
        Self::leaf(value, false)
    }

    /// A learnable leaf: [`Var::backward`] accumulates its gradient.
    pub fn parameter(value: Tensor) -> Self {
        Self::leaf(value, true)
    }

    /// The result of an operation. The graph is recorded only if some input needs a gradient;
    /// otherwise the result is a plain constant and nothing is kept alive.
    pub fn from_op(value: Tensor, inputs: Vec<Var>, backward: impl Backward + 'static) -> Self {
        if !is_recording() || !inputs.iter().any(Var::requires_grad) {
            return Self::constant(value);
        }
        Var {
            node: Arc::new(Node {
                id: next_id(),
                version: 0,
                value,
                requires_grad: true,
                grad: Mutex::new(None),
                backward: Some(Box::new(backward)),
                inputs,
            }),
        }
    }

    pub fn value(&self) -> &Tensor {
        &self.node.value
    }

    pub fn requires_grad(&self) -> bool {
        self.node.requires_grad
    }

    /// The value, for an in-place update by an optimiser: only when this `Var` is the node's
    /// sole owner (no graph or other handle still refers to it), so that no recorded operation
    /// can see its input change under it. `None` otherwise.
    pub fn value_mut(&mut self) -> Option<&mut Tensor> {
        Arc::get_mut(&mut self.node).map(|node| {
            node.version += 1;
            &mut node.value
        })
    }

    /// Names this value: two calls return the same pair only if the value cannot have changed
    /// in between (a new `Var` has a new node, an in-place update through [`Var::value_mut`] a
    /// new version). For caches of something computed from a parameter, such as packed filters.
    pub fn value_version(&self) -> (u64, u64) {
        (self.node.id, self.node.version)
    }

    /// Takes the accumulated gradient out, leaving none (an optimiser step, then the next
    /// backward starts from zero).
    pub fn take_grad(&self) -> Option<Tensor> {
        self.node.grad.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The same value, cut from the graph.
    pub fn detach(&self) -> Self {
        Self::constant(self.node.value.clone())
    }

    /// The accumulated gradient of a parameter (`None` before any backward pass).
    pub fn grad(&self) -> Option<Tensor> {
        self.node.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.node.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Back-propagates from a one-element output (a loss), seeding its gradient with 1.
    pub fn backward(&self) -> Result<()> {
        if self.value().numel() != 1 {
            return Err(Error::shape(
                "backward",
                format!(
                    "needs a one-element output such as a loss, got shape {}; use backward_with \
                     to give the output's gradient",
                    self.value().shape()
                ),
            ));
        }
        self.backward_with(Tensor::full(self.value().shape().clone(), 1.0)?)
    }

    /// Back-propagates `grad_output`, the gradient of some scalar with respect to this value.
    pub fn backward_with(&self, grad_output: Tensor) -> Result<()> {
        if grad_output.shape() != self.value().shape() {
            return Err(Error::shape(
                "backward",
                format!(
                    "the output gradient has shape {} but the output has shape {}",
                    grad_output.shape(),
                    self.value().shape()
                ),
            ));
        }
        if !self.requires_grad() {
            return Err(Error::invalid(
                "backward",
                "this value does not depend on any parameter, so it has no gradient to propagate",
            ));
        }
        let order = self.topological_order();
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.node.id, grad_output);
        for var in order.iter().rev() {
            let Some(grad) = grads.remove(&var.node.id) else { continue };
            match &var.node.backward {
                None => accumulate_into(&var.node.grad, grad)?,
                Some(op) => {
                    let input_grads = op.backward(&grad, &var.node.inputs)?;
                    for (input, input_grad) in var.node.inputs.iter().zip(input_grads) {
                        let Some(input_grad) = input_grad else { continue };
                        if !input.requires_grad() {
                            continue;
                        }
                        if input_grad.shape() != input.value().shape() {
                            return Err(Error::shape(
                                op.name(),
                                format!(
                                    "backward produced a gradient of shape {} for an input of shape {}",
                                    input_grad.shape(),
                                    input.value().shape()
                                ),
                            ));
                        }
                        match grads.remove(&input.node.id) {
                            Some(existing) => grads.insert(input.node.id, existing.add(&input_grad)?),
                            None => grads.insert(input.node.id, input_grad),
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node that needs a gradient, inputs before the nodes computed from them. Iterative,
    /// so a 152-layer network does not exhaust the stack.
    fn topological_order(&self) -> Vec<Var> {
        let mut order = Vec::new();
        let mut visited = std::collections::HashSet::new();
        let mut stack: Vec<(Var, bool)> = vec![(self.clone(), false)];
        while let Some((var, expanded)) = stack.pop() {
            if expanded {
                order.push(var);
                continue;
            }
            if !var.requires_grad() || !visited.insert(var.node.id) {
                continue;
            }
            stack.push((var.clone(), true));
            for input in var.node.inputs.iter().rev() {
                stack.push((input.clone(), false));
            }
        }
        order
    }
}

fn accumulate_into(slot: &Mutex<Option<Tensor>>, grad: Tensor) -> Result<()> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    *slot = Some(match slot.take() {
        Some(existing) => existing.add(&grad)?,
        None => grad,
    });
    Ok(())
}

impl Drop for Node {
    /// Unlinks long chains iteratively: dropping the output of a deep network would otherwise
    /// recurse once per layer.
    fn drop(&mut self) {
        let mut pending: Vec<Var> = std::mem::take(&mut self.inputs);
        while let Some(var) = pending.pop() {
            if let Ok(mut node) = Arc::try_unwrap(var.node) {
                pending.append(&mut node.inputs);
            }
        }
    }
}

impl fmt::Debug for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.node.backward.as_ref().map_or("leaf", |b| b.name());
        write!(f, "Var({op}, requires_grad={}, {:?})", self.requires_grad(), self.value())
    }
}
