//! The one error type of the tensor core.
//!
//! Every message names the operation, the shapes involved and, for geometry, the size rule with the
//! numbers put in, so a user can fix the call without reading the code.

use std::fmt;

/// What went wrong, and in which operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit together (a kernel larger than the padded input, channels that do not
    /// match the weight depth, a wrong rank, a broadcast that does not apply...).
    #[error("{op}: {message}")]
    Shape { op: String, message: String },
    /// A parameter that is invalid whatever the input (zero stride, zero groups, a negative size...).
    #[error("{op}: invalid argument: {message}")]
    InvalidArgument { op: String, message: String },
}

impl Error {
    pub fn shape(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Shape { op: op.to_string(), message: message.to_string() }
    }

    pub fn invalid(op: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::InvalidArgument { op: op.to_string(), message: message.to_string() }
    }

    /// The operation the error came from (`conv2d`, `max_pool2d`, `features.0`...).
    pub fn op(&self) -> &str {
        match self {
            Error::Shape { op, .. } | Error::InvalidArgument { op, .. } => op,
        }
    }

    /// The same error attributed to a named place, e.g. a layer path: `features.0 (conv2d): ...`.
    pub fn within(self, place: &str) -> Self {
        match self {
            Error::Shape { op, message } => Error::Shape { op: format!("{place} ({op})"), message },
            Error::InvalidArgument { op, message } => {
                Error::InvalidArgument { op: format!("{place} ({op})"), message }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
