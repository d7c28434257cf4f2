//! Validation metrics: accumulated over the batches of a validation pass,
//! computed once at its end.

use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A validation metric. The trainer calls [`reset`](Self::reset) before a
/// validation pass, [`update`](Self::update) with every batch (in
/// evaluation mode, without a graph, tensors on the model's device) and
/// [`compute`](Self::compute) at the end. One metric may report several
/// named values.
pub trait Metric {
    /// Forgets everything accumulated.
    fn reset(&mut self);
    /// Accumulates one batch whose model output is `output`.
    fn update(&mut self, output: &Tensor, batch: &Batch) -> Result<()>;
    /// The named values over the batches seen since the last reset.
    fn compute(&mut self) -> Result<Vec<(String, f64)>>;
}

/// Top-1 accuracy of single-label classification, `accuracy` in the
/// record: the fraction of images whose largest output is at their label
/// (see [`crate::metrics::accuracy`]).
#[derive(Clone, Debug, Default)]
pub struct Accuracy {
    correct: f64,
    seen: usize,
}

impl Accuracy {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Metric for Accuracy {
    fn reset(&mut self) {
        *self = Self::default();
    }

    fn update(&mut self, output: &Tensor, batch: &Batch) -> Result<()> {
        let labels = batch.labels.as_ref().ok_or_else(|| {
            Error::invalid(
                "Accuracy::update",
                "accuracy needs one label per image; this dataset is multi-label",
            )
        })?;
        self.correct += crate::metrics::accuracy(output, labels)? * batch.len() as f64;
        self.seen += batch.len();
        Ok(())
    }

    fn compute(&mut self) -> Result<Vec<(String, f64)>> {
        if self.seen == 0 {
            return Err(Error::invalid(
                "Accuracy::compute",
                "no validation images were seen",
            ));
        }
        Ok(vec![("accuracy".into(), self.correct / self.seen as f64)])
    }
}

/// The image-weighted mean of a per-batch value computed by a closure:
/// see [`batch_mean`].
pub struct BatchMean<F> {
    name: String,
    f: F,
    sum: f64,
    seen: usize,
}

/// A metric named `name` whose value is the mean over images of
/// `f(output, batch)`, each batch weighted by its size (so a value that
/// is a per-batch mean, such as an accuracy, averages exactly).
pub fn batch_mean<F>(name: impl Into<String>, f: F) -> BatchMean<F>
where
    F: FnMut(&Tensor, &Batch) -> Result<f64>,
{
    BatchMean {
        name: name.into(),
        f,
        sum: 0.0,
        seen: 0,
    }
}

impl<F> Metric for BatchMean<F>
where
    F: FnMut(&Tensor, &Batch) -> Result<f64>,
{
    fn reset(&mut self) {
        self.sum = 0.0;
        self.seen = 0;
    }

    fn update(&mut self, output: &Tensor, batch: &Batch) -> Result<()> {
        self.sum += (self.f)(output, batch)? * batch.len() as f64;
        self.seen += batch.len();
        Ok(())
    }

    fn compute(&mut self) -> Result<Vec<(String, f64)>> {
        if self.seen == 0 {
            return Err(Error::invalid(
                "BatchMean::compute",
                format!("metric `{}`: no validation images were seen", self.name),
            ));
        }
        Ok(vec![(self.name.clone(), self.sum / self.seen as f64)])
    }
}
