//! A small, learnable data set in MNIST's format, made on the spot from a seed: class `k` is a
//! bright horizontal bar across rows `3 + 2k` and `4 + 2k` of a noisy 28×28 image, at a random
//! horizontal position and length. Tests and examples train on it where the real data sets are
//! not installed, through exactly the code path that reads MNIST.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::datasets::FILE_STEMS;
use crate::error::{Error, Result};
use crate::idx::{IdxImages, IdxLabels};

const SIDE: usize = 28;

fn split(count: usize, rng: &mut ChaCha8Rng) -> (IdxImages, IdxLabels) {
    let mut pixels = vec![0u8; count * SIDE * SIDE];
    let mut labels = Vec::with_capacity(count);
    for (n, image) in pixels.chunks_exact_mut(SIDE * SIDE).enumerate() {
        let class = n % 10;
        labels.push(class as u8);
        for p in image.iter_mut() {
            *p = rng.random_range(0..60);
        }
        let start = rng.random_range(0..10);
        let end = rng.random_range(18..SIDE);
        for row in [3 + 2 * class, 4 + 2 * class] {
            for p in &mut image[row * SIDE + start..row * SIDE + end] {
                *p = rng.random_range(180..=255);
            }
        }
    }
    (IdxImages { count, rows: SIDE, cols: SIDE, pixels }, IdxLabels { labels })
}

/// Writes the four IDX files (uncompressed, under MNIST's file names) of a stripes data set with
/// `train` training and `test` test images into `dir`, which is created if needed.
pub fn write_stripes(dir: &Path, train: usize, test: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (train_images, train_labels) = split(train, &mut rng);
    let (test_images, test_labels) = split(test, &mut rng);
    let files = [train_images.encode(), train_labels.encode(), test_images.encode(), test_labels.encode()];
    for (stem, bytes) in FILE_STEMS.iter().zip(files) {
        let path = dir.join(stem);
        std::fs::write(&path, bytes).map_err(|e| Error::write(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{DatasetName, load_split};

    #[test]
    fn stripes_load_as_mnist_with_balanced_classes() {
        let dir = std::env::temp_dir().join(format!("stride-stripes-{}", std::process::id()));
        write_stripes(&dir, 50, 20, 1).unwrap();
        let train = load_split(&dir, DatasetName::Mnist, true).unwrap();
        assert_eq!(train.images.dims(), &[50, 1, 28, 28]);
        assert_eq!(train.labels.iter().filter(|&&l| l == 7).count(), 5);
        assert_eq!(load_split(&dir, DatasetName::Mnist, false).unwrap().labels.len(), 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
