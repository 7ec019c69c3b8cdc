//! stride's tensor core: f32 n-dimensional tensors (contiguous, row-major, batch-first and
//! channel-first: NCW, NCHW, NCDHW), the size rules of convolution and pooling, and the
//! operations a CNN is made of, each with a plain reference implementation beside its fast one.

pub mod autograd;
mod buffer;
pub mod error;
pub(crate) mod gemm;
pub mod geometry;
pub mod ops;
pub mod shape;
pub mod simd;
pub mod tensor;
mod transpose;

pub use error::{Error, Result};
pub use shape::Shape;
pub use tensor::Tensor;
