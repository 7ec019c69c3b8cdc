//! The training data pipeline: an in-memory [`Dataset`], a seeded train/validation split, and a
//! [`Loader`] that yields transformed, optionally shuffled mini-batches, prepared ahead of time in
//! a background thread.
//!
//! ```text
//! dataset images [N, C, H, W]  f32     labels [N] class indices
//! batch   images [B, C', H', W']       (C', H', W' after the transforms)
//! ```
//!
//! Reproducibility is by construction, not by running in the same order: every random stream is
//! a `ChaCha8Rng` keyed by the tuple it depends on: the epoch's order from
//! (seed, epoch), an example's random transforms from (seed, epoch, example index). Epoch k of a
//! resumed run therefore equals epoch k of an uninterrupted one, and a transformed example does not
//! depend on the batch size, on the shuffling, or on whether batches were prefetched. Modelled on
//! PyTorch's `DataLoader` (`batch_size`, `shuffle`, `drop_last`, `prefetch_factor`).
//!
//! ```
//! use stride_data::datasets::DatasetName;
//! use stride_data::loader::{Dataset, Loader, ValidationSize, train_validation_split};
//! use stride_data::transforms::{Normalize, Pipeline, RandomCrop};
//! use stride_tensor::Tensor;
//!
//! // Stands in for `Dataset::from_split(load_split(dir, DatasetName::FashionMnist, true)?)`.
//! let dataset = Dataset::new(Tensor::zeros([10, 1, 28, 28])?, vec![3; 10])?;
//! let (train, _validation) = train_validation_split(10, ValidationSize::Fraction(0.2), 42)?;
//! let augment = Pipeline::new()
//!     .then(RandomCrop::square(28, 2))
//!     .then(Normalize::for_dataset(DatasetName::FashionMnist));
//! let loader = Loader::new(dataset, train, 4, true, false, augment, 42)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims()[1..], [1, 28, 28]);
//! }
//! # Ok::<(), stride_data::Error>(())
//! ```

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use stride_tensor::Tensor;

use crate::datasets::Split;
use crate::error::{Error, Result};
use crate::transforms::{Pipeline, Transform};

/// Which random stream a seed feeds, so that the shuffle, the split and the transforms never share
/// one even when their other coordinates coincide.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
enum Stream {
    Split = 1,
    Shuffle = 2,
    Transform = 3,
}

/// The generator for one stream at one coordinate: the 32-byte ChaCha key is the four numbers
/// little-endian, so distinct tuples give independent streams and the mapping never changes.
fn rng_for(stream: Stream, seed: u64, epoch: u64, example: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, value) in key.chunks_exact_mut(8).zip([seed, epoch, example, stream as u64]) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Images and labels held in memory, paired one to one.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Tensor,
    labels: Vec<usize>,
}

