//! What a run measures: per-epoch records (written as CSV, plotted as curves) and a confusion
//! matrix for evaluation.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Loss and accuracy of one pass over a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Mean cross-entropy per example.
    pub loss: f64,
    /// Fraction of examples whose top class is the label, in [0, 1].
    pub accuracy: f64,
}

/// One finished epoch of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based: epoch 1 is the first pass over the training data.
    pub epoch: usize,
    /// The learning rate the epoch trained with.
    pub lr: f32,
    /// Running mean over the epoch's batches, in training mode.
    pub train: Score,
    pub validation: Option<Score>,
    pub test: Option<Score>,
    /// Wall-clock seconds of the training part of the epoch (not the evaluation).
    pub seconds: f64,
    pub images_per_second: f64,
}

/// The CSV header, one column per field; absent scores are empty cells.
pub const CSV_HEADER: &str = "epoch,lr,train_loss,train_accuracy,validation_loss,validation_accuracy,\
test_loss,test_accuracy,seconds,images_per_second";

/// The records as CSV text, header first.
pub fn to_csv(records: &[EpochRecord]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let score = |s: &Option<Score>| match s {
        Some(s) => format!("{:.6},{:.6}", s.loss, s.accuracy),
        None => ",".to_string(),
    };
    for r in records {
        let _ = writeln!(
            out,
            "{},{},{:.6},{:.6},{},{},{:.3},{:.1}",
            r.epoch,
            r.lr,
            r.train.loss,
            r.train.accuracy,
            score(&r.validation),
            score(&r.test),
            r.seconds,
            r.images_per_second
        );
    }
    out
}

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major `[true][predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { classes, counts: vec![0; classes * classes] }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Records one example; labels or predictions outside the classes are the caller's bug and
    /// are ignored rather than panicking in the middle of an evaluation.
    pub fn add(&mut self, label: usize, predicted: usize) {
        if label < self.classes && predicted < self.classes {
            self.counts[label * self.classes + predicted] += 1;
        }
    }

    pub fn count(&self, label: usize, predicted: usize) -> u64 {
        self.counts[label * self.classes + predicted]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Correct predictions over all examples (0 for no examples).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// Of the examples of class `label`, the fraction predicted as `label` (recall).
    pub fn class_accuracy(&self, label: usize) -> f64 {
        let row: u64 = (0..self.classes).map(|p| self.count(label, p)).sum();
        self.count(label, label) as f64 / row.max(1) as f64
    }

    /// A table with one row per true class (named by `names`), one column per predicted class,
    /// and each class's accuracy at the end of its row.
    pub fn render(&self, names: &[&str]) -> String {
        let name = |c: usize| names.get(c).copied().unwrap_or("?");
        let label_width =
            (0..self.classes).map(|c| name(c).len()).max().unwrap_or(0).max("true \\ predicted".len());
        let cell = self.counts.iter().max().map_or(1, |m| m.to_string().len()).max(4);
        let mut out = format!("{:<label_width$}", "true \\ predicted");
        for c in 0..self.classes {
            let _ = write!(out, " {c:>cell$}");
        }
        out.push_str("  accuracy\n");
        for t in 0..self.classes {
            let _ = write!(out, "{:<label_width$}", format!("{t} {}", name(t)));
            for p in 0..self.classes {
                let _ = write!(out, " {:>cell$}", self.count(t, p));
            }
            let _ = writeln!(out, "  {:>7.2}%", 100.0 * self.class_accuracy(t));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_column_per_field_and_empty_cells_for_missing_scores() {
        let record = EpochRecord {
            epoch: 1,
            lr: 0.1,
            train: Score { loss: 0.5, accuracy: 0.8 },
            validation: None,
            test: Some(Score { loss: 0.6, accuracy: 0.75 }),
            seconds: 2.0,
            images_per_second: 30000.0,
        };
        let csv = to_csv(&[record]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[1], "1,0.1,0.500000,0.800000,,,0.600000,0.750000,2.000,30000.0");
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }

    #[test]
    fn confusion_matrix_counts_and_accuracies() {
        let mut m = ConfusionMatrix::new(3);
        for (label, predicted) in [(0, 0), (0, 0), (0, 1), (1, 1), (2, 0), (2, 2), (7, 0)] {
            m.add(label, predicted);
        }
        assert_eq!(m.total(), 6);
        assert!((m.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert!((m.class_accuracy(0) - 2.0 / 3.0).abs() < 1e-12);
        let table = m.render(&["cat", "dog", "bird"]);
        assert!(table.lines().nth(1).unwrap().starts_with("0 cat"), "{table}");
        assert!(table.contains("66.67%"), "{table}");
    }
}
