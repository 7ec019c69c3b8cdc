//! stride's data side: reading and writing images as `[C, H, W]` tensors, and the lecture's
//! 2-D filters (blur, sharpen, edge) applied with the tensor core's convolution; the IDX reader and
//! the MNIST / Fashion-MNIST data sets (discovery, checked download, loading as tensors); the
//! training pipeline: per-image transforms and a seeded, prefetching mini-batch loader.

pub mod datasets;
pub mod error;
pub mod filters;
pub mod idx;
pub mod image_io;
pub mod loader;
pub mod transforms;

pub use error::{Error, Result};
