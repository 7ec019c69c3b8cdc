//! Per-image transforms for training: normalisation, random crop, random horizontal flip, and a
//! [`Pipeline`] that applies them in order.
//!
//! ```text
//! image [C, H, W]  f32, one example at a time (the loader slices it out of [N, C, H, W])
//! ```
//!
//! Semantics follow torchvision's `transforms` of the same names (`Normalize`, `RandomCrop` with
//! zero padding, `RandomHorizontalFlip`), so a recipe written for PyTorch carries over. Random
//! transforms draw from the `ChaCha8Rng` they are handed; the [`crate::loader`] seeds one per
//! example, so what an example becomes depends only on (seed, epoch, example index).

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stride_tensor::Tensor;

use crate::datasets::DatasetName;
use crate::error::{Error, Result};

/// MNIST's per-channel mean of the training pixels scaled to [0, 1], the value PyTorch's
/// `examples/mnist/main.py` uses (computed over the 60,000 training images).
pub const MNIST_MEAN: [f32; 1] = [0.1307];
/// MNIST's per-channel standard deviation, from the same source as [`MNIST_MEAN`].
pub const MNIST_STD: [f32; 1] = [0.3081];
/// Fashion-MNIST's per-channel mean of the training pixels scaled to [0, 1]: 0.286041 over all
/// 47,040,000 pixels of the 60,000 training images (recomputed from the IDX file for this
/// constant), rounded to four places as the MNIST values are.
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
/// Fashion-MNIST's per-channel standard deviation over the same pixels: 0.353024 (population and
/// sample formulas agree to eight places at this count), rounded to four places.
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];

/// One step of a per-image pipeline.
///
/// `output_dims` answers the output shape without touching pixels, so a loader rejects a
/// pipeline that does not fit its images before the first batch is built.
pub trait Transform: fmt::Debug + Send + Sync {
    /// The `[C, H, W]` this transform produces from an input of `input`, or why it cannot.
    fn output_dims(&self, input: [usize; 3]) -> Result<[usize; 3]>;

