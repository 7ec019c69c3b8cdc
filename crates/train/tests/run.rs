//! Training runs end to end on a small synthetic data set in MNIST's format: a resumed run
//! reaches bit-for-bit the weights of an uninterrupted one (interrupted within an epoch, or
//! extended after its last epoch), a diverging loss stops the run and keeps the last good
//! checkpoint, an existing run is never overwritten, and a saved model reopens for evaluation.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use stride_data::datasets::synthetic::write_stripes;
use stride_nn::checkpoint::load_tensors;
use stride_train::data::{dataset_defaults, prepare};
use stride_train::metrics::{EpochRecord, Score};
use stride_train::progress::{Observer, Silent};
use stride_train::run_dir::{
    BEST_FILE, CHECKPOINT_FILE, CURVES_FILE, METRICS_FILE, open_model, read_checkpoint,
};
use stride_train::{Error, OptimizerConfig, Outcome, RunConfig, Trainer, evaluate};

fn config(epochs: usize) -> RunConfig {
    let (mean, std, classes) = dataset_defaults("mnist".parse().unwrap());
    RunConfig {
        model: "lenet5".into(),
        dataset: "mnist".into(),
        classes,
        input: [1, 28, 28],
        mean,
        std,
        epochs,
        batch_size: 32,
        optimizer: OptimizerConfig::sgd(0.02, 0.9, 5e-4),
        schedule: "step:2".into(),
        seed: 7,
        validation: 60,
        train_subset: None,
        augment: true,
    }
}

/// 300 training images (240 after the hold-out: 8 batches of 32), 100 test images.
fn stripes(dir: &Path) {
    write_stripes(&dir.join("data"), 300, 100, 3).unwrap();
}

/// Raises the stop flag after `after` batches, as Ctrl-C would.
struct InterruptAfter {
    after: usize,
    stop: Arc<AtomicBool>,
}

