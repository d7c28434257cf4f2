//! Where a tensor's data lives.

/// A compute device, chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; kernels run on the CPU with rayon.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal (requires the `cuda` feature).
    Cuda(usize),
}
