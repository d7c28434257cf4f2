//! CUDA side of PLM (`kernels/plm.cu`): the kernels' argument structs and
//! their launchers. Targets and probabilities are read as f32 (half types
//! are widened first, exactly); the keep probabilities live on the device
//! as f64 (a `[2, C]` table uploaded once per r̂) so that the mask compares
//! in f64 as the host does.

use super::check::{first_bad, new_flag};
use super::{bad_target, HistogramLayout, TargetCheck};
use crate::backend::cuda::driver::KernelArg;
use crate::backend::cuda::{launch, DevicePtr};
use crate::error::Result;
use crate::ops::on_cuda::{operand, operands, output, require_f32};
use crate::tensor::{DType, Tensor};
use std::mem::size_of;

const FAMILY: &str = "plm";

/// Arguments of `plm_mask_fwd_f32`: the elements `first..first + numel`
/// of mask number `batch` under `seed`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmMaskParams {
    /// Philox key: the same seed and batch always give the same mask.
    pub seed: u64,
    /// Mask number, part of the Philox counter.
    pub batch: u64,
    /// Mask elements drawn, `B·C` (the slice's rows × classes).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
    /// Index in the whole batch of the first element drawn, `first_row·C`
    /// (0 for a whole batch): element `e` of the slice uses the Philox
    /// word of element `first + e`.
    pub first: i64,
}
const _: () = assert!(size_of::<PlmMaskParams>() == 40);

/// Arguments of `plm_histogram_fwd_f32` and `plm_targets_check_fwd_f32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmHistogramParams {
    /// Number of probabilities (and targets) in the batch.
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
    /// Histogram bins over `[0, 1]`.
    pub n_bins: i64,
}
const _: () = assert!(size_of::<PlmHistogramParams>() == 24);

// Safety: #[repr(C)], plain integers, no padding (sizes asserted here and
// in the kernel source).
unsafe impl KernelArg for PlmMaskParams {}
unsafe impl KernelArg for PlmHistogramParams {}

/// `t` as contiguous f32 data (half types, bytes and integer labels
/// converted exactly; f64 has no device kernel).
fn as_f32(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let t = t.detach();
    let t = match t.dtype() {
        DType::BF16 | DType::F16 | DType::U8 | DType::I64 => t.to_dtype(DType::F32)?,
        _ => t,
    };
    require_f32(op, t.dtype())?;
    t.contiguous()
}

/// Reads `flag` at once (a wait for the device), or queues it for `check`
/// to read later; at once, an error names `op`, the first invalid target
/// and its value (fetched on that error path only).
fn settle(
    op: &'static str,
    what: String,
    flag: Tensor,
    targets: &Tensor,
    classes: usize,
    check: TargetCheck<'_>,
) -> Result<()> {
    match check {
        TargetCheck::Later(checks) => {
            checks.push(what, classes, flag);
            Ok(())
        }
        TargetCheck::Now => {
            let Some(e) = first_bad(flag.to_vec::<i64>()?[0]) else {
                return Ok(());
            };
            let value = targets
                .reshape(&[targets.numel()])?
                .narrow(0, e, 1)?
                .to_f64_vec()?[0];
            Err(bad_target(op, e, classes, value))
        }
    }
}

/// The mask on the device (see [`super::mask`]), in the targets' dtype:
/// the targets are the elements from `first` on (a row boundary, with
/// `first + numel` at most `i64::MAX`, checked by the caller) of the batch
/// the mask is drawn for; `keep` is the `[2, C]` f64 keep table on the
/// device.
pub(super) fn mask(
    op: &'static str,
    targets: &Tensor,
    (seed, batch, first): (u64, u64, u64),
    keep: &Tensor,
    check: TargetCheck<'_>,
) -> Result<Tensor> {
    let y = as_f32(op, targets)?;
    let keep = keep.contiguous()?;
    let [yd, kd] = operands(op, [&y, &keep])?;
    let dev = yd.dev.clone();
    let numel = y.numel();
    let classes = keep.shape()[1];
    let params = PlmMaskParams {
        seed,
        batch,
        numel: numel as i64,
        classes: classes as i64,
        first: first as i64,
    };
    let pos = kd.at(&keep);
    let neg = pos + (classes * size_of::<f64>()) as DevicePtr;
    let flag = new_flag(targets.device())?;
    let flag_ptr = operand(op, &flag)?.at(&flag);
    let (out, m) = output(op, &dev, DType::F32, targets.shape())?;
    // The Philox blocks ⌊first/4⌋ to ⌊(first + numel − 1)/4⌋ hold the
    // slice and the `first mod 4` elements before it.
    let spanned = if numel == 0 {
        0
    } else {
        numel + (first % 4) as usize
    };
    dev.launch(
        FAMILY,
        "plm_mask_fwd_f32",
        launch::philox_blocks(spanned),
        &[&params, &yd.at(&y), &pos, &neg, &m, &flag_ptr],
    )?;
    settle(op, format!("mask {batch}"), flag, &y, classes, check)?;
    out.to_dtype(targets.dtype())
}

/// Adds one batch to the device counts `counts` (I64 tensor laid out as
/// `h`), after checking the targets with `plm_targets_check_fwd_f32` (read
/// as `check` says).
pub(super) fn count(
    op: &'static str,
    h: &HistogramLayout,
    counts: &Tensor,
    (probabilities, targets): (&Tensor, &Tensor),
    check: TargetCheck<'_>,
) -> Result<()> {
    let (p, y) = (as_f32(op, probabilities)?, as_f32(op, targets)?);
    let [pd, yd] = operands(op, [&p, &y])?;
    let dev = pd.dev.clone();
    let numel = y.numel();
    let params = PlmHistogramParams {
        numel: numel as i64,
        classes: h.classes as i64,
        n_bins: h.n_bins as i64,
    };
    let (pa, ya) = (pd.at(&p), yd.at(&y));
    let flag = new_flag(targets.device())?;
    let flag_ptr = operand(op, &flag)?.at(&flag);
    let cfg = launch::elementwise(numel);
    dev.launch(
        FAMILY,
        "plm_targets_check_fwd_f32",
        cfg,
        &[&params, &ya, &flag_ptr],
    )?;
    settle(op, "an observed batch".into(), flag, &y, h.classes, check)?;
    // The counts are written in place: hold their storage for writing.
    let guard = counts.storage_mut();
    let base = match &*guard {
        crate::backend::Storage::Cuda(s) => s.buffer().ptr(),
        crate::backend::Storage::Cpu(_) => {
            return Err(crate::error::Error::invalid(
                op,
                "device histogram counts on the host (a bug in the dispatch)",
            ))
        }
    };
    let at = |offset: usize| base + (offset * 8) as DevicePtr;
    dev.launch(
        FAMILY,
        "plm_histogram_fwd_f32",
        cfg,
        &[
            &params,
            &pa,
            &ya,
            &at(h.pos_pred()),
            &at(h.neg_pred()),
            &at(h.pos_labels()),
            &at(h.neg_labels()),
            &at(h.discarded()),
        ],
    )
}
