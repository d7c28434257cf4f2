//! CPU kernels of the per-element sigmoid losses: the values or
//! derivatives of [`Formula`] over contiguous buffers, the targets check,
//! and the f64 total of the per-element values.

use super::formulas::Formula;
use super::Operands;
use crate::backend::cpu::fill_chunks_weighted;
use crate::error::Result;
use crate::ops::dispatch::with_compute_storage;
use crate::tensor::{CpuStorage, DType, Float, StorageElement, Tensor, WithDType};

/// Rough cost of one element (exp, ln, powf) in units of a simple
/// elementwise op, for the parallelism threshold.
const WORK_PER_ELEMENT: usize = 16;

/// The first target outside [0, 1] (NaN included), as (flat index, value).
pub(super) fn first_bad_target(targets: &Tensor) -> Result<Option<(usize, f64)>> {
    let guard = targets.cpu_storage("sigmoid loss")?;
    Ok(with_compute_storage!(&*guard, |v: T| {
        let off = targets.layout().offset();
        v[off..off + targets.numel()]
            .iter()
            .position(|&y| !(0.0..=1.0).contains(&y))
            .map(|i| (i, v[off + i].to_f64()))
    }))
}

/// `scale·weight·ℓ` (forward) or `scale·weight·dℓ/dz` (`derivative`) for
/// every logit, as a new tensor of the logits' shape.
pub(super) fn values(formula: &Formula<f64>, x: &Operands<'_>, derivative: bool) -> Result<Tensor> {
    let ts = [x.logits, x.targets, x.weight, x.pos_weight, x.scale];
    let s = Tensor::read_cpu_storages("sigmoid loss", &ts, |s| match x.logits.dtype() {
        DType::F64 => kernel::<f64>(&formula.cast(), &ts, s, derivative),
        _ => kernel::<f32>(&formula.cast(), &ts, s, derivative),
    })?;
    Tensor::from_storage(s, x.logits.shape())
}

/// The typed loop of [`values`]; `ts` are the operands in order and `s`
/// their storages. The factors and the scale are read cyclically.
fn kernel<T: Float + StorageElement>(
    formula: &Formula<T>,
    ts: &[&Tensor; 5],
    s: &[&CpuStorage],
    derivative: bool,
) -> CpuStorage {
    let slice = |k: usize| {
        let off = ts[k].layout().offset();
        &T::slice(s[k]).expect("dtype checked by the caller")[off..off + ts[k].numel()]
    };
    let (z, y, w, pw, g) = (slice(0), slice(1), slice(2), slice(3), slice(4));
    let mut out = vec![T::ZERO; z.len()];
    fill_chunks_weighted(&mut out, WORK_PER_ELEMENT, |start, chunk| {
        for (k, o) in chunk.iter_mut().enumerate() {
            let i = start + k;
            let (loss, dloss) = formula.eval(z[i], y[i], pw[i % pw.len()]);
            let v = if derivative { dloss } else { loss };
            *o = g[i % g.len()] * w[i % w.len()] * v;
        }
    });
    T::into_storage(out)
}

/// The sum (or, with `mean`, the mean) of contiguous per-element values,
/// accumulated in f64 and rounded once to their dtype, as a 0-d tensor.
pub(super) fn total(values: &Tensor, mean: bool) -> Result<Tensor> {
    let guard = values.cpu_storage("sigmoid loss")?;
    let mut sum = with_compute_storage!(&*guard, |v: T| {
        let off = values.layout().offset();
        v[off..off + values.numel()]
            .iter()
            .map(|x| x.to_f64())
            .sum::<f64>()
    });
    if mean {
        sum /= values.numel() as f64; // NaN over zero elements, like `mean`
    }
    Tensor::from_storage(
        CpuStorage::from_f64_iter(values.dtype(), [sum].into_iter())?,
        &[],
    )
}
