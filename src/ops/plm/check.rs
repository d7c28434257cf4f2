//! When the PLM kernels' target check is read.
//!
//! The mask and histogram kernels check on the device that every target is
//! 0 or 1 and lower a one-element flag to the first offending index. Reading
//! that flag at once ([`TargetCheck::Now`]) makes the host wait for the GPU
//! at every batch; a training loop instead queues the flags
//! ([`TargetCheck::Later`]) in [`TargetChecks`] and reads them all in one
//! download when it next needs the device's results anyway (PLM reads them
//! with its histograms, once per epoch). On the host the targets are read
//! directly and always checked at once.

use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// When a device's verdict on the targets is read.
pub(crate) enum TargetCheck<'a> {
    /// At once: the op waits for the device and fails on bad targets.
    Now,
    /// Queued in the given list, read by [`TargetChecks::finish`].
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Later(&'a mut TargetChecks),
}

/// Target checks queued on a device, each a one-element flag (I64 holding
/// the u64 index of the first bad target, all ones when none).
#[derive(Clone, Debug, Default)]
pub(crate) struct TargetChecks {
    pending: Vec<PendingCheck>,
}

#[derive(Clone, Debug)]
struct PendingCheck {
    /// What was checked, for the error ("mask 17").
    what: String,
    /// Classes per target row, to name the offending row and column.
    classes: usize,
    flag: Tensor,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
/// A fresh flag on `device` holding all ones (`u64::MAX`, i.e. -1 as i64).
pub(crate) fn new_flag(device: Device) -> Result<Tensor> {
    Tensor::full_on(&[1], -1.0, DType::I64, device)
}

/// The first bad flat index recorded in a flag's value, if any.
pub(crate) fn first_bad(value: i64) -> Option<usize> {
    (value != -1).then_some(value as u64 as usize)
}

impl TargetChecks {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    /// Queues `flag`, lowered by a kernel checking `what` (rows of
    /// `classes` targets).
    pub(crate) fn push(&mut self, what: String, classes: usize, flag: Tensor) {
        self.pending.push(PendingCheck {
            what,
            classes,
            flag,
        });
    }

    /// Reads every queued flag in one download; an error naming `op`, the
    /// first batch with a target that is not 0 or 1, and its position.
    /// The checks stay queued on error (the same error is reported again),
    /// and are cleared when all passed.
    pub fn finish(&mut self, op: &'static str) -> Result<()> {
        self.verify(op)?;
        self.pending.clear();
        Ok(())
    }

    /// [`finish`](Self::finish) without clearing.
    pub fn verify(&self, op: &'static str) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let flags: Vec<Tensor> = self.pending.iter().map(|p| p.flag.clone()).collect();
        let values = Tensor::cat(&flags, 0)?.to_vec::<i64>()?;
        for (check, &value) in self.pending.iter().zip(&values) {
            if let Some(e) = first_bad(value) {
                let c = check.classes.max(1);
                return Err(Error::invalid(
                    op,
                    format!(
                        "targets must be 0 or 1: {} had another value at [{}, {}]",
                        check.what,
                        e / c,
                        e % c
                    ),
                ));
            }
        }
        Ok(())
    }
}