impl Observer for InterruptAfter {
    fn batch_finished(&mut self, _: Score, _: f64) {
        self.after = self.after.saturating_sub(1);
        if self.after == 0 {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let checkpoint = read_checkpoint(dir).unwrap();
    let (tensors, _) = load_tensors(&dir.join(checkpoint.weights)).unwrap();
    tensors.into_iter().map(|(name, t)| (name, t.data().to_vec())).collect()
}

/// The records without their timings, which differ from run to run.
fn scores(history: &[EpochRecord]) -> Vec<EpochRecord> {
    history.iter().map(|r| EpochRecord { seconds: 0.0, images_per_second: 0.0, ..r.clone() }).collect()
}

#[test]
fn resumed_runs_reach_the_same_weights_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    stripes(tmp.path());
    let data = prepare(&config(3), &tmp.path().join("data")).unwrap();
    let never = AtomicBool::new(false);

    let whole = tmp.path().join("whole");
    let mut trainer = Trainer::create(config(3), &whole).unwrap();
    assert_eq!(trainer.fit(&data, &mut Silent, &never).unwrap(), Outcome::Finished);
    let want_history = scores(trainer.history());
    assert_eq!(want_history.len(), 3);
    // step:2 divides the rate by 10 for epoch 3.
    assert!((want_history[2].lr - 0.002).abs() < 1e-9, "{want_history:?}");

    // Interrupted in the middle of epoch 2 (after 8 + 3 batches), then resumed.
    let interrupted = tmp.path().join("interrupted");
    let stop = Arc::new(AtomicBool::new(false));
    let mut trainer = Trainer::create(config(3), &interrupted).unwrap();
    let mut ctrl_c = InterruptAfter { after: 11, stop: Arc::clone(&stop) };
    let outcome = trainer.fit(&data, &mut ctrl_c, &stop).unwrap();
    assert_eq!(outcome, Outcome::Interrupted { position: "in epoch 2 of 3, after batch 3".into() });
    let saved = read_checkpoint(&interrupted).unwrap();
    assert_eq!((saved.epochs_done, saved.batches_done, saved.reason.as_str()), (1, 3, "interrupted"));
    let mut trainer = Trainer::resume(&interrupted, None).unwrap();
    assert_eq!(trainer.fit(&data, &mut Silent, &never).unwrap(), Outcome::Finished);
    assert_eq!(scores(trainer.history()), want_history);
    assert_eq!(weights(&interrupted), weights(&whole));

    // Run for 1 epoch, then extended to 3 with --epochs.
    let extended = tmp.path().join("extended");
    Trainer::create(config(1), &extended).unwrap().fit(&data, &mut Silent, &never).unwrap();
    let mut trainer = Trainer::resume(&extended, Some(3)).unwrap();
    trainer.fit(&data, &mut Silent, &never).unwrap();
    // The step schedule is rebuilt for the new length; its milestones do not depend on it.
    assert_eq!(scores(trainer.history()), want_history);
    assert_eq!(weights(&extended), weights(&whole));

    // Only the latest checkpoint's files remain, with the metrics and the plot.
    let mut files: Vec<String> = std::fs::read_dir(&interrupted)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            BEST_FILE,
            CHECKPOINT_FILE,
            CURVES_FILE,
            METRICS_FILE,
            "optimizer-e003.safetensors",
            "weights-e003.safetensors"
        ]
    );
    let csv = std::fs::read_to_string(interrupted.join(METRICS_FILE)).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn a_short_run_learns_the_stripes() {
    let tmp = tempfile::tempdir().unwrap();
    stripes(tmp.path());
    // A vertical crop would move a bar onto its neighbour class's rows.
    let config = RunConfig {
        augment: false,
        optimizer: OptimizerConfig::sgd(0.05, 0.9, 0.0),
        schedule: "constant".into(),
        ..config(4)
    };
    let data = prepare(&config, &tmp.path().join("data")).unwrap();
    let mut trainer = Trainer::create(config, &tmp.path().join("run")).unwrap();
    trainer.fit(&data, &mut Silent, &AtomicBool::new(false)).unwrap();
    let history = trainer.history();
    assert!(history[3].train.loss < history[0].train.loss / 2.0, "{history:?}");
    let test = history[3].test.unwrap();
    assert!(test.accuracy > 0.8, "10 classes, chance is 10%: {test:?}");

    // The saved model reopens (from the directory or the best weights) and scores the same.
    let run = tmp.path().join("run");
    for path in [run.clone(), run.join(CHECKPOINT_FILE), run.join(BEST_FILE)] {
        let (config, mut model) = open_model(&path).unwrap();
        assert_eq!(config.model, "lenet5");
        let (score, matrix) = evaluate(model.as_mut(), &data.test, 10).unwrap();
        assert_eq!(matrix.total(), 100);
        assert!((score.accuracy - test.accuracy).abs() < 1e-12, "{path:?}: {score:?} vs {test:?}");
    }
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    stripes(tmp.path());
    let data = prepare(&config(1), &tmp.path().join("data")).unwrap();
    let never = AtomicBool::new(false);

    let mut wild = config(1);
    wild.optimizer.lr = 1e8;
    let err =
        Trainer::create(wild.clone(), &tmp.path().join("fresh")).unwrap().fit(&data, &mut Silent, &never);
    let message = err.unwrap_err().to_string();
    assert!(message.starts_with("the loss became"), "{message}");
    assert!(message.contains("No checkpoint had been written yet"), "{message}");

    // One good epoch, then the saved learning rate is made absurd: epoch 2 diverges.
    let dir = tmp.path().join("run");
    Trainer::create(config(1), &dir).unwrap().fit(&data, &mut Silent, &never).unwrap();
    let path = dir.join(CHECKPOINT_FILE);
    let mut checkpoint = read_checkpoint(&dir).unwrap();
    checkpoint.config.optimizer.lr = 1e8;
    checkpoint.config.schedule = "constant".into();
    checkpoint.schedule.clear();
    std::fs::write(&path, serde_json::to_string(&checkpoint).unwrap()).unwrap();
    let before = std::fs::read(&path).unwrap();
    let before_weights = weights(&dir);
    let err = Trainer::resume(&dir, Some(2)).unwrap().fit(&data, &mut Silent, &never).unwrap_err();
    assert!(matches!(err, Error::Diverged { epoch: 2, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("(after epoch 1 of 2) is kept in"), "{message}");
    assert!(message.contains("Try a smaller --lr"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(weights(&dir), before_weights);
}

#[test]
fn existing_runs_are_never_overwritten_and_bad_directories_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    stripes(tmp.path());
    let data = prepare(&config(1), &tmp.path().join("data")).unwrap();
    let dir = tmp.path().join("run");
    Trainer::create(config(1), &dir).unwrap().fit(&data, &mut Silent, &AtomicBool::new(false)).unwrap();
    let err = Trainer::create(config(1), &dir).err().unwrap().to_string();
    let want = format!(
        "{} already holds a run (after epoch 1 of 1); continue it with --resume {0} or choose another --out",
        dir.display()
    );
    assert_eq!(err, want);

    // An edited checkpoint with nonsense timings still resumes (the timing restarts).
    let mut checkpoint = read_checkpoint(&dir).unwrap();
    checkpoint.partial.seconds = -1e300;
    std::fs::write(dir.join(CHECKPOINT_FILE), serde_json::to_string(&checkpoint).unwrap()).unwrap();
    Trainer::resume(&dir, Some(2)).unwrap().fit(&data, &mut Silent, &AtomicBool::new(false)).unwrap();

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Trainer::resume(&empty, None).err().unwrap().to_string();
    assert!(err.contains("has no checkpoint.json: it is not a stride run directory"), "{err}");
    std::fs::write(empty.join(CHECKPOINT_FILE), "{ not json").unwrap();
    let err = Trainer::resume(&empty, None).err().unwrap().to_string();
    assert!(err.contains("is not a valid stride checkpoint"), "{err}");
    let err = Trainer::resume(&dir, Some(0)).err().unwrap().to_string();
    assert!(err.ends_with("has trained 2 epochs; --epochs must be at least 2"), "{err}");
    let err = open_model(&tmp.path().join("nowhere")).err().unwrap().to_string();
    assert!(err.contains("does not exist; give a run directory"), "{err}");

    let mut bad = config(1);
    bad.schedule = "sometimes".into();
    let err = Trainer::create(bad, &tmp.path().join("bad")).err().unwrap().to_string();
    assert!(err.starts_with("schedule \"sometimes\": unknown schedule"), "{err}");
}