impl Dataset {
    /// `images [N, C, H, W]` and `N` labels; errors on another rank or a count mismatch.
    pub fn new(images: Tensor, labels: Vec<usize>) -> Result<Self> {
        if images.rank() != 4 {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "expected images laid out as [N, C, H, W], got shape {} (rank {})",
                    images.shape(),
                    images.rank()
                ),
            ));
        }
        if images.dims()[0] != labels.len() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} images (shape {}) but {} labels; they must pair one to one",
                    images.dims()[0],
                    images.shape(),
                    labels.len()
                ),
            ));
        }
        Ok(Dataset { images, labels })
    }

    /// The examples of a loaded MNIST / Fashion-MNIST split.
    pub fn from_split(split: Split) -> Result<Self> {
        Dataset::new(split.images, split.labels)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[C, H, W]` of every image.
    pub fn image_dims(&self) -> [usize; 3] {
        let d = self.images.dims();
        [d[1], d[2], d[3]]
    }

    pub fn images(&self) -> &Tensor {
        &self.images
    }

    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The pixels (`[C, H, W]`, row-major) and label of example `index`, if it exists.
    pub fn example(&self, index: usize) -> Option<(&[f32], usize)> {
        let [c, h, w] = self.image_dims();
        let size = c * h * w;
        let label = *self.labels.get(index)?;
        Some((&self.images.data()[index * size..(index + 1) * size], label))
    }
}

/// How many examples a [`train_validation_split`] holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValidationSize {
    /// A fraction in [0, 1) of the examples, rounded to the nearest count.
    Fraction(f64),
    /// An exact number of examples.
    Count(usize),
}

/// Splits `0..n` into disjoint `(training, validation)` index lists, each in ascending order,
/// with the held-out examples chosen by a shuffle seeded by `seed`.
///
/// Errors on a fraction outside [0, 1) and on a validation set that would leave no training data.
pub fn train_validation_split(
    n: usize,
    validation: ValidationSize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    const WHAT: &str = "train/validation split";
    let count = match validation {
        ValidationSize::Fraction(f) => {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::invalid(WHAT, format!("validation fraction {f} is outside [0, 1)")));
            }
            // f < 1 keeps the product below n, so the cast cannot overflow.
            (n as f64 * f).round() as usize
        }
        ValidationSize::Count(count) => count,
    };
    if count >= n {
        return Err(Error::invalid(
            WHAT,
            format!("a validation set of {count} out of {n} examples leaves no training data"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(Stream::Split, seed, 0, 0));
    let (validation, training) = order.split_at_mut(count);
    validation.sort_unstable();
    training.sort_unstable();
    Ok((training.to_vec(), validation.to_vec()))
}

/// One mini-batch: `images [B, C, H, W]`, their labels, and the data set indices they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub indices: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What the loader and its background threads share.
#[derive(Debug)]
struct Shared {
    dataset: Arc<Dataset>,
    indices: Vec<usize>,
    transforms: Pipeline,
    /// The `[C, H, W]` of a transformed image, checked once in [`Loader::new`].
    output_dims: [usize; 3],
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
}

/// Mini-batches over an index list of a [`Dataset`], one [`Epoch`] at a time.
#[derive(Debug)]
pub struct Loader {
    shared: Arc<Shared>,
    prefetch: usize,
}

/// How many batches a background thread prepares ahead by default: enough to hide the jitter of
/// one slow batch, few enough that memory stays small (PyTorch's `prefetch_factor` is 2 too).
pub const DEFAULT_PREFETCH: usize = 2;

impl Loader {
    /// A loader over `indices` of `dataset` (which a training and a validation loader can share
    /// through an `Arc`). `transforms` is checked against the data set's image shape here, so a
    /// crop that does not fit fails now rather than in the first batch. Random transforms are keyed
    /// by data set index, so an index listed twice gets the same augmentation twice in an epoch.
    ///
    /// Errors on a batch size of 0, an index outside the data set, and a pipeline that does not
    /// fit the images.
    pub fn new(
        dataset: impl Into<Arc<Dataset>>,
        indices: Vec<usize>,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
        transforms: Pipeline,
        seed: u64,
    ) -> Result<Self> {
        let dataset = dataset.into();
        if batch_size == 0 {
            return Err(Error::invalid("loader", "batch size is 0; it must be at least 1"));
        }
        if let Some((position, &index)) =
            indices.iter().enumerate().find(|&(_, &index)| index >= dataset.len())
        {
            return Err(Error::invalid(
                "loader",
                format!(
                    "index {index} (at position {position} of the index list) is out of range for \
                     a data set of {} examples",
                    dataset.len()
                ),
            ));
        }
        let output_dims = transforms.output_dims(dataset.image_dims())?;
        let shared =
            Shared { dataset, indices, transforms, output_dims, batch_size, shuffle, drop_last, seed };
        Ok(Loader { shared: Arc::new(shared), prefetch: DEFAULT_PREFETCH })
    }

    /// How many batches the background thread prepares ahead; 0 builds each batch on the calling
    /// thread when it is asked for, with no thread at all. The batches are the same either way.
    #[must_use]
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// The number of examples an epoch goes through (before `drop_last`).
    pub fn example_count(&self) -> usize {
        self.shared.indices.len()
    }

    /// The number of batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let s = &self.shared;
        if s.drop_last { s.indices.len() / s.batch_size } else { s.indices.len().div_ceil(s.batch_size) }
    }

    /// The `[C, H, W]` of a batch's images, after the transforms.
    pub fn image_dims(&self) -> [usize; 3] {
        self.shared.output_dims
    }

    /// The batches of epoch `epoch`: its order and random transforms depend only on the seed and
    /// `epoch`, so any epoch can be replayed on its own. With prefetching, a background thread
    /// starts building batches now; dropping the iterator stops it.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first_batch` on (0-based), the same as those
    /// [`Loader::epoch`] yields after skipping `first_batch`, without building the skipped ones:
    /// how a run interrupted within an epoch resumes.
    pub fn epoch_from(&self, epoch: u64, first_batch: usize) -> Epoch {
        let producer = self.producer(epoch, first_batch);
        let remaining = producer.batch_count().saturating_sub(first_batch);
        if self.prefetch == 0 {
            return Epoch { source: Source::Inline(producer), remaining };
        }
        let (sender, receiver) = sync_channel(self.prefetch);
        let spawned = std::thread::Builder::new()
            .name(format!("stride-loader-epoch-{epoch}"))
            .spawn(move || producer.run(sender));
        let source = match spawned {
            Ok(worker) => Source::Background { receiver: Some(receiver), worker: Some(worker) },
            // No thread to be had (resource limits): the same batches, built inline.
            Err(_) => Source::Inline(self.producer(epoch, first_batch)),
        };
        Epoch { source, remaining }
    }

    /// The batch builder of `epoch`, positioned at batch `first_batch`.
    fn producer(&self, epoch: u64, first_batch: usize) -> Producer {
        let mut order = self.shared.indices.clone();
        if self.shared.shuffle {
            order.shuffle(&mut rng_for(Stream::Shuffle, self.shared.seed, epoch, 0));
        }
        let next = first_batch.saturating_mul(self.shared.batch_size).min(order.len());
        Producer { shared: Arc::clone(&self.shared), order, epoch, next }
    }
}

