//! Differentiable layout operations: flatten, permute, pad, concat and slice. Their gradients
//! move the output gradient back to where each element came from.

use super::ops::ReshapeBackward;
use super::{Backward, Var};
use crate::error::Result;
use crate::ops::layout;
use crate::tensor::Tensor;

/// Flattens axes `start..=end` into one (PyTorch's `torch.flatten`).
pub fn flatten(x: &Var, start_axis: isize, end_axis: isize) -> Result<Var> {
    Ok(Var::from_op(layout::flatten(x.value(), start_axis, end_axis)?, vec![x.clone()], ReshapeBackward))
}

struct PermuteBackward {
    inverse: Vec<isize>,
}

impl Backward for PermuteBackward {
    fn name(&self) -> &'static str {
        "permute"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(layout::permute(grad, &self.inverse)?)])
    }
}

/// Reorders the axes: output axis `i` is input axis `axes[i]`.
pub fn permute(x: &Var, axes: &[isize]) -> Result<Var> {
    let y = layout::permute(x.value(), axes)?;
    // The forward validated `axes` as a permutation of the rank.
    let rank = x.value().rank() as isize;
    let mut inverse = vec![0isize; axes.len()];
    for (i, &a) in axes.iter().enumerate() {
        inverse[(if a < 0 { a + rank } else { a }) as usize] = i as isize;
    }
    Ok(Var::from_op(y, vec![x.clone()], PermuteBackward { inverse }))
}

struct PadBackward {
    pads: Vec<(usize, usize)>,
}

impl Backward for PadBackward {
    fn name(&self) -> &'static str {
        "pad"
    }

    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let mut g = grad.clone();
        for (axis, (&(before, _), &size)) in self.pads.iter().zip(inputs[0].value().dims()).enumerate() {
            g = layout::narrow(&g, axis as isize, before, size)?;
        }
        Ok(vec![Some(g)])
    }
}

/// Pads every axis with `(before, after)` elements of `value`.
pub fn pad(x: &Var, pads: &[(usize, usize)], value: f32) -> Result<Var> {
    let y = layout::pad(x.value(), pads, value)?;
    Ok(Var::from_op(y, vec![x.clone()], PadBackward { pads: pads.to_vec() }))
}

struct ConcatBackward {
    axis: isize,
    sizes: Vec<usize>,
}

impl Backward for ConcatBackward {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
        Ok(layout::split_sizes(grad, &self.sizes, self.axis)?.into_iter().map(Some).collect())
    }
}

/// Joins tensors along `axis` (Inception's channel concatenation).
pub fn concat(xs: &[Var], axis: isize) -> Result<Var> {
    let values: Vec<&Tensor> = xs.iter().map(Var::value).collect();
    let y = layout::concat(&values, axis)?;
    let resolved = y.shape().axis("concat", axis)?;
    let sizes = xs.iter().map(|x| x.value().dims()[resolved]).collect();
    Ok(Var::from_op(y, xs.to_vec(), ConcatBackward { axis, sizes }))
}

struct SliceBackward {
    axis: usize,
    start: usize,
    step: usize,
}

impl Backward for SliceBackward {
    fn name(&self) -> &'static str {
        "slice"
    }

    /// Scatters each gradient row back to the input index it was taken from; the rest are 0.
    fn backward(&self, grad: &Tensor, inputs: &[Var]) -> Result<Vec<Option<Tensor>>> {
        let input_shape = inputs[0].value().shape().clone();
        let mut dx = Tensor::zeros(input_shape.clone())?;
        let dims = input_shape.dims();
        let inner: usize = dims[self.axis + 1..].iter().product();
        let (taken, size) = (grad.dims()[self.axis], dims[self.axis]);
        for (outer, block) in grad.data().chunks_exact((taken * inner).max(1)).enumerate() {
            for (i, row) in block.chunks_exact(inner.max(1)).enumerate() {
                let at = (outer * size + self.start + i * self.step) * inner;
                dx.data_mut()[at..at + row.len()].copy_from_slice(row);
            }
        }
        Ok(vec![Some(dx)])
    }
}

/// Elements `start, start+step, …` below `end` along `axis`.
pub fn slice(x: &Var, axis: isize, start: usize, end: usize, step: usize) -> Result<Var> {
    let y = layout::slice(x.value(), axis, start, end, step)?;
    let axis = x.value().shape().axis("slice", axis)?;
    Ok(Var::from_op(y, vec![x.clone()], SliceBackward { axis, start, step }))
}
