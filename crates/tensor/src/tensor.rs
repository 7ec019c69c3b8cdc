//! The f32 n-dimensional tensor: a shape and a contiguous row-major buffer.
//!
//! Tensors own their data and are always contiguous; operations that change the layout
//! (permute, slice, pad...) produce a new contiguous tensor. This keeps every kernel simple and
//! fast; views and non-CPU storage can be added behind the same accessors.

use std::fmt;

use crate::error::{Error, Result};
use crate::shape::Shape;

#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of the given shape over `data` (row-major); errors when the lengths differ.
    pub fn new(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        let numel = shape.checked_numel()?;
        if numel != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("shape {shape} holds {numel} elements but {} were given", data.len()),
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn full(shape: impl Into<Shape>, value: f32) -> Result<Self> {
        let shape = shape.into();
        let numel = shape.checked_numel()?;
        Ok(Tensor { shape, data: vec![value; numel] })
    }

    pub fn zeros(shape: impl Into<Shape>) -> Result<Self> {
        Self::full(shape, 0.0)
    }

    pub fn ones(shape: impl Into<Shape>) -> Result<Self> {
        Self::full(shape, 1.0)
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar(value: f32) -> Self {
        Tensor { shape: Shape::default(), data: vec![value] }
    }

    /// Element `i` of the row-major order is `f(multi_index)`.
    pub fn from_fn(shape: impl Into<Shape>, mut f: impl FnMut(&[usize]) -> f32) -> Result<Self> {
        let shape = shape.into();
        let numel = shape.checked_numel()?;
        let dims = shape.dims().to_vec();
        let mut index = vec![0usize; dims.len()];
        let mut data = Vec::with_capacity(numel);
        for _ in 0..numel {
            data.push(f(&index));
            for axis in (0..dims.len()).rev() {
                index[axis] += 1;
                if index[axis] < dims[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Ok(Tensor { shape, data })
    }

    /// Built by kernels that computed the shape themselves; the length must already agree.
    pub(crate) fn from_parts(shape: Shape, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.checked_numel().ok(), Some(data.len()));
        Tensor { shape, data }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The value at a multi-index, or an error naming the index and the shape.
    pub fn get(&self, index: &[usize]) -> Result<f32> {
        let dims = self.dims();
        if index.len() != dims.len() || index.iter().zip(dims).any(|(&i, &d)| i >= d) {
            return Err(Error::shape(
                "get",
                format!("index {index:?} is out of bounds for shape {}", self.shape),
            ));
        }
        let offset = index.iter().zip(self.shape.strides()).map(|(i, s)| i * s).sum::<usize>();
        Ok(self.data[offset])
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        match self.data.as_slice() {
            [v] => Ok(*v),
            _ => Err(Error::shape(
                "item",
                format!("needs a tensor with one element, got shape {}", self.shape),
            )),
        }
    }

    /// Checks that the tensor has `rank` dimensions, naming what they mean in the error.
    pub fn expect_rank(&self, op: &str, rank: usize, layout: &str) -> Result<()> {
        if self.rank() != rank {
            return Err(Error::shape(
                op,
                format!(
                    "expected a {rank}-d tensor laid out as {layout}, got shape {} (rank {})",
                    self.shape,
                    self.rank()
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "Tensor{} ", self.shape)?;
        let head: Vec<String> = self.data.iter().take(SHOWN).map(|v| format!("{v:.4}")).collect();
        write!(f, "[{}", head.join(", "))?;
        if self.data.len() > SHOWN {
            write!(f, ", … {} more", self.data.len() - SHOWN)?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        let err = Tensor::new([2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.to_string(), "tensor: shape [2, 3] holds 6 elements but 5 were given");
    }

    #[test]
    fn from_fn_visits_row_major() {
        let t = Tensor::from_fn([2, 3], |i| (i[0] * 10 + i[1]) as f32).unwrap();
        assert_eq!(t.data(), &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        assert_eq!(t.get(&[1, 2]).unwrap(), 12.0);
        assert!(t.get(&[2, 0]).is_err());
    }
}
