//! stride's data side: reading and writing images as `[C, H, W]` tensors, and the lecture's
//! 2-D filters (blur, sharpen, edge) applied with the tensor core's convolution.

pub mod error;
pub mod filters;
pub mod image_io;

pub use error::{Error, Result};
