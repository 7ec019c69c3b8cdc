//! What a run tells the person watching it: a progress bar with the running loss, accuracy,
//! images/s and time left, and one line per finished epoch. A library caller can observe the
//! same events through [`Observer`], or stay silent.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::{EpochRecord, Score};

/// Events of a run, all optional.
pub trait Observer {
    /// Epoch `epoch` (1-based) of `epochs` starts, with `batches` batches of which `skipped` were
    /// done before an interruption.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize, _skipped: usize) {}
    /// A batch finished; the running loss and accuracy are over the epoch so far.
    fn batch_finished(&mut self, _running: Score, _images_per_second: f64) {}
    /// Training of the epoch finished; evaluation follows.
    fn evaluating(&mut self) {}
    fn epoch_finished(&mut self, _record: &EpochRecord) {}
    /// Something worth telling that is not an error (a plot that could not be drawn).
    fn note(&mut self, _message: &str) {}
}

/// Observes nothing.
pub struct Silent;

impl Observer for Silent {}

/// A progress bar on the terminal (hidden when stderr is not one) and an epoch summary line on
/// `out`.
pub struct Console<W: Write> {
    out: W,
    bar: Option<ProgressBar>,
    show_bar: bool,
}

impl<W: Write> Console<W> {
    pub fn new(out: W, show_bar: bool) -> Self {
        Console { out, bar: None, show_bar }
    }
}

fn percent(accuracy: f64) -> String {
    format!("{:.2}%", 100.0 * accuracy)
}

impl<W: Write> Observer for Console<W> {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize, skipped: usize) {
        if !self.show_bar {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar.set_position(skipped as u64);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    fn batch_finished(&mut self, running: Score, images_per_second: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {:.4} acc {} {:.0} img/s",
                running.loss,
                percent(running.accuracy),
                images_per_second
            ));
            bar.inc(1);
        }
    }

    fn evaluating(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message("evaluating");
        }
    }

    fn epoch_finished(&mut self, r: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = format!(
            "epoch {:>3}  lr {:<8}  train loss {:.4} acc {}",
            r.epoch,
            r.lr,
            r.train.loss,
            percent(r.train.accuracy)
        );
        for (name, score) in [("val", &r.validation), ("test", &r.test)] {
            if let Some(s) = score {
                line.push_str(&format!("  {name} loss {:.4} acc {}", s.loss, percent(s.accuracy)));
            }
        }
        line.push_str(&format!("  {:.1} s  {:.0} img/s", r.seconds, r.images_per_second));
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => {
                let _ = writeln!(self.out, "{message}");
            }
        }
    }
}
