//! CUDA side of PLM (`kernels/plm.cu`): the kernels' argument structs and
//! their launchers. Targets and probabilities are read as f32 (half types
//! are widened first, exactly); the keep probabilities are uploaded as f64
//! so that the mask compares in f64 as the host does.

use super::{bad_target, HistogramLayout};
use crate::backend::cuda::driver::KernelArg;
use crate::backend::cuda::{launch, CudaDevice, DevicePtr};
use crate::error::Result;
use crate::ops::on_cuda::{operand, operands, output, require_f32};
use crate::tensor::{DType, Tensor};
use std::mem::size_of;

const FAMILY: &str = "plm";

/// Arguments of `plm_mask_fwd_f32`: mask number `batch` under `seed`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlmMaskParams {
    /// Philox key: the same seed and batch always give the same mask.
    pub seed: u64,
    /// Mask number, part of the Philox counter.
    pub batch: u64,
    /// Mask elements, `B·C` (batch rows × classes).
    pub numel: i64,
    /// Classes `C`: element `e` belongs to class `e mod C`.
    pub classes: i64,
}
const _: () = assert!(size_of::<PlmMaskParams>() == 32);

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

/// A device flag holding `u64::MAX`, for the kernels to lower to the first
/// invalid target index.
fn new_flag(dev: &CudaDevice) -> Result<crate::backend::cuda::CudaBuffer> {
    dev.upload(&[u64::MAX])
}

/// Reads the flag back: an error naming `op` and the first invalid target
/// when a kernel lowered it (the offending value is fetched on that error
/// path only).
fn check_flag(
    op: &'static str,
    dev: &CudaDevice,
    flag: &crate::backend::cuda::CudaBuffer,
    targets: &Tensor,
    classes: usize,
) -> Result<()> {
    let first_bad = dev.download::<u64>(flag, 1)?[0];
    if first_bad == u64::MAX {
        return Ok(());
    }
    let e = first_bad as usize;
    let value = targets
        .reshape(&[targets.numel()])?
        .narrow(0, e, 1)?
        .to_f64_vec()?[0];
    Err(bad_target(op, e, classes, value))
}

/// The mask on the device (see [`super::mask`]), in the targets' dtype.
pub(super) fn mask(
    op: &'static str,
    targets: &Tensor,
    (seed, batch): (u64, u64),
    keep_pos: &[f64],
    keep_neg: &[f64],
) -> Result<Tensor> {
    let y = as_f32(op, targets)?;
    let yd = operand(op, &y)?;
    let dev = yd.dev.clone();
    let numel = y.numel();
    let params = PlmMaskParams {
        seed,
        batch,
        numel: numel as i64,
        classes: keep_pos.len() as i64,
    };
    let (pos, neg) = (dev.upload(keep_pos)?, dev.upload(keep_neg)?);
    let flag = new_flag(&dev)?;
    let (out, m) = output(op, &dev, DType::F32, targets.shape())?;
    dev.launch(
        FAMILY,
        "plm_mask_fwd_f32",
        launch::philox_blocks(numel),
        &[&params, &yd.at(&y), pos.arg(), neg.arg(), &m, flag.arg()],
    )?;
    check_flag(op, &dev, &flag, &y, keep_pos.len())?;
    out.to_dtype(targets.dtype())
}

/// Adds one batch to the device counts `counts` (I64 tensor laid out as
/// `h`), after checking the targets with `plm_targets_check_fwd_f32`.
pub(super) fn count(
    op: &'static str,
    h: &HistogramLayout,
    counts: &Tensor,
    probabilities: &Tensor,
    targets: &Tensor,
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
    let flag = new_flag(&dev)?;
    let cfg = launch::elementwise(numel);
    dev.launch(
        FAMILY,
        "plm_targets_check_fwd_f32",
        cfg,
        &[&params, &ya, flag.arg()],
    )?;
    check_flag(op, &dev, &flag, &y, h.classes)?;
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