    /// Transforms one `[C, H, W]` image; random choices are drawn from `rng`.
    fn apply(&self, image: Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor>;
}

/// The `[C, H, W]` of an image tensor, or an error naming the transform and the shape.
fn image_dims(what: &'static str, image: &Tensor) -> Result<[usize; 3]> {
    match *image.dims() {
        [c, h, w] => Ok([c, h, w]),
        _ => Err(Error::invalid(
            what,
            format!("expected an image laid out as [C, H, W], got shape {}", image.shape()),
        )),
    }
}

/// `x ↦ (x − mean[c]) / std[c]` per channel, as torchvision's `Normalize`. A single mean and std
/// apply to every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// Checked construction: equal lengths, at least one channel, finite values, no zero std.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let normalize = Normalize { mean, std };
        normalize.check()?;
        Ok(normalize)
    }

    /// The training-set statistics of a known data set ([`MNIST_MEAN`] and friends).
    pub fn for_dataset(dataset: DatasetName) -> Self {
        let (mean, std) = match dataset {
            DatasetName::Mnist => (MNIST_MEAN, MNIST_STD),
            DatasetName::FashionMnist => (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
        };
        Normalize { mean: mean.to_vec(), std: std.to_vec() }
    }

    /// The fields are public, so `apply` checks again what `new` checked.
    fn check(&self) -> Result<()> {
        const WHAT: &str = "normalize";
        if self.mean.len() != self.std.len() {
            return Err(Error::invalid(
                WHAT,
                format!(
                    "{} means but {} standard deviations; give one of each per channel",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if self.mean.is_empty() {
            return Err(Error::invalid(WHAT, "no mean and standard deviation given"));
        }
        for (channel, (&mean, &std)) in self.mean.iter().zip(&self.std).enumerate() {
            if !mean.is_finite() || !std.is_finite() {
                return Err(Error::invalid(
                    WHAT,
                    format!("channel {channel} has mean {mean} and std {std}; both must be finite"),
                ));
            }
            if std == 0.0 {
                return Err(Error::invalid(
                    WHAT,
                    format!("std of channel {channel} is 0; dividing by it would give infinities"),
                ));
            }
        }
        Ok(())
    }
}

impl Transform for Normalize {
    fn output_dims(&self, input: [usize; 3]) -> Result<[usize; 3]> {
        self.check()?;
        let channels = input[0];
        if self.mean.len() != 1 && self.mean.len() != channels {
            return Err(Error::invalid(
                "normalize",
                format!(
                    "{} means and standard deviations for an image of {channels} channels; give one \
                     per channel or a single one for all",
                    self.mean.len()
                ),
            ));
        }
        Ok(input)
    }

    fn apply(&self, mut image: Tensor, _rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let [c, h, w] = self.output_dims(image_dims("normalize", &image)?)?;
        let plane = h * w;
        for channel in 0..c {
            let k = if self.mean.len() == 1 { 0 } else { channel };
            // Multiplying by the reciprocal would differ from PyTorch in the last bit; divide.
            let (mean, std) = (self.mean[k], self.std[k]);
            for v in &mut image.data_mut()[channel * plane..(channel + 1) * plane] {
                *v = (*v - mean) / std;
            }
        }
        Ok(image)
    }
}

/// Zero-pads `padding` pixels on every side, then crops `size = [height, width]` at an offset
/// drawn uniformly, as torchvision's `RandomCrop(size, padding)` with `fill=0`: the row offset is
/// drawn first, then the column offset, each in `0..=padded − size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomCrop {
    pub size: [usize; 2],
    pub padding: usize,
}

impl RandomCrop {
    /// A square crop, the common case (`RandomCrop::square(28, 2)` for MNIST, 32 and 4 for CIFAR).
    pub fn square(size: usize, padding: usize) -> Self {
        RandomCrop { size: [size, size], padding }
    }
}

impl Transform for RandomCrop {
    fn output_dims(&self, [c, h, w]: [usize; 3]) -> Result<[usize; 3]> {
        let [th, tw] = self.size;
        let p = self.padding;
        let padded = |n: usize| n.checked_add(p.checked_mul(2)?);
        let (Some(ph), Some(pw)) = (padded(h), padded(w)) else {
            return Err(Error::invalid("random crop", format!("padding {p} overflows")));
        };
        if th == 0 || tw == 0 {
            return Err(Error::invalid("random crop", format!("crop size {th}×{tw} is empty")));
        }
        if th > ph || tw > pw {
            return Err(Error::invalid(
                "random crop",
                format!(
                    "crop {th}×{tw} does not fit the padded image {ph}×{pw} \
                     ({h} + 2·{p} by {w} + 2·{p})"
                ),
            ));
        }
        Ok([c, th, tw])
    }

    fn apply(&self, image: Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let [c, h, w] = image_dims("random crop", &image)?;
        let [_, th, tw] = self.output_dims([c, h, w])?;
        let p = self.padding;
        // Offsets into the padded image; output (y, x) reads source (y + top − p, x + left − p).
        let top = rng.random_range(0..=h + 2 * p - th);
        let left = rng.random_range(0..=w + 2 * p - tw);
        let src = image.data();
        let mut out = vec![0.0f32; c * th * tw];
        for channel in 0..c {
            for y in 0..th {
                let Some(sy) = (y + top).checked_sub(p).filter(|&sy| sy < h) else {
                    continue; // a padding row: stays zero
                };
                // The columns of this output row that land inside the source image.
                let x_start = p.saturating_sub(left);
                let x_end = (w + p).saturating_sub(left).min(tw);
                if x_start >= x_end {
                    continue;
                }
                let sx = x_start + left - p;
                let src_row = &src[(channel * h + sy) * w..][..w];
                let dst_row = &mut out[(channel * th + y) * tw..][..tw];
                dst_row[x_start..x_end].copy_from_slice(&src_row[sx..sx + (x_end - x_start)]);
            }
        }
        Ok(Tensor::new(vec![c, th, tw], out)?)
    }
}

/// Mirrors the image left to right (reverses every row) with probability `p`, as torchvision's
/// `RandomHorizontalFlip(p)`: one uniform draw in [0, 1), flipped when it is below `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomHorizontalFlip {
    pub p: f64,
}

impl RandomHorizontalFlip {
    fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Error::invalid(
                "random horizontal flip",
                format!("probability {} is outside [0, 1]", self.p),
            ));
        }
        Ok(())
    }
}

impl Default for RandomHorizontalFlip {
    /// torchvision's default, p = 0.5.
    fn default() -> Self {
        RandomHorizontalFlip { p: 0.5 }
    }
}

impl Transform for RandomHorizontalFlip {
    fn output_dims(&self, input: [usize; 3]) -> Result<[usize; 3]> {
        self.check()?;
        Ok(input)
    }

    fn apply(&self, mut image: Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let [_, _, w] = self.output_dims(image_dims("random horizontal flip", &image)?)?;
        // Always draw, even for p = 0 or 1, so the transforms after this one see the same stream
        // whatever p is.
        let flip = rng.random::<f64>() < self.p;
        if flip && w > 0 {
            for row in image.data_mut().chunks_exact_mut(w) {
                row.reverse();
            }
        }
        Ok(image)
    }
}

/// Transforms applied in order; it is itself a [`Transform`], and an empty pipeline is the
/// identity.
#[derive(Debug, Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Transform>>,
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Appends a step: `Pipeline::new().then(RandomCrop::square(28, 2)).then(normalize)`.
    #[must_use]
    pub fn then(mut self, step: impl Transform + 'static) -> Self {
        self.steps.push(Box::new(step));
        self
    }

    pub fn push(&mut self, step: impl Transform + 'static) {
        self.steps.push(Box::new(step));
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Transform for Pipeline {
    fn output_dims(&self, input: [usize; 3]) -> Result<[usize; 3]> {
        self.steps.iter().try_fold(input, |dims, step| step.output_dims(dims))
    }

    fn apply(&self, image: Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        self.steps.iter().try_fold(image, |image, step| step.apply(image, rng))
    }
}
