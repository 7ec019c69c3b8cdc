//! The one error type of a training run: what went wrong, with the file or the step it concerns
//! and what to do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A shape, a parameter or a checkpoint the tensor core or the layers rejected.
    #[error(transparent)]
    Tensor(#[from] stride_tensor::Error),
    /// A data set that is missing, corrupt or does not fit.
    #[error(transparent)]
    Data(#[from] stride_data::Error),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A run directory or checkpoint that cannot be used, with the reason.
    #[error("{0}")]
    Checkpoint(String),
    /// The loss became NaN or infinite; the run stopped without overwriting the last good
    /// checkpoint.
    #[error(
        "the loss became {loss} at epoch {epoch}, batch {batch} (learning rate {lr}); training stopped. \
         {kept} Try a smaller --lr (or a warm-up schedule), or check the input data."
    )]
    Diverged { loss: f32, epoch: usize, batch: usize, lr: f32, kept: String },
    /// A plot could not be drawn or written.
    #[error("plot {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
    /// Settings that contradict each other or the data.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}
