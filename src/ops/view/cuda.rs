//! The device side of the view family: [`Tensor::cat`] on a CUDA device.
//! (Views themselves are layouts and need no kernel; compacting one is the
//! elementwise family's strided copy.)

use crate::error::Result;
use crate::ops::on_cuda::{operand, output};
use crate::tensor::Tensor;

/// Concatenation along `d` into a new tensor of `shape`: the concatenated
/// dim is moved first, where each (compacted) input is one contiguous block
/// copied device to device, and the result is moved back and compacted.
pub(super) fn cat(tensors: &[Tensor], d: usize, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "cat";
    let nd = shape.len();
    let order: Vec<isize> = std::iter::once(d)
        .chain((0..nd).filter(|&i| i != d))
        .map(|i| i as isize)
        .collect();
    let moved: Vec<usize> = order.iter().map(|&i| shape[i as usize]).collect();
    let first = operand(OP, &tensors[0])?;
    let (out, base) = output(OP, &first.dev, tensors[0].dtype(), &moved)?;
    let size = tensors[0].dtype().size_in_bytes();
    let mut at = 0usize;
    for t in tensors {
        let block = t.detach().permute(&order)?.contiguous()?;
        let src = operand(OP, &block)?;
        let bytes = block.numel() * size;
        let from = src.at(&block);
        src.dev.copy_on_device(base + at as u64, from, bytes)?;
        at += bytes;
    }
    // The inverse permutation puts `d` back in place.
    let mut inverse = vec![0isize; nd];
    for (i, &o) in order.iter().enumerate() {
        inverse[o as usize] = i as isize;
    }
    out.permute(&inverse)?.contiguous()
}
