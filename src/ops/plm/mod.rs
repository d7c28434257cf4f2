//! Partial Label Masking as an op family: the mask of one batch (drawn
//! with Philox4x32-10 from the 0/1 targets and per-class keep
//! probabilities) and the prediction-histogram counts of the training
//! batches, on the device the targets live on.
//!
//! `cpu.rs` holds the host kernels (and [`philox`] the generator); `cuda.rs`
//! launches `kernels/plm.cu`, whose masks are bit for bit the host's. The
//! PLM state and its epoch update (`crate::plm`) call these on tensors
//! only.
//!
//! Targets are validated here (every value exactly 0 or 1). On the host the
//! values are read directly; on a device a kernel records the first invalid
//! index in a one-element device flag and only that flag (8 bytes) is read
//! back, at once or later in one download with others (`TargetCheck`):
//! the mask kernel checks while it draws, the histogram update runs a check
//! kernel first (with an immediate check, an invalid batch is never
//! counted; with a deferred one, the counts are not used before the check
//! is read).

mod check;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod philox;

pub(crate) use check::{TargetCheck, TargetChecks};

use crate::error::{Error, Result};
use crate::ops::dispatch::cuda_arm;
use crate::tensor::{DType, Device, Tensor};

/// The error for target `value` at flat index `e` of `[B, classes]`
/// targets: neither 0 nor 1.
pub(crate) fn bad_target(op: &'static str, e: usize, classes: usize, value: f64) -> Error {
    Error::invalid(
        op,
        format!(
            "targets must be 0 or 1, found {value} at [{}, {}]",
            e / classes,
            e % classes
        ),
    )
}

/// The per-class keep probabilities as one `[2, C]` f64 tensor on `device`
/// (`keep_pos` then `keep_neg`), the form [`mask`] reads: built once per
/// update of r̂ and reused for every batch (on a GPU, one upload).
pub(crate) fn keep_table(keep_pos: &[f64], keep_neg: &[f64], device: Device) -> Result<Tensor> {
    let c = keep_pos.len();
    if c == 0 || keep_neg.len() != c {
        return Err(Error::invalid(
            "plm keep probabilities",
            format!("{c} keep_pos and {} keep_neg values", keep_neg.len()),
        ));
    }
    let values: Vec<f64> = keep_pos.iter().chain(keep_neg).copied().collect();
    Tensor::from_vec(values, &[2, c])?.to_device(device)
}

/// The PLM mask number `batch` under `seed` of the `[B, C]` 0/1 `targets`
/// (any dtype) with the per-class keep probabilities `keep` (a
/// [`keep_table`] on the targets' device): a tensor of the targets' shape,
/// dtype and device holding 1 where the label is kept. The targets are the
/// rows from `first_row` on of the batch the mask is drawn for (0: the
/// whole batch; a data-parallel rank passes its slice's offset), and the
/// result is that part of the whole batch's mask. Bit for bit
/// [`cpu::draw_mask_at`] on every device (on a CUDA device, every slice is
/// drawn by the device kernel at its elements' offsets in the whole
/// batch). Errors name `op`: targets that do not form `[B, C]` rows, a
/// slice whose elements would lie past index `i64::MAX` of the batch, and
/// targets that are not 0/1 (on a device, when `check` reads the verdict,
/// naming the position within the slice).
pub(crate) fn mask(
    op: &'static str,
    targets: &Tensor,
    (seed, batch, first_row): (u64, u64, u64),
    keep: &Tensor,
    check: TargetCheck<'_>,
) -> Result<Tensor> {
    let c = keep.shape().get(1).copied().unwrap_or(0);
    if keep.shape() != [2, c] || keep.dtype() != DType::F64 || c == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "keep probabilities must be [2, C] f64, got {:?} {:?}",
                keep.shape(),
                keep.dtype()
            ),
        ));
    }
    if !targets.numel().is_multiple_of(c) {
        return Err(Error::invalid(
            op,
            format!(
                "{} targets do not form rows of {c} classes",
                targets.numel()
            ),
        ));
    }
    if targets.device() != keep.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: targets.device(),
            rhs: keep.device(),
        });
    }
    let first = first_row.checked_mul(c as u64).ok_or_else(|| {
        Error::invalid(
            op,
            format!("row {first_row} of {c} classes is out of range"),
        )
    })?;
    // Element indices of the whole batch are i64 on the device.
    let end = first.checked_add(targets.numel() as u64);
    if end.is_none_or(|end| end > i64::MAX as u64) {
        return Err(Error::invalid(
            op,
            format!(
                "{} targets from row {first_row} of {c} classes reach past element {} of a batch",
                targets.numel(),
                i64::MAX
            ),
        ));
    }
    match targets.device() {
        Device::Cuda(_) => cuda_arm!(cuda::mask(op, targets, (seed, batch, first), keep, check)),
        Device::Cpu => {
            let _ = check; // the host reads the targets, so checks at once
            let keep = keep.to_vec::<f64>()?;
            let labels = cpu::labels(op, &targets.to_f64_vec()?, c)?;
            let bits = cpu::draw_mask_at(seed, batch, first, &labels, &keep[..c], &keep[c..])?;
            let values: Vec<f64> = bits.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            Tensor::from_vec(values, targets.shape())?.to_dtype(targets.dtype())
        }
    }
}

