//! `EmulatedDriver`: the [`Driver`] of the emulated GPU. Memory lives in the
//! emulator's guarded host allocations and kernels run synchronously on the
//! CPU (see [`Emulator`](crate::backend::cuda::emulator)), so every call
//! has completed when it returns.

use super::{DeviceLimits, DevicePtr, Driver, KernelAttributes};
use crate::backend::cuda::compile::{self, ModuleLoad, ModuleOrigin};
use crate::backend::cuda::emulator::Emulator;
use crate::error::{Error, Result};
use cudarc::driver::LaunchConfig;

/// The compute capability the emulated GPU reports: that of an H100/H200
/// (sm_90), so that every kernel, the tensor-core GEMMs included, runs.
pub const EMULATED_CAPABILITY: (i32, i32) = (9, 0);

/// The emulated GPU with ordinal `ordinal` (all ordinals share the one
/// process-wide emulator; only the number differs).
pub struct EmulatedDriver {
    ordinal: usize,
    emulator: &'static Emulator,
}

impl EmulatedDriver {
    /// The emulated GPU `ordinal`.
    pub fn new(ordinal: usize) -> Self {
        EmulatedDriver {
            ordinal,
            emulator: Emulator::global(),
        }
    }
}

impl Driver for EmulatedDriver {
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.emulator.alloc(bytes)
    }

    fn free(&self, ptr: DevicePtr) {
        // Freeing an address the emulator did not hand out is a bug in the
        // caching allocator; it cannot be reported from a destructor, and
        // the emulator's own checks keep memory safe either way.
        let _ = self.emulator.free(ptr);
    }

    fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        self.emulator.copy_htod(dst, src)
    }

    fn copy_dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.emulator.copy_dtoh(src, dst)
    }

    fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        self.emulator.copy_dtod(dst, src, bytes)
    }

    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()> {
        self.emulator.memset(dst, value, bytes)
    }

    fn launch(&self, family: &str, entry: &str, cfg: &LaunchConfig, args: &[&[u8]]) -> Result<()> {
        if !self.emulator.has_kernel(entry) {
            return Err(Error::cuda(
                entry,
                format!("the emulated GPU has no kernel {entry:?} (kernels/{family}.cu)"),
            ));
        }
        self.emulator.launch(
            entry,
            cfg.grid_dim,
            cfg.block_dim,
            cfg.shared_mem_bytes,
            args,
        )
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> Result<String> {
        Ok(format!(
            "emulated GPU {} (kernels run on the CPU)",
            self.ordinal
        ))
    }

    fn compute_capability(&self) -> (i32, i32) {
        EMULATED_CAPABILITY
    }

    fn arch(&self) -> &str {
        "emulated sm_90"
    }

    fn is_emulated(&self) -> bool {
        true
    }

    fn load_family(&self, family: &str) -> Result<ModuleLoad> {
        let fam = compile::family(family)?;
        let missing: Vec<String> = fam
            .entry_points()
            .into_iter()
            .filter(|e| !self.emulator.has_kernel(e))
            .collect();
        if !missing.is_empty() {
            return Err(Error::cuda(
                family,
                format!("the emulated GPU lacks kernels {missing:?} of kernels/{family}.cu"),
            ));
        }
        Ok(ModuleLoad {
            family: fam.name.to_string(),
            arch: self.arch().to_string(),
            format: None,
            origin: ModuleOrigin::Emulator,
            note: None,
        })
    }

    fn kernel_attributes(&self, family: &str, entry: &str) -> Result<Option<KernelAttributes>> {
        if !self.emulator.has_kernel(entry) || !compile::family(family)?.has_entry(entry) {
            return Err(Error::cuda(
                entry,
                format!("the emulated GPU has no kernel {entry:?} in kernels/{family}.cu"),
            ));
        }
        Ok(None)
    }

    fn limits(&self) -> Result<DeviceLimits> {
        Ok(DeviceLimits::emulated())
    }
}
