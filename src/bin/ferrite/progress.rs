//! The terminal view of a training run: a progress bar per epoch (loss,
//! images/s, ETA) and one summary line per finished epoch.

use ferrite::train::Observer;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::time::Instant;

/// Draws progress for one run; `label` prefixes every line.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    images: usize,
    loss_sum: f64,
    batches: usize,
}

impl Progress {
    /// A progress view for the run called `label`.
    pub fn new(label: &str) -> Self {
        Progress {
            label: label.to_string(),
            bar: None,
            started: Instant::now(),
            images: 0,
            loss_sum: 0.0,
            batches: 0,
        }
    }
}

impl Observer for Progress {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{} epoch {epoch}/{epochs}", self.label));
        self.bar = Some(bar);
        self.started = Instant::now();
        self.images = 0;
        self.loss_sum = 0.0;
        self.batches = 0;
    }

    fn batch_finished(&mut self, loss: f64, images: usize) {
        self.images += images;
        self.loss_sum += loss;
        self.batches += 1;
        if let Some(bar) = &self.bar {
            let rate = self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} {rate:.0} img/s",
                self.loss_sum / self.batches as f64
            ));
            bar.inc(1);
        }
    }

    fn warning(&mut self, message: &str) {
        eprintln!("{}: warning: {message}", self.label);
    }

    fn info(&mut self, message: &str) {
        println!("{}: {message}", self.label);
    }

    fn epoch_finished(&mut self, record: &Value) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let test = &record["test"];
        let metric = |k: &str| test[k].as_f64().map(|v| format!(" {k} {v:.4}"));
        let metrics: String = ["macro_f1", "micro_f1", "subset_accuracy", "top1", "map"]
            .iter()
            .filter_map(|k| metric(k))
            .collect();
        println!(
            "{} epoch {}: loss {:.4}, {:.0} img/s, {:.1} s;{metrics}",
            self.label,
            record["epoch"],
            record["train_loss"].as_f64().unwrap_or(f64::NAN),
            record["images_per_sec"].as_f64().unwrap_or(0.0),
            record["train_seconds"].as_f64().unwrap_or(0.0),
        );
    }
}