impl Tensor {
    /// The PLM mask number `batch` under `seed` of these `[B, C]` 0/1
    /// targets (row-major; element `e` has class `e mod C`), with per-class
    /// keep probabilities `keep_pos` and `keep_neg` (`C` each): 1 where the
    /// label is kept, in the targets' shape, dtype and device, bit for bit
    /// [`cpu::draw_mask`] on every device. No gradient flows through it.
    ///
    /// Errors: targets that are not exactly 0 or 1, or that do not form
    /// rows of `C`.
    pub fn plm_mask(
        &self,
        seed: u64,
        batch: u64,
        keep_pos: &[f64],
        keep_neg: &[f64],
    ) -> Result<Tensor> {
        let keep = keep_table(keep_pos, keep_neg, self.device())?;
        mask(
            "plm_mask",
            &self.detach(),
            (seed, batch, 0),
            &keep,
            TargetCheck::Now,
        )
    }
}

/// Where each PLM histogram lies in one flat buffer of counts: the
/// `[bin][class]` predictions of positives, then of negatives, the
/// positive and negative labels per class, and the discarded count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistogramLayout {
    /// Number of bins over [0, 1].
    pub n_bins: usize,
    /// Number of classes `C`.
    pub classes: usize,
}

impl HistogramLayout {
    /// Cells of one prediction histogram, `n_bins · C`.
    fn cells(&self) -> usize {
        self.n_bins * self.classes
    }
    /// Offset of the positives' prediction counts.
    pub fn pos_pred(&self) -> usize {
        0
    }
    /// Offset of the negatives' prediction counts.
    pub fn neg_pred(&self) -> usize {
        self.cells()
    }
    /// Offset of the positive-label counts.
    pub fn pos_labels(&self) -> usize {
        2 * self.cells()
    }
    /// Offset of the negative-label counts.
    pub fn neg_labels(&self) -> usize {
        2 * self.cells() + self.classes
    }
    /// Offset of the discarded count.
    pub fn discarded(&self) -> usize {
        2 * self.cells() + 2 * self.classes
    }
    /// Length of the whole buffer.
    pub fn len(&self) -> usize {
        self.discarded() + 1
    }
}

/// The counts of [`HistogramCounts`], downloaded (see
/// `crate::plm::Histograms` for their meaning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostCounts {
    /// Predicted-probability counts of positives, `[bin][class]`.
    pub pos_pred: Vec<u64>,
    /// Predicted-probability counts of negatives, `[bin][class]`.
    pub neg_pred: Vec<u64>,
    /// Positive labels per class.
    pub pos_labels: Vec<u64>,
    /// Negative labels per class.
    pub neg_labels: Vec<u64>,
    /// Probabilities left out (NaN or outside [0, 1]).
    pub discarded: u64,
}

