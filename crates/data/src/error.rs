//! The one error type of the data crate.
//!
//! File errors start with the file's path and say what was expected and what was found, so the
//! message alone tells a user what to fix; kernel errors point at the row and value.

use std::io;
use std::path::{Path, PathBuf};

use crate::image_io::SUPPORTED_EXTENSIONS;

/// What went wrong while reading, writing or filtering data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read or written (permissions, a directory, a full disk...).
    /// The OS error is part of the message rather than a `source`, so that printing the error
    /// chain (as `anyhow` does) shows it once.
    #[error("{}: cannot {action}: {cause}", path.display())]
    Io { path: PathBuf, action: &'static str, cause: io::Error },

    /// The bytes are not a valid image of the format they claim to be (truncated, corrupt, empty).
    #[error("{}: not a readable PNG or JPEG image: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The extension chooses the format; only those the build decodes and encodes are accepted.
    #[error("{}: unsupported extension {found}; supported: {}", path.display(), SUPPORTED_EXTENSIONS.join(", "))]
    UnsupportedExtension { path: PathBuf, found: String },

    /// A tensor that cannot be an image: images are `[C, H, W]` with C = 1 (grey) or 3 (colour).
    #[error("{}: cannot save a tensor of shape {shape} as an image: {expected}", path.display())]
    ImageShape { path: PathBuf, shape: String, expected: String },

    /// The encoder refused the pixels (e.g. 16-bit JPEG, or a size the format cannot hold).
    #[error("{}: cannot encode: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },

    /// A kernel written as text (`"0,-1,0;-1,5,-1;0,-1,0"`) that does not parse.
    #[error("kernel {text:?}: {message}")]
    Kernel { text: String, message: String },

    /// A padding written as text that is neither `same`, `valid` nor a number.
    #[error("padding {text:?}: expected `same`, `valid` or a number of pixels such as 1")]
    Padding { text: String },

    /// A geometry or shape error from the tensor core (a kernel larger than the image...).
    #[error(transparent)]
    Tensor(#[from] stride_tensor::Error),
}

impl Error {
    /// A failed read; a missing file gets its own variant because it is the common mistake.
    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound { path: path.to_path_buf() }
        } else {
            Error::Io { path: path.to_path_buf(), action: "read", cause: source }
        }
    }

    /// A failed write; "not found" here means a missing folder, so the OS message is kept as is.
    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), action: "write", cause: source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
