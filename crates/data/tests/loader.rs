//! The training pipeline on small synthetic data sets built here: coverage of every epoch,
//! `drop_last`, seeded determinism (across epochs, resumes, batch sizes and prefetching), the
//! transforms' numbers, prompt shutdown of the prefetch thread, and each error branch's wording.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stride_data::Error;
use stride_data::datasets::DatasetName;
use stride_data::loader::{Batch, Dataset, Loader, ValidationSize, train_validation_split};
use stride_data::transforms::{
    FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD, Normalize, Pipeline, RandomCrop,
    RandomHorizontalFlip, Transform,
};
use stride_tensor::Tensor;

/// Example `n`'s pixel `(c, y, x)` is `1000·n + 100·c + 10·y + x + 1`: positive (so padding zeros
/// stand out), unique, and telling which example and position it came from. Label `n % 10`.
fn synthetic(n: usize, c: usize, h: usize, w: usize) -> Dataset {
    let images =
        Tensor::from_fn([n, c, h, w], |i| (1000 * i[0] + 100 * i[1] + 10 * i[2] + i[3] + 1) as f32).unwrap();
    Dataset::new(images, (0..n).map(|i| i % 10).collect()).unwrap()
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect::<Result<Vec<_>, _>>().unwrap()
}

fn order(batches: &[Batch]) -> Vec<usize> {
    batches.iter().flat_map(|b| b.indices.iter().copied()).collect()
}

/// Each example's transformed pixels, by data set index.
fn by_example(batches: &[Batch]) -> BTreeMap<usize, Vec<f32>> {
    let mut map = BTreeMap::new();
    for batch in batches {
        let size = batch.images.numel() / batch.len();
        for (k, &index) in batch.indices.iter().enumerate() {
            map.insert(index, batch.images.data()[k * size..(k + 1) * size].to_vec());
        }
    }
    map
}

fn augment() -> Pipeline {
    Pipeline::new().then(RandomCrop::square(4, 2)).then(RandomHorizontalFlip::default())
}