/// PLM histogram counts accumulating on one device: one I64 tensor holding
/// u64 counts laid out as [`HistogramLayout`]. On a CUDA device the
/// batches are counted with u64 atomics (integer, order-independent) and
/// nothing is downloaded until [`HistogramCounts::download`].
#[derive(Debug)]
pub(crate) struct HistogramCounts {
    layout: HistogramLayout,
    counts: Tensor,
}

impl Clone for HistogramCounts {
    /// A copy with its own counts (a copy on the device).
    ///
    /// # Panics
    /// When the device cannot make the copy (out of memory), as cloning a
    /// `Vec` aborts when the host is.
    fn clone(&self) -> Self {
        HistogramCounts {
            layout: self.layout,
            counts: self
                .counts
                .contiguous_copy()
                .expect("copying PLM histogram counts on their device"),
        }
    }
}

impl HistogramCounts {
    /// Zero counts for `n_bins` bins and `classes` classes on `device`.
    pub fn zeros(n_bins: usize, classes: usize, device: Device) -> Result<Self> {
        let layout = HistogramLayout { n_bins, classes };
        Ok(HistogramCounts {
            layout,
            counts: Tensor::zeros_on(&[layout.len()], DType::I64, device)?,
        })
    }

    /// The device the counts live on.
    pub fn device(&self) -> Device {
        self.counts.device()
    }

    /// Counts one batch: float `probabilities` and 0/1 `targets`, both
    /// `[B, C]` on the counts' device. Every label is counted; each
    /// probability is binned, or counted as discarded when NaN or outside
    /// [0, 1]. Errors (naming `op`, nothing counted) for operands on
    /// another device, and for targets that are not 0 or 1 (on a device,
    /// when `check` reads the verdict: a deferred check lets the batch be
    /// counted, and its error comes when the check is read).
    pub fn add(
        &mut self,
        op: &'static str,
        probabilities: &Tensor,
        targets: &Tensor,
        check: TargetCheck<'_>,
    ) -> Result<()> {
        let (n, c) = (targets.numel(), self.layout.classes);
        if probabilities.shape() != targets.shape() || !n.is_multiple_of(c) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: probabilities.shape().to_vec(),
                rhs: targets.shape().to_vec(),
            });
        }
        probabilities.check_float(op)?;
        for t in [probabilities, targets] {
            if t.device() != self.device() {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: self.device(),
                    rhs: t.device(),
                });
            }
        }
        match self.device() {
            Device::Cpu => {
                let _ = check; // the host reads the targets, so checks at once
                let labels = cpu::labels(op, &targets.to_f64_vec()?, c)?;
                let p = probabilities.to_f64_vec()?;
                let mut guard = self.counts.cpu_storage_mut(op)?;
                let counts = <i64 as crate::tensor::StorageElement>::slice_mut(&mut guard)
                    .expect("histogram counts are i64");
                cpu::count(&self.layout, counts, &p, &labels);
                Ok(())
            }
            Device::Cuda(_) => cuda_arm!(cuda::count(
                op,
                &self.layout,
                &self.counts,
                (probabilities, targets),
                check
            )),
        }
    }

    /// The counts, downloaded when on a device.
    pub fn download(&self) -> Result<HostCounts> {
        let all: Vec<u64> = self
            .counts
            .to_vec::<i64>()?
            .into_iter()
            .map(|v| v as u64)
            .collect();
        let h = &self.layout;
        Ok(HostCounts {
            pos_pred: all[h.pos_pred()..h.neg_pred()].to_vec(),
            neg_pred: all[h.neg_pred()..h.pos_labels()].to_vec(),
            pos_labels: all[h.pos_labels()..h.neg_labels()].to_vec(),
            neg_labels: all[h.neg_labels()..h.discarded()].to_vec(),
            discarded: all[h.discarded()],
        })
    }
}
