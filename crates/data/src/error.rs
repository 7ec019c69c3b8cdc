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

    /// An IDX file whose first four bytes are not the magic number of what was asked for.
    #[error("{}: expected IDX magic 0x{expected:08x} ({what}), found 0x{found:08x} ({})", path.display(), describe_magic(*found))]
    IdxMagic { path: PathBuf, expected: u32, what: &'static str, found: u32 },

    /// A file too short to hold even the IDX header.
    #[error("{}: holds {found} bytes, too few for the {needed}-byte IDX header of {what}", path.display())]
    IdxHeader { path: PathBuf, found: u64, needed: u64, what: &'static str },

    /// The body does not hold exactly what the header promises: truncated, padded, or a lying
    /// header (checked before anything the size of the promise is allocated).
    #[error("{}: holds {found} bytes of {what} but the header promises {formula} = {expected}", path.display())]
    IdxSize { path: PathBuf, what: &'static str, found: u64, formula: String, expected: u128 },

    /// A gzip file whose stream cannot be decompressed.
    #[error("{}: corrupt gzip stream: {cause}", path.display())]
    Gzip { path: PathBuf, cause: io::Error },

    /// A label outside the data set's classes.
    #[error("{}: label {label} at index {index} is out of range; labels are 0 to {}", path.display(), classes - 1)]
    IdxLabel { path: PathBuf, index: usize, label: u8, classes: usize },

    /// Images and labels that cannot be paired one to one.
    #[error("{} holds {image_count} images but {} holds {label_count} labels; they must pair one to one", images.display(), labels.display())]
    IdxCountMismatch { images: PathBuf, image_count: usize, labels: PathBuf, label_count: usize },

    /// A data set name that is not one of the known ones.
    #[error("unknown data set {name:?}; known: {known}")]
    UnknownDataset { name: String, known: String },

    /// No search root holds the data set and downloading it failed too; the message lists every
    /// place searched, why the download failed and how to fix it.
    #[error("{}", not_found_message(name, searched, download))]
    DatasetNotFound { name: String, searched: Vec<String>, download: String },

    /// A download that failed before its bytes could be checked (HTTP status, connection,
    /// interrupted transfer). The partial file has been removed.
    #[error("{}: cannot download {url}: {reason}", path.display())]
    Download { path: PathBuf, url: String, reason: String },

    /// A downloaded file whose SHA-256 is not the pinned one. The partial file has been removed.
    #[error("{}: SHA-256 mismatch for {url}: expected {expected}, found {found}; the download was removed", path.display())]
    Checksum { path: PathBuf, url: String, expected: String, found: String },

    /// An argument of the training pipeline that cannot work whatever the data: a batch size of
    /// 0, a standard deviation of 0, a crop larger than the padded image, a fraction outside
    /// [0, 1)... `what` names the place (`loader`, `normalize`, `random crop`...).
    #[error("{what}: {message}")]
    InvalidArgument { what: &'static str, message: String },

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

    pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { what, message: message.into() }
    }

    /// A failed write; "not found" here means a missing folder, so the OS message is kept as is.
    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), action: "write", cause: source }
    }
}

/// What an IDX magic number says about a file, for messages: the element type and the number of
/// dimensions, or that the file is not IDX at all (IDX magics start with two zero bytes).
fn describe_magic(magic: u32) -> String {
    let [zero0, zero1, kind, dims] = magic.to_be_bytes();
    if zero0 != 0 || zero1 != 0 {
        return "not an IDX file".into();
    }
    let kind = match kind {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown element type",
    };
    let what = match (kind, dims) {
        ("u8", 1) => " labels",
        ("u8", 3) => " images",
        _ => "",
    };
    format!("{kind}{what}, {dims} dim{}", if dims == 1 { "" } else { "s" })
}

fn not_found_message(name: &str, searched: &[String], download: &str) -> String {
    let mut message = format!("data set {name} not found; searched, in order:\n");
    for place in searched {
        message.push_str(&format!("  {place}\n"));
    }
    message.push_str(&format!("and the download failed: {download}\n"));
    message.push_str(&format!(
        "fix it with one of: `--data DIR` (a folder holding {name}/ or its four files), \
         STRIDE_DATA=DIR (the same), or, for fashion-mnist, `apt-get install dataset-fashion-mnist`"
    ));
    message
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