fn loader(n: usize, batch: usize, shuffle: bool, drop_last: bool, transforms: Pipeline) -> Loader {
    Loader::new(synthetic(n, 2, 4, 4), (0..n).collect(), batch, shuffle, drop_last, transforms, 7).unwrap()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn every_example_appears_once_per_epoch() {
    for shuffle in [false, true] {
        for prefetch in [0, 3] {
            let loader = loader(23, 5, shuffle, false, Pipeline::new()).prefetch(prefetch);
            for epoch in 0..3 {
                let batches = collect(&loader, epoch);
                assert_eq!(batches.len(), 5);
                assert_eq!(batches.len(), loader.batches_per_epoch());
                let mut seen = order(&batches);
                if !shuffle {
                    assert_eq!(seen, (0..23).collect::<Vec<_>>());
                }
                seen.sort_unstable();
                assert_eq!(seen, (0..23).collect::<Vec<_>>(), "shuffle {shuffle}");
                for batch in &batches {
                    assert_eq!(batch.images.dims()[1..], [2, 4, 4]);
                    assert_eq!(batch.images.dims()[0], batch.len());
                    let dataset = synthetic(23, 2, 4, 4);
                    for (k, &index) in batch.indices.iter().enumerate() {
                        let (pixels, label) = dataset.example(index).unwrap();
                        assert_eq!(batch.labels[k], label);
                        assert_eq!(&batch.images.data()[k * 32..(k + 1) * 32], pixels);
                    }
                }
            }
        }
    }
}

#[test]
fn a_subset_of_indices_is_all_the_loader_sees() {
    let indices = vec![9, 3, 4, 17];
    let loader =
        Loader::new(synthetic(20, 1, 2, 2), indices.clone(), 3, true, false, Pipeline::new(), 1).unwrap();
    let mut seen = order(&collect(&loader, 0));
    seen.sort_unstable();
    assert_eq!(seen, vec![3, 4, 9, 17]);
}

#[test]
fn drop_last_drops_only_the_partial_batch() {
    let sizes = |drop_last| {
        collect(&loader(10, 3, true, drop_last, Pipeline::new()), 0)
            .iter()
            .map(Batch::len)
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(false), vec![3, 3, 3, 1]);
    assert_eq!(sizes(true), vec![3, 3, 3]);
    // A batch size that divides the data set loses nothing either way.
    assert_eq!(collect(&loader(9, 3, false, true, Pipeline::new()), 0).len(), 3);
    // Fewer examples than one batch: nothing survives drop_last.
    assert!(collect(&loader(2, 3, false, true, Pipeline::new()), 0).is_empty());
    assert_eq!(loader(2, 3, false, true, Pipeline::new()).batches_per_epoch(), 0);
}

#[test]
fn an_empty_index_list_yields_no_batches() {
    for prefetch in [0, 2] {
        let loader = Loader::new(synthetic(4, 1, 2, 2), vec![], 2, true, false, Pipeline::new(), 0)
            .unwrap()
            .prefetch(prefetch);
        assert_eq!(loader.epoch(0).count(), 0);
        assert_eq!(loader.batches_per_epoch(), 0);
    }
}

#[test]
fn same_seed_and_epoch_give_identical_batches() {
    let a = loader(30, 4, true, false, augment());
    let b = loader(30, 4, true, false, augment());
    assert_eq!(collect(&a, 3), collect(&b, 3));
    // A resumed run (a fresh loader asked for epoch 3 directly) matches the uninterrupted one,
    // which went through epochs 0, 1 and 2 first.
    let uninterrupted: Vec<_> = (0..4).map(|epoch| collect(&a, epoch)).collect();
    assert_eq!(uninterrupted[3], collect(&b, 3));
}

/// Resuming within an epoch: the batches from batch k on are those of the whole epoch after k,
/// with or without prefetching, and a start past the end yields nothing.
#[test]
fn an_epoch_resumes_from_any_batch() {
    for prefetch in [0, 2] {
        let loader = loader(30, 4, true, false, augment()).prefetch(prefetch);
        let whole = collect(&loader, 2);
        for first in [0, 1, 5, 7, 8, 20] {
            let rest: Vec<Batch> = loader.epoch_from(2, first).collect::<Result<_, _>>().unwrap();
            assert_eq!(rest, whole[first.min(whole.len())..], "from batch {first}");
        }
    }
}

#[test]
fn different_epochs_and_seeds_give_different_orders() {
    let a = loader(30, 4, true, false, Pipeline::new());
    assert_ne!(order(&collect(&a, 0)), order(&collect(&a, 1)));
    let other_seed =
        Loader::new(synthetic(30, 2, 4, 4), (0..30).collect(), 4, true, false, Pipeline::new(), 8).unwrap();
    assert_ne!(order(&collect(&a, 0)), order(&collect(&other_seed, 0)));
    // Without shuffling the order is the index list's, whatever the epoch.
    let plain = loader(30, 4, false, false, Pipeline::new());
    assert_eq!(order(&collect(&plain, 0)), order(&collect(&plain, 5)));
}

#[test]
fn per_example_transforms_do_not_depend_on_batching_or_prefetch() {
    let reference = by_example(&collect(&loader(17, 4, true, false, augment()).prefetch(0), 2));
    for (batch_size, shuffle, prefetch) in [(1, true, 0), (4, true, 2), (7, false, 3), (17, true, 1)] {
        let loader = loader(17, batch_size, shuffle, false, augment()).prefetch(prefetch);
        assert_eq!(
            by_example(&collect(&loader, 2)),
            reference,
            "batch size {batch_size}, shuffle {shuffle}, prefetch {prefetch}"
        );
    }
    // Another epoch draws other crops and flips for the same examples.
    assert_ne!(by_example(&collect(&loader(17, 4, true, false, augment()), 3)), reference);
}

#[test]
fn normalize_subtracts_the_mean_and_divides_by_the_std_per_channel() {
    let image = Tensor::new([2, 1, 2], vec![1.0, 3.0, 10.0, 20.0]).unwrap();
    let normalize = Normalize::new(vec![1.0, 10.0], vec![2.0, 5.0]).unwrap();
    let out = normalize.apply(image.clone(), &mut rng(0)).unwrap();
    assert_eq!(out.data(), [0.0, 1.0, 0.0, 2.0]);
    // One mean and std serve every channel.
    let single = Normalize::new(vec![1.0], vec![0.5]).unwrap();
    assert_eq!(single.apply(image, &mut rng(0)).unwrap().data(), [0.0, 4.0, 18.0, 38.0]);
    // The data sets' constants, and what they do to a black and a white pixel.
    let mnist = Normalize::for_dataset(DatasetName::Mnist);
    assert_eq!((mnist.mean.as_slice(), mnist.std.as_slice()), (&MNIST_MEAN[..], &MNIST_STD[..]));
    assert_eq!((MNIST_MEAN, MNIST_STD), ([0.1307], [0.3081]));
    assert_eq!((FASHION_MNIST_MEAN, FASHION_MNIST_STD), ([0.2860], [0.3530]));
    let fashion = Normalize::for_dataset(DatasetName::FashionMnist);
    let pixels = Tensor::new([1, 1, 2], vec![0.0, 1.0]).unwrap();
    let out = fashion.apply(pixels, &mut rng(0)).unwrap();
    assert!((out.data()[0] - (-0.2860 / 0.3530)).abs() < 1e-6, "{out:?}");
    assert!((out.data()[1] - (0.7140 / 0.3530)).abs() < 1e-6, "{out:?}");
}

#[test]
fn random_crop_is_a_shifted_copy_with_zeros_entering() {
    let (c, h, w, p) = (2, 5, 6, 2);
    let image = Tensor::from_fn([c, h, w], |i| (100 * i[0] + 10 * i[1] + i[2] + 1) as f32).unwrap();
    let crop = RandomCrop::square(4, p);
    assert_eq!(crop.output_dims([c, h, w]).unwrap(), [c, 4, 4]);
    let mut offsets = std::collections::BTreeSet::new();
    let mut generator = rng(3);
    for _ in 0..400 {
        let out = crop.apply(image.clone(), &mut generator).unwrap();
        assert_eq!(out.dims(), [c, 4, 4]);
        // The offset is where output (0, 0) sits in the padded image; find the one that explains
        // every pixel, then check it against all of them.
        let offset = (0..=h + 2 * p - 4)
            .flat_map(|top| (0..=w + 2 * p - 4).map(move |left| (top, left)))
            .find(|&(top, left)| {
                (0..c).all(|ch| {
                    (0..4).all(|y| {
                        (0..4).all(|x| {
                            let (sy, sx) =
                                ((y + top) as isize - p as isize, (x + left) as isize - p as isize);
                            let expected = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                                image.get(&[ch, sy as usize, sx as usize]).unwrap()
                            } else {
                                0.0
                            };
                            out.get(&[ch, y, x]).unwrap() == expected
                        })
                    })
                })
            });
        offsets.insert(offset.expect("the crop is not a shifted, zero-padded copy"));
    }
    // Every offset of the padded image is reachable, corners (where zeros enter) included.
    assert_eq!(offsets.len(), (h + 2 * p - 4 + 1) * (w + 2 * p - 4 + 1));
    // Without padding and at full size the crop is the identity.
    let same = RandomCrop::square(5, 0);
    let square = Tensor::from_fn([1, 5, 5], |i| (i[1] * 5 + i[2]) as f32).unwrap();
    assert_eq!(same.apply(square.clone(), &mut rng(0)).unwrap(), square);
}

