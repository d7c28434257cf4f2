//! The emulated GPU (feature `cuda-emulator`): ferrite's CUDA kernels
//! compiled as C++ into the binary and run on the CPU, so that the whole
//! CUDA path can be tested without a GPU or CUDA toolkit.
//!
//! build.rs compiles every `kernels/*.cu` family (the same sources NVRTC
//! compiles, with `FERRITE_EMULATOR` selecting C++ equivalents of the
//! inline PTX) against the SIMT runtime of `kernels/emulation/`: each CUDA
//! thread is a fiber, blocks run one after the other on the launching
//! thread, and fibers switch only at barriers and warp collectives, in
//! ascending thread order. The runtime is strict: a barrier not reached by
//! every thread of the block, a warp collective not reached by all 32
//! lanes with the full mask, a `__trap()` or a misaligned vector load is an
//! error naming the kernel, never a hang or a crash.
//!
//! [`Emulator`] is the device: its memory (host allocations addressed by
//! their real addresses, so kernels dereference device pointers directly)
//! and launches. A launch is checked:
//! - argument count and sizes against the kernel's C++ parameters;
//! - **clamped grids**: each grid dimension is clamped to a small bound
//!   (3, or `FERRITE_EMULATOR_MAX_GRID`), so every grid-stride loop runs
//!   several iterations and the emulator stays fast. Kernels must therefore
//!   loop grid-stride over every grid dimension they use, as
//!   `src/backend/cuda/launch.rs` promises;
//! - **guard zones**: afterwards, the guard bytes around every allocation
//!   passed as an argument are checked, so an out-of-bounds write is an
//!   error naming the argument and the offset;
//! - **race check** (on unless `FERRITE_EMULATOR_RACE_CHECK=0`): a launch
//!   whose threads synchronised is run again from the same inputs with
//!   blocks and threads in reverse order; any difference in the results
//!   means they depend on thread order (a missing `__syncthreads`, a
//!   non-deterministic atomic) and is an error.

mod ffi;
mod launch;
mod memory;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use launch::{LaunchOptions, LaunchReport};

use crate::error::Result;
use memory::Memory;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The emulated GPU: its memory and the kernels compiled into the binary.
pub(crate) struct Emulator {
    /// Live allocations. Held for the whole of a launch, so copies, frees
    /// and launches from several threads are serialised.
    memory: Mutex<Memory>,
    /// How `launch` runs and checks kernels (from the environment).
    options: LaunchOptions,
}

impl Emulator {
    /// The process-wide emulator (options read from the environment once).
    pub(crate) fn global() -> &'static Emulator {
        static GLOBAL: OnceLock<Emulator> = OnceLock::new();
        GLOBAL.get_or_init(|| Emulator {
            memory: Mutex::new(Memory::default()),
            options: LaunchOptions::from_env(),
        })
    }

    /// The memory table, locked (a panic elsewhere cannot poison it for
    /// good: its invariants hold between any two operations).
    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A device pointer to `bytes` fresh bytes (filled with 0xFF so reading
    /// uninitialised memory shows NaN), with guard zones before and after.
    /// Pointers are 256-byte aligned.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<u64> {
        self.memory().alloc(bytes)
    }

    /// Frees an allocation made by `alloc` (unknown pointer: error).
    pub(crate) fn free(&self, ptr: u64) -> Result<()> {
        self.memory().free(ptr)
    }

    /// Copies `src` to device address `dst`; the range must lie inside one
    /// live allocation.
    pub(crate) fn copy_htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.memory().write(dst, src)
    }

    /// Copies device bytes at `src` into `dst`; the range must lie inside
    /// one live allocation.
    pub(crate) fn copy_dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.memory().read(src, dst)
    }

    /// Copies `bytes` bytes from device address `src` to `dst` (ranges may
    /// overlap; each must lie inside one live allocation).
    pub(crate) fn copy_dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.memory().copy(dst, src, bytes)
    }

    /// Sets `bytes` bytes at device address `dst` to `value`.
    pub(crate) fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        self.memory().fill(dst, value, bytes)
    }

    /// Runs kernel `name` like cuLaunchKernel: `args[i]` holds the bytes of
    /// the i-th argument (a by-value params struct, or an 8-byte device
    /// pointer). Checked and clamped as the module docs say, with the
    /// options from the environment.
    pub(crate) fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[&[u8]],
    ) -> Result<()> {
        self.launch_with(name, grid, block, shared_bytes, args, self.options)
            .map(|_| ())
    }

    /// `launch` with explicit options, reporting what ran.
    pub(crate) fn launch_with(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[&[u8]],
        options: LaunchOptions,
    ) -> Result<LaunchReport> {
        let mut memory = self.memory();
        launch::run_checked(&mut memory, name, grid, block, shared_bytes, args, options)
    }

    /// The options `launch` uses.
    #[cfg(test)]
    pub(crate) fn options(&self) -> LaunchOptions {
        self.options
    }

    /// Whether the binary holds kernel `name`.
    pub(crate) fn has_kernel(&self, name: &str) -> bool {
        ffi::kernel_arg_sizes(name).is_some()
    }

    /// The names of every kernel in the binary (the `kernels/*.cu`
    /// families and the emulator's self-test kernels).
    #[cfg(test)]
    pub(crate) fn kernel_names(&self) -> Vec<String> {
        ffi::kernel_names()
    }
}
