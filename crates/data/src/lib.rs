//! stride's data side: reading and writing images as `[C, H, W]` tensors, and the lecture's
//! 2-D filters (blur, sharpen, edge) applied with the tensor core's convolution; the IDX reader and
//! the MNIST / Fashion-MNIST data sets (discovery, checked download, loading as tensors).

pub mod datasets;
pub mod error;
pub mod filters;
pub mod idx;
pub mod image_io;

pub use error::{Error, Result};
