//! A run's test-set [`Evaluation`] as a [`Metric`] of the generic trainer:
//! the scores of every image, kept on the host, and the run's summary
//! metrics (macro F1, mAP, top-1, …) computed from them.

use super::evaluation::Evaluation;
use super::objective::Objective;
use super::scoring::check_scores;
use super::trainer::Metric;
use crate::data::loader::Batch;
use crate::error::Result;
use crate::tensor::Tensor;

/// Accumulates scores, targets and labels over the validation batches and
/// computes [`Evaluation::summary`].
pub(super) struct RunEvaluation {
    /// Turns logits into scores; the same loss configuration as the
    /// trained objective (its scores do not depend on training state).
    scorer: Objective,
    num_classes: usize,
    train_positives: Vec<usize>,
    threshold: f64,
    scores: Vec<f32>,
    targets: Vec<u8>,
    labels: Option<Vec<u32>>,
}

impl RunEvaluation {
    pub(super) fn new(
        scorer: Objective,
        num_classes: usize,
        train_positives: Vec<usize>,
        threshold: f64,
    ) -> Self {
        RunEvaluation {
            scorer,
            num_classes,
            train_positives,
            threshold,
            scores: Vec::new(),
            targets: Vec::new(),
            labels: None,
        }
    }
}

impl Metric for RunEvaluation {
    fn reset(&mut self) {
        self.scores.clear();
        self.targets.clear();
        self.labels = None;
    }

    fn update(&mut self, output: &Tensor, batch: &Batch) -> Result<()> {
        self.scores
            .extend(self.scorer.scores(output)?.to_vec::<f32>()?);
        let targets = batch.targets.to_vec::<f32>()?;
        self.targets
            .extend(targets.iter().map(|&v| (v > 0.5) as u8));
        if let Some(labels) = &batch.labels {
            let labels = labels.to_vec::<i64>()?;
            self.labels
                .get_or_insert_with(Vec::new)
                .extend(labels.iter().map(|&l| l as u32));
        }
        Ok(())
    }

    /// Scores that are not finite (a diverged model) are an error saying so.
    fn compute(&mut self) -> Result<Vec<(String, f64)>> {
        check_scores(&self.scores, self.num_classes)?;
        let evaluation = Evaluation::new(
            &self.scores,
            &self.targets,
            self.labels.as_deref(),
            self.num_classes,
            &self.train_positives,
            self.threshold,
        )?;
        Ok(evaluation.summary)
    }
}
