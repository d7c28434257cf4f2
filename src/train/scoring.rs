//! Scoring a model on a dataset: batches through the model on its device,
//! in evaluation mode, scores downloaded, metrics computed.

use super::evaluation::Evaluation;
use super::objective::Objective;
use crate::data::loader::{DataLoader, LoaderConfig};
use crate::data::{ImageDataset, Labels};
use crate::distributed::{all_gather_rows, Communicator};
use crate::error::{Error, Result};
use crate::nn::resnet::ResNet;
use crate::nn::{Module, Visit};
use crate::tensor::Device;

/// The `op` of the error for a model whose outputs are not finite.
pub(super) const DIVERGED: &str = "training diverged";

/// Scores `dataset` with `model` on `device` at `precision` in evaluation mode (restoring
/// training mode afterwards) and computes its metrics; only the scores are
/// downloaded. Scores that are not finite (a diverged model) are an error
/// saying so. With a communicator (data-parallel), each rank scores its
/// slice of every batch and the scores are gathered: every rank computes
/// the same metrics (a collective).
pub(super) fn evaluate_model(
    (device, precision, comm): (Device, crate::Precision, Option<&dyn Communicator>),
    model: &mut ResNet,
    objective: &Objective,
    dataset: &ImageDataset,
    mut loader_config: LoaderConfig,
    train_positives: &[usize],
    threshold: f64,
) -> Result<Evaluation> {
    loader_config.batch_size = loader_config.batch_size.max(256);
    let mut loader = DataLoader::new(dataset, loader_config)?;
    let mut scores = Vec::with_capacity(dataset.len() * dataset.num_classes);
    model.set_training(false);
    let (rank, world) = comm.map_or((0, 1), |c| (c.rank(), c.world_size()));
    let scored = crate::no_grad(|| -> Result<()> {
        for item in loader.shard_epoch(0, rank, world)? {
            let local = match item?.1 {
                None => None,
                Some(batch) => {
                    let x = batch.x.to_device(device)?;
                    let logits = crate::autocast(precision, || model.forward(&x))?;
                    Some(objective.scores(&logits)?)
                }
            };
            match (comm, local) {
                (Some(comm), local) => {
                    let all = all_gather_rows(comm, local.as_ref())?;
                    scores.extend(all.to_vec::<f32>()?);
                }
                (None, Some(local)) => scores.extend(local.to_vec::<f32>()?),
                (None, None) => {}
            }
        }
        Ok(())
    });
    model.set_training(true);
    scored?;
    check_scores(&scores, dataset.num_classes)?;
    let c = dataset.num_classes;
    let mut targets = vec![0u8; dataset.len() * c];
    let mut row = vec![0f32; c];
    for i in 0..dataset.len() {
        dataset.target_row(i, &mut row)?;
        for (t, &v) in targets[i * c..(i + 1) * c].iter_mut().zip(&row) {
            *t = (v > 0.5) as u8;
        }
    }
    let labels = match &dataset.labels {
        Labels::Single(l) => Some(l.as_slice()),
        Labels::Multi { .. } => None,
    };
    Evaluation::new(&scores, &targets, labels, c, train_positives, threshold)
}

/// A [`DIVERGED`] error naming the first score (of `num_classes` per
/// image) that is not finite, if any.
pub(super) fn check_scores(scores: &[f32], num_classes: usize) -> Result<()> {
    match scores.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(i) => {
            let c = num_classes.max(1);
            Err(Error::invalid(
                DIVERGED,
                format!(
                    "the model's score for test image {}, class {} is {}",
                    i / c,
                    i % c,
                    scores[i]
                ),
            ))
        }
    }
}