/// Builds the batches of one epoch, in order, on whichever thread owns it.
struct Producer {
    shared: Arc<Shared>,
    order: Vec<usize>,
    epoch: u64,
    /// Position in `order` of the next batch's first example.
    next: usize,
}

impl Producer {
    fn batch_count(&self) -> usize {
        let (len, size) = (self.order.len(), self.shared.batch_size);
        if self.shared.drop_last { len / size } else { len.div_ceil(size) }
    }

    fn next_batch(&mut self) -> Option<Result<Batch>> {
        let s = &self.shared;
        let end = self.order.len().min(self.next + s.batch_size);
        let len = end.checked_sub(self.next).filter(|&len| len > 0)?;
        if s.drop_last && len < s.batch_size {
            return None;
        }
        let indices = self.order[self.next..end].to_vec();
        self.next = end;
        Some(self.build(indices))
    }

    fn build(&self, indices: Vec<usize>) -> Result<Batch> {
        let s = &self.shared;
        let [c, h, w] = s.output_dims;
        let mut data = Vec::with_capacity(indices.len() * c * h * w);
        let mut labels = Vec::with_capacity(indices.len());
        for &index in &indices {
            // `Loader::new` checked every index against the data set.
            let Some((pixels, label)) = s.dataset.example(index) else {
                return Err(Error::invalid("loader", format!("index {index} is out of range")));
            };
            labels.push(label);
            if s.transforms.is_empty() {
                data.extend_from_slice(pixels);
                continue;
            }
            let image = Tensor::new(s.dataset.image_dims().to_vec(), pixels.to_vec())?;
            let mut rng = rng_for(Stream::Transform, s.seed, self.epoch, index as u64);
            data.extend_from_slice(s.transforms.apply(image, &mut rng)?.data());
        }
        let images = Tensor::new(vec![indices.len(), c, h, w], data)?;
        Ok(Batch { images, labels, indices })
    }

    /// The background thread's loop: stops after an error, at the end, or as soon as the
    /// receiving [`Epoch`] is gone (its `send` fails).
    fn run(mut self, sender: SyncSender<Result<Batch>>) {
        while let Some(batch) = self.next_batch() {
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                return;
            }
        }
    }
}

enum Source {
    Inline(Producer),
    /// Both are options only so that `Drop` can drop the receiver before joining the worker.
    Background {
        receiver: Option<Receiver<Result<Batch>>>,
        worker: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch, from [`Loader::epoch`]. An item is an error only if a transform
/// fails on an image, which the checks in [`Loader::new`] rule out for this crate's transforms;
/// the iterator ends after it.
pub struct Epoch {
    source: Source,
    remaining: usize,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.remaining == 0 {
            return None;
        }
        let item = match &mut self.source {
            Source::Inline(producer) => producer.next_batch(),
            Source::Background { receiver, worker } => {
                match receiver.as_ref().map(Receiver::recv) {
                    Some(Ok(item)) => Some(item),
                    // The worker hung up early: it can only have panicked, a bug worth surfacing
                    // on the caller's thread rather than as a silently short epoch.
                    _ => {
                        if let Some(Err(panic)) = worker.take().map(JoinHandle::join) {
                            std::panic::resume_unwind(panic);
                        }
                        None
                    }
                }
            }
        };
        self.remaining = match &item {
            Some(Ok(_)) => self.remaining - 1,
            _ => 0,
        };
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // A failing transform ends the epoch after one error item, hence the lower bound.
        (self.remaining.min(1), Some(self.remaining))
    }
}

impl Drop for Epoch {
    /// Dropping the receiver makes the worker's next (or current, blocked) `send` fail, so the
    /// join waits for at most the one batch it is building.
    fn drop(&mut self) {
        if let Source::Background { receiver, worker } = &mut self.source {
            drop(receiver.take());
            if let Some(worker) = worker.take() {
                // A worker panic was either already re-raised by `next` or concerns batches nobody
                // will read; re-raising it in a destructor could abort the process.
                let _ = worker.join();
            }
        }
    }
}
