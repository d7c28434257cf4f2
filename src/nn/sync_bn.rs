//! Turning a model's batch norm into synchronised batch norm, as PyTorch's
//! `SyncBatchNorm.convert_sync_batchnorm`.

use super::Visit;
use crate::distributed::SyncGroup;

/// Makes every [`BatchNorm2d`](super::BatchNorm2d) of `model` (every layer
/// that [`Visit::set_sync_group`] reaches) normalise with the statistics of
/// the global batch of the data-parallel job `group` connects, in training
/// mode: one all-gather of the per-channel moments in each layer's forward
/// and one all-reduce of two per-channel sums in its backward (see
/// [`Tensor::sync_batch_norm`](crate::Tensor::sync_batch_norm)). Evaluation
/// mode is unchanged. `model.set_sync_group(None)` undoes it.
///
/// Every rank converts its own model with its own group, and the ranks
/// then run the same forward and backward in the same order (the layers'
/// collectives are matched by position). The group belongs to the thread
/// that created it: forward and backward must run there.
///
/// ```
/// use ferrite::distributed::{Communicator, SingleProcess, SyncGroup};
/// use ferrite::nn::{convert_sync_batch_norm, small_cnn, Module};
/// use ferrite::{rand::SeedableRng, DType, Tensor};
/// use std::rc::Rc;
/// let mut rng = ferrite::rand::rngs::StdRng::seed_from_u64(0);
/// let mut model = small_cnn(1, 10, &mut rng)?;
/// let comm: Rc<dyn Communicator> = Rc::new(SingleProcess::new());
/// convert_sync_batch_norm(&mut model, &SyncGroup::new(comm));
/// // With one rank the global batch is this rank's: as plain batch norm.
/// let y = model.forward(&Tensor::randn(&[4, 1, 28, 28], 0.0, 1.0, DType::F32, &mut rng)?)?;
/// assert_eq!(y.shape(), &[4, 10]);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn convert_sync_batch_norm<M: Visit + ?Sized>(model: &mut M, group: &SyncGroup) {
    model.set_sync_group(Some(group));
}
