//! The real data sets stride trains on, MNIST and Fashion-MNIST: their files, where they come
//! from, and loading a split as tensors.
//!
//! ```text
//! images [N, 1, 28, 28]  f32 in [0, 1]
//! labels [N]             class indices 0..10
//! ```
//!
//! Finding the files on disk is [`discovery`]; fetching them, checked against pinned SHA-256
//! digests, is [`download`]. Both data sets ship the same four IDX files (see [`crate::idx`]), raw
//! or gzip, under the names LeCun's MNIST page gave them.

pub mod discovery;
pub mod download;
pub mod synthetic;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use stride_tensor::Tensor;

use crate::error::{Error, Result};
use crate::idx;

pub use discovery::{Discovery, Found, Place};
pub use download::{RemoteFile, download_dataset, download_file};

/// A data set stride knows how to find, download and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

/// The four files of a data set, in [`DatasetName::files`] order.
pub const FILE_STEMS: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

impl DatasetName {
    /// Every known data set, in the order error messages list them.
    pub const ALL: [DatasetName; 2] = [DatasetName::Mnist, DatasetName::FashionMnist];

    /// The name used on the command line and as the folder name: `mnist`, `fashion-mnist`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }

    /// The official source: PyTorch's MNIST mirror (LeCun's page no longer serves the files
    /// reliably) and Zalando's Fashion-MNIST bucket, which serves plain HTTP only; the pinned
    /// digests make that safe.
    pub fn base_url(self) -> &'static str {
        match self {
            DatasetName::Mnist => "https://ossci-datasets.s3.amazonaws.com/mnist/",
            DatasetName::FashionMnist => "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        }
    }

    /// The four gzip files as published, with their sizes and SHA-256 digests.
    ///
    /// Provenance: torchvision pins MD5s only. The sizes and SHA-256 values below are TensorFlow
    /// Datasets' (`tensorflow_datasets/url_checksums/mnist.txt` and `fashion_mnist.txt`); its
    /// MNIST entries are for Google's mirror of LeCun's files, byte-identical to PyTorch's mirror
    /// (same sizes, and torchvision's MD5s are LeCun's). Many projects that verify these downloads
    /// pin the same values. They cannot be recomputed from Debian's `dataset-fashion-mnist`:
    /// Debian recompressed the files (different gzip headers and MD5s); discovery accepts its
    /// copies without digests, since only the IDX data inside is read.
    pub fn files(self) -> [RemoteFile; 4] {
        let [train_images, train_labels, test_images, test_labels] = FILE_STEMS;
        match self {
            DatasetName::Mnist => [
                RemoteFile::gz(
                    train_images,
                    9_912_422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                ),
                RemoteFile::gz(
                    train_labels,
                    28_881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                ),
                RemoteFile::gz(
                    test_images,
                    1_648_877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                ),
                RemoteFile::gz(
                    test_labels,
                    4_542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
            ],
            DatasetName::FashionMnist => [
                RemoteFile::gz(
                    train_images,
                    26_421_880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                ),
                RemoteFile::gz(
                    train_labels,
                    29_515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                ),
                RemoteFile::gz(
                    test_images,
                    4_422_102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                ),
                RemoteFile::gz(
                    test_labels,
                    5_148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
            ],
        }
    }

    /// The class names, index = label.
    pub fn classes(self) -> [&'static str; 10] {
        match self {
            DatasetName::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetName::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        DatasetName::ALL.into_iter().find(|d| d.as_str() == name).ok_or_else(|| Error::UnknownDataset {
            name: name.to_string(),
            known: DatasetName::ALL.map(DatasetName::as_str).join(", "),
        })
    }
}

/// One split of a data set, ready to train on.
#[derive(Debug, Clone)]
pub struct Split {
    pub dataset: DatasetName,
    pub train: bool,
    /// `[N, 1, R, C]` in [0, 1] (R = C = 28 for both data sets).
    pub images: Tensor,
    /// `N` class indices below 10.
    pub labels: Vec<usize>,
}

/// The path of one of a data set's files in `dir`: `STEM.gz` if present, else `STEM`, else `None`.
pub fn file_in(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|name| dir.join(name)).find(|p| p.is_file())
}

/// Loads the training (`train = true`, 60 000 images) or test split (10 000) of `dataset` from
/// `dir`, a folder holding its IDX files raw or gzip.
pub fn load_split(dir: impl AsRef<Path>, dataset: DatasetName, train: bool) -> Result<Split> {
    let dir = dir.as_ref();
    let [train_images, train_labels, test_images, test_labels] = FILE_STEMS;
    let (images_stem, labels_stem) =
        if train { (train_images, train_labels) } else { (test_images, test_labels) };
    // A missing file is reported by the name a user would look for, the compressed one.
    let locate = |stem: &str| file_in(dir, stem).unwrap_or_else(|| dir.join(format!("{stem}.gz")));
    let (images, labels) = idx::read_pair(locate(images_stem), locate(labels_stem))?;
    Ok(Split { dataset, train, images: images.to_tensor()?, labels: labels.to_indices() })
}
