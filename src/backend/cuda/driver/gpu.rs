//! [`GpuDriver`]: the [`Driver`] of a real NVIDIA GPU, through cudarc's
//! bindings of the CUDA driver API. Kernels are compiled by NVRTC per family
//! on first use (see [`compile`](crate::backend::cuda::compile)) and loaded
//! once.

use super::{DevicePtr, Driver};
use crate::backend::cuda::compile::{self, choose_arch, nvrtc_supported_archs};
use crate::backend::cuda::{device_count, driver_error, require_nvrtc, unavailable};
use crate::error::{Error, Result};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// One GPU's primary context, the one stream every call is ordered on, and
/// the kernel modules loaded so far.
pub struct GpuDriver {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    capability: (i32, i32),
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
}

impl GpuDriver {
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
        // One stream, and the caching allocator orders reuse on it: cudarc's
        // per-buffer event tracking would only add work.
        // Safety: every buffer of this device is used on its one stream.
        unsafe { ctx.disable_event_tracking() };
        let capability = ctx
            .compute_capability()
            .map_err(|e| driver_error(ordinal, "reading the compute capability", e))?;
        let arch = choose_arch(capability, &nvrtc_supported_archs()?)
            .map_err(|e| unavailable(ordinal, e.to_string()))?;
        let stream = ctx.default_stream();
        Ok(GpuDriver {
            ordinal,
            ctx,
            stream,
            capability,
            arch,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the context current on the calling thread (raw driver calls
    /// act on the current context).
    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| driver_error(self.ordinal, "binding the context", e))
    }

    /// The kernel `entry` of `family`, compiling and loading the family on
    /// first use.
    fn function(&self, family: &str, entry: &str) -> Result<CudaFunction> {
        let fam = compile::family(family)?;
        let key = (fam.name, entry.to_string());
        if let Some(f) = lock(&self.functions).get(&key) {
            return Ok(f.clone());
        }
        if !fam.has_entry(entry) {
            return Err(Error::cuda(
                entry,
                format!("kernels/{family}.cu defines no such kernel"),
            ));
        }
        let module = self.module(fam)?;
        let f = module
            .load_function(entry)
            .map_err(|e| driver_error(self.ordinal, &format!("loading kernel {entry}"), e))?;
        lock(&self.functions).insert(key, f.clone());
        Ok(f)
    }

    /// The loaded module of `family`, compiled (or read from the PTX cache)
    /// and loaded on first use.
    fn module(&self, family: &'static compile::KernelFamily) -> Result<Arc<CudaModule>> {
        let mut modules = lock(&self.modules);
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
}

/// Locks `m`, taking over a poisoned lock (the maps stay consistent: every
/// update is one insert).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Driver for GpuDriver {
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        // Safety: the stream belongs to the bound context; the memory is
        // uninitialised and every user writes before reading.
        unsafe { result::malloc_async(self.stream.cu_stream(), bytes.max(1)) }
            .map_err(|e| driver_error(self.ordinal, &format!("allocating {bytes} bytes"), e))
    }

    fn free(&self, ptr: DevicePtr) {
        if self.bind().is_ok() {
            // Safety: `ptr` came from `alloc` on this stream and is freed
            // once (the caching allocator owns it). A failure here can only
            // leak the block.
            let _ = unsafe { result::free_async(ptr, self.stream.cu_stream()) };
        }
    }

    fn copy_htod(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // Safety: callers check that `dst` holds `src.len()` bytes. `src` is
        // pageable memory, which the driver stages before the call returns
        // (CUDA's "API synchronization behavior"), so it may be dropped
        // right after.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| driver_error(self.ordinal, "copying to the device", e))
    }

    fn copy_dtoh(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // Safety: callers check that `src` holds `dst.len()` bytes; the
        // synchronisation below completes the copy before `dst` is read.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| driver_error(self.ordinal, "copying to the host", e))?;
        self.synchronize()
    }

    fn copy_dtod(&self, dst: DevicePtr, src: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // Safety: callers check both ranges.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| driver_error(self.ordinal, "copying on the device", e))
    }

    fn memset(&self, dst: DevicePtr, value: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // Safety: callers check the range.
        unsafe { result::memset_d8_async(dst, value, bytes, self.stream.cu_stream()) }
            .map_err(|e| driver_error(self.ordinal, "setting device memory", e))
    }

    fn launch(&self, family: &str, entry: &str, cfg: &LaunchConfig, args: &[&[u8]]) -> Result<()> {
        let f = self.function(family, entry)?;
        self.bind()?;
        // cuLaunchKernel reads each argument through a pointer to its bytes
        // while it queues the launch (before returning).
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.as_ptr() as *mut c_void).collect();
        // Safety: the launchers build `args` from the kernel's signature in
        // kernels/<family>.cu (parameter struct by value, then device
        // pointers to buffers they checked), and the driver copies the
        // argument bytes before returning.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| {
            Error::cuda(
                entry,
                format!("launch failed on GPU {}: {e:?}", self.ordinal),
            )
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error(self.ordinal, "synchronising the stream", e))
    }

    fn name(&self) -> Result<String> {
        self.ctx
            .name()
            .map_err(|e| driver_error(self.ordinal, "reading the device name", e))
    }

    fn compute_capability(&self) -> (i32, i32) {
        self.capability
    }

    fn arch(&self) -> &str {
        &self.arch
    }

    fn is_emulated(&self) -> bool {
        false
    }
}
