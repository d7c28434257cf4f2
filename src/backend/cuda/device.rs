//! [`CudaDevice`]: one GPU's context and stream, its compiled kernels and
//! its caching allocator.

use super::allocator::{AllocatorStats, CachingAllocator};
use super::buffer::{lock, CudaBuffer, DriverMemory, SharedAllocator};
use super::compile::{self, choose_arch, nvrtc_supported_archs};
use super::{device_count, driver_error, require_nvrtc, unavailable};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An initialised GPU: its primary context, one stream on which every
/// kernel, copy and allocation is ordered, the kernel modules compiled for
/// it so far, and its caching allocator.
///
/// Kernels are compiled per family (one `kernels/<family>.cu` file) the
/// first time one of them is needed, for the GPU's architecture, then
/// loaded once and kept; see [`compile`](super::compile) for the PTX caches.
pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    capability: (i32, i32),
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
    pool: SharedAllocator,
}

impl CudaDevice {
    /// Opens GPU `ordinal`: checks that the driver and NVRTC can be loaded
    /// and that the GPU exists, creates its context and stream, and picks
    /// the NVRTC target for its compute capability. Every failure is an
    /// [`Error::DeviceUnavailable`] saying why.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(unavailable(
                ordinal,
                format!("only {count} CUDA device(s) present"),
            ));
        }
        require_nvrtc(ordinal)?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(ordinal, "creating the context", e))?;
        let capability = ctx
            .compute_capability()
            .map_err(|e| driver_error(ordinal, "reading the compute capability", e))?;
        let arch = choose_arch(capability, &nvrtc_supported_archs()?)
            .map_err(|e| unavailable(ordinal, e.to_string()))?;
        let stream = ctx.default_stream();
        let pool = Arc::new(Mutex::new(CachingAllocator::new(DriverMemory::new(
            ordinal,
            stream.clone(),
        ))));
        Ok(CudaDevice {
            ordinal,
            ctx,
            stream,
            capability,
            arch,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            pool,
        })
    }

    /// The GPU's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> Result<String> {
        self.ctx
            .name()
            .map_err(|e| driver_error(self.ordinal, "reading the device name", e))
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    /// The NVRTC target the kernels are compiled for, e.g. `"sm_90"`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The underlying cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation of this device is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every queued kernel and copy has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error(self.ordinal, "synchronising the stream", e))
    }

    /// The kernel `entry` of family `family` (e.g. `("gemm",
    /// "gemm_fwd_f32")`), compiling and loading the family on first use.
    pub fn function(&self, family: &str, entry: &str) -> Result<CudaFunction> {
        let fam = compile::family(family)?;
        let key = (fam.name, entry.to_string());
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        if !fam.has_entry(entry) {
            return Err(Error::invalid(
                "CudaDevice::function",
                format!("kernels/{family}.cu defines no kernel {entry:?}"),
            ));
        }
        let module = self.module(fam)?;
        let f = module
            .load_function(entry)
            .map_err(|e| driver_error(self.ordinal, &format!("loading kernel {entry}"), e))?;
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// The loaded module of `family`, compiled (or read from the PTX cache)
    /// and loaded on first use.
    fn module(&self, family: &'static compile::KernelFamily) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(family.name) {
            return Ok(m.clone());
        }
        let ptx = compile::ptx(family, &self.arch)?;
        let module = self
            .ctx
            .load_module(Ptx::from_src(ptx.to_string()))
            .map_err(|e| {
                let hint = if format!("{e:?}").contains("UNSUPPORTED_PTX_VERSION") {
                    " (the PTX comes from an NVRTC newer than the driver: use the NVRTC of the \
                 driver's CUDA version)"
                } else {
                    ""
                };
                driver_error(
                    self.ordinal,
                    &format!("loading kernels/{}.cu for {}{hint}", family.name, self.arch),
                    e,
                )
            })?;
        modules.insert(family.name, module.clone());
        Ok(module)
    }

    /// An uninitialised buffer of `len_bytes` bytes from the caching
    /// allocator.
    pub fn alloc(&self, len_bytes: usize) -> Result<CudaBuffer> {
        CudaBuffer::allocate(&self.pool, len_bytes)
    }

    /// A buffer holding a copy of `host`.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaBuffer> {
        let bytes = std::mem::size_of_val(host);
        let mut buf = self.alloc(bytes)?;
        buf.write(&self.stream, self.ordinal, host)?;
        Ok(buf)
    }

    /// Overwrites the start of `buf` with `host`.
    pub fn write<T: DeviceRepr>(&self, buf: &mut CudaBuffer, host: &[T]) -> Result<()> {
        buf.write(&self.stream, self.ordinal, host)
    }

    /// The first `count` elements of `buf` as `T`, once every queued
    /// operation has finished.
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaBuffer,
        count: usize,
    ) -> Result<Vec<T>> {
        buf.read(&self.stream, self.ordinal, count)
    }

    /// The caching allocator's counters.
    pub fn memory_stats(&self) -> AllocatorStats {
        lock(&self.pool).stats()
    }

    /// Frees every cached (unused) block back to the driver.
    pub fn empty_cache(&self) {
        lock(&self.pool).empty_cache();
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ordinal)
            .field("capability", &self.capability)
            .field("arch", &self.arch)
            .finish()
    }
}
