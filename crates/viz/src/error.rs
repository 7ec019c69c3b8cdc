//! The one error type of the pictures: what cannot be drawn and why, naming the layer, the
//! shapes or the file, and what would do instead.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape or a computation the tensor core or the layers rejected.
    #[error(transparent)]
    Tensor(#[from] stride_tensor::Error),
    /// A layer path that names no layer of the kind asked for; the message lists those that would.
    #[error("{0}")]
    Layer(String),
    /// Settings that do not fit the network or its input (a patch larger than the image, a class
    /// the network does not score).
    #[error("{0}")]
    Invalid(String),
    /// Text or a picture that could not be drawn.
    #[error("cannot draw the picture: {0}")]
    Render(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
}