#[test]
fn horizontal_flip_with_p_one_reverses_rows_and_with_p_zero_keeps_them() {
    let image = Tensor::new([2, 2, 3], (1..=12).map(|v| v as f32).collect()).unwrap();
    let always = RandomHorizontalFlip { p: 1.0 };
    let flipped = always.apply(image.clone(), &mut rng(0)).unwrap();
    assert_eq!(flipped.data(), [3.0, 2.0, 1.0, 6.0, 5.0, 4.0, 9.0, 8.0, 7.0, 12.0, 11.0, 10.0]);
    let never = RandomHorizontalFlip { p: 0.0 };
    for seed in 0..20 {
        assert_eq!(never.apply(image.clone(), &mut rng(seed)).unwrap(), image);
        assert_eq!(always.apply(image.clone(), &mut rng(seed)).unwrap(), flipped);
    }
    // p = 0.5 flips some and keeps some.
    let half = RandomHorizontalFlip::default();
    let flips = (0..200).filter(|&s| half.apply(image.clone(), &mut rng(s)).unwrap() == flipped).count();
    assert!((60..140).contains(&flips), "{flips} flips out of 200");
}

#[test]
fn a_pipeline_applies_its_steps_in_order() {
    let image = Tensor::new([1, 1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    let flip_then_normalize = Pipeline::new()
        .then(RandomHorizontalFlip { p: 1.0 })
        .then(Normalize::new(vec![1.0], vec![2.0]).unwrap());
    assert_eq!(flip_then_normalize.len(), 2);
    assert_eq!(flip_then_normalize.apply(image.clone(), &mut rng(0)).unwrap().data(), [1.0, 0.5, 0.0]);
    assert_eq!(Pipeline::new().apply(image.clone(), &mut rng(0)).unwrap(), image);
    let crop = Pipeline::new().then(RandomCrop { size: [1, 2], padding: 0 });
    assert_eq!(crop.output_dims([1, 1, 3]).unwrap(), [1, 1, 2]);
}

/// A transform slow enough that a whole epoch takes seconds.
#[derive(Debug)]
struct Slow;

impl Transform for Slow {
    fn output_dims(&self, input: [usize; 3]) -> stride_data::Result<[usize; 3]> {
        Ok(input)
    }

    fn apply(&self, image: Tensor, _rng: &mut ChaCha8Rng) -> stride_data::Result<Tensor> {
        std::thread::sleep(Duration::from_millis(10));
        Ok(image)
    }
}

#[test]
fn dropping_an_epoch_mid_way_returns_promptly() {
    // 400 examples at 10 ms each: four seconds for the whole epoch.
    let loader = loader(400, 4, true, false, Pipeline::new().then(Slow)).prefetch(2);
    let start = Instant::now();
    let mut epoch = loader.epoch(0);
    let first = epoch.next().unwrap().unwrap();
    assert_eq!(first.len(), 4);
    drop(epoch);
    // At most the batch being built (40 ms) is waited for; a generous bound for loaded CI.
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    // Dropped before its first batch, too.
    let start = Instant::now();
    drop(loader.epoch(1));
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[test]
fn loaders_can_share_a_dataset() {
    let dataset = Arc::new(synthetic(10, 1, 2, 2));
    let (train, validation) = train_validation_split(10, ValidationSize::Count(3), 5).unwrap();
    let train = Loader::new(Arc::clone(&dataset), train, 4, true, false, Pipeline::new(), 0).unwrap();
    let validation = Loader::new(dataset, validation, 4, false, false, Pipeline::new(), 0).unwrap();
    assert_eq!(order(&collect(&train, 0)).len() + order(&collect(&validation, 0)).len(), 10);
}

#[test]
fn the_split_is_disjoint_complete_and_seeded() {
    let (train, validation) = train_validation_split(100, ValidationSize::Fraction(0.2), 1).unwrap();
    assert_eq!((train.len(), validation.len()), (80, 20));
    let mut all: Vec<usize> = train.iter().chain(&validation).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert!(train.is_sorted() && validation.is_sorted());
    assert_eq!(train_validation_split(100, ValidationSize::Fraction(0.2), 1).unwrap().1, validation);
    assert_ne!(train_validation_split(100, ValidationSize::Fraction(0.2), 2).unwrap().1, validation);
    // The fraction rounds to the nearest count; 0 holds nothing out.
    assert_eq!(train_validation_split(10, ValidationSize::Fraction(0.25), 0).unwrap().1.len(), 3);
    assert_eq!(train_validation_split(10, ValidationSize::Fraction(0.0), 0).unwrap().0.len(), 10);
    assert_eq!(train_validation_split(10, ValidationSize::Count(9), 0).unwrap().0.len(), 1);
}

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    let err = result.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn error_messages() {
    let split = |v, n| message(train_validation_split(n, v, 0));
    assert_eq!(
        split(ValidationSize::Fraction(1.0), 10),
        "train/validation split: validation fraction 1 is outside [0, 1)"
    );
    assert_eq!(
        split(ValidationSize::Fraction(-0.1), 10),
        "train/validation split: validation fraction -0.1 is outside [0, 1)"
    );
    assert_eq!(
        split(ValidationSize::Fraction(f64::NAN), 10),
        "train/validation split: validation fraction NaN is outside [0, 1)"
    );
    assert_eq!(
        split(ValidationSize::Count(10), 10),
        "train/validation split: a validation set of 10 out of 10 examples leaves no training data"
    );
    assert_eq!(
        split(ValidationSize::Fraction(0.96), 10),
        "train/validation split: a validation set of 10 out of 10 examples leaves no training data"
    );
    assert_eq!(
        split(ValidationSize::Fraction(0.5), 0),
        "train/validation split: a validation set of 0 out of 0 examples leaves no training data"
    );

    let new = |indices, batch, transforms| {
        message(Loader::new(synthetic(5, 1, 4, 4), indices, batch, true, false, transforms, 0))
    };
    assert_eq!(new(vec![0], 0, Pipeline::new()), "loader: batch size is 0; it must be at least 1");
    assert_eq!(
        new(vec![0, 5], 2, Pipeline::new()),
        "loader: index 5 (at position 1 of the index list) is out of range for a data set of 5 \
         examples"
    );
    assert_eq!(
        new(vec![0], 2, Pipeline::new().then(RandomCrop::square(9, 2))),
        "random crop: crop 9×9 does not fit the padded image 8×8 (4 + 2·2 by 4 + 2·2)"
    );
    assert_eq!(
        new(vec![0], 2, Pipeline::new().then(RandomCrop::square(0, 0))),
        "random crop: crop size 0×0 is empty"
    );
    assert_eq!(
        new(vec![0], 2, Pipeline::new().then(Normalize { mean: vec![0.0; 3], std: vec![1.0; 3] })),
        "normalize: 3 means and standard deviations for an image of 1 channels; give one per \
         channel or a single one for all"
    );
    assert_eq!(
        new(vec![0], 2, Pipeline::new().then(RandomHorizontalFlip { p: 1.5 })),
        "random horizontal flip: probability 1.5 is outside [0, 1]"
    );

    assert_eq!(
        message(Normalize::new(vec![0.5, 0.5], vec![0.2, 0.0])),
        "normalize: std of channel 1 is 0; dividing by it would give infinities"
    );
    assert_eq!(
        message(Normalize::new(vec![0.5], vec![0.2, 0.3])),
        "normalize: 1 means but 2 standard deviations; give one of each per channel"
    );
    assert_eq!(message(Normalize::new(vec![], vec![])), "normalize: no mean and standard deviation given");
    assert_eq!(
        message(Normalize::new(vec![f32::NAN], vec![1.0])),
        "normalize: channel 0 has mean NaN and std 1; both must be finite"
    );
    // A zero std built by hand past `new` is still caught when applied.
    let by_hand = Normalize { mean: vec![0.0], std: vec![0.0] };
    assert_eq!(
        message(by_hand.apply(Tensor::zeros([1, 2, 2]).unwrap(), &mut rng(0))),
        "normalize: std of channel 0 is 0; dividing by it would give infinities"
    );
    assert_eq!(
        message(RandomHorizontalFlip { p: 1.0 }.apply(Tensor::zeros([2, 2]).unwrap(), &mut rng(0))),
        "random horizontal flip: expected an image laid out as [C, H, W], got shape [2, 2]"
    );

    assert_eq!(
        message(Dataset::new(Tensor::zeros([3, 4, 4]).unwrap(), vec![0; 3])),
        "dataset: expected images laid out as [N, C, H, W], got shape [3, 4, 4] (rank 3)"
    );
    assert_eq!(
        message(Dataset::new(Tensor::zeros([3, 1, 4, 4]).unwrap(), vec![0; 2])),
        "dataset: 3 images (shape [3, 1, 4, 4]) but 2 labels; they must pair one to one"
    );
}
