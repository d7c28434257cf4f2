//! [`GpuDriver`]: the [`Driver`] of a real NVIDIA GPU, through cudarc's
//! bindings of the CUDA driver API. Kernels are compiled per family on first
//! use (see [`compile`](crate::backend::cuda::compile): a CUBIN for the
//! GPU's architecture, PTX only when NVRTC does not know the GPU, or a
//! prebuilt CUBIN from a bundle) and loaded once.

use super::staging::{StagingRing, STAGING_THRESHOLD};
use super::{DeviceLimits, DevicePtr, Driver, KernelAttributes};
use crate::backend::cuda::compile::bundle::{bundle_dir, bundle_file_name, read_bundle};
use crate::backend::cuda::compile::image::arch_name;
use crate::backend::cuda::compile::{
    self, choose_arch, format_for, nvrtc_supported_archs, ImageFormat, KernelFamily, ModuleImage,
    ModuleLoad, ModuleOrigin,
};
use crate::backend::cuda::{
    device_count, driver_error, nvrtc_available, require_nvrtc, unavailable,
};
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// A loaded kernel and the most threads per block it can be launched with.
#[derive(Clone)]
struct Kernel {
    function: CudaFunction,
    max_threads: u32,
}

/// One GPU's primary context, the one stream every call is ordered on, and
/// the kernel modules loaded so far.
pub struct GpuDriver {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    capability: (i32, i32),
    /// The NVRTC target (the GPU's own architecture when NVRTC knows it).
    arch: String,
    /// What NVRTC compiles to for this GPU.
    format: ImageFormat,
    modules: Mutex<HashMap<&'static str, (Arc<CudaModule>, ModuleLoad)>>,
    kernels: Mutex<HashMap<(&'static str, String), Kernel>>,
    /// Pinned buffers that large uploads go through, so they never wait.
    staging: Mutex<StagingRing>,
}

impl Drop for GpuDriver {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            let ring = self.staging.get_mut().unwrap_or_else(|e| e.into_inner());
            // Safety: the context is current.
            unsafe { ring.release() };
        }
    }
}

impl GpuDriver {
    /// Opens GPU `ordinal`: checks that the driver can be loaded and that
    /// the GPU exists, creates its context and stream, and picks the NVRTC
    /// target and module format for its compute capability. NVRTC is
    /// required unless a CUBIN bundle is configured (then modules missing
    /// from the bundle fail to load with a message saying so). Every
    /// failure is an [`Error::DeviceUnavailable`] saying why.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(unavailable(
                ordinal,
                format!("only {count} CUDA device(s) present"),
            ));
        }
        if bundle_dir().is_none() {
            require_nvrtc(ordinal)?;
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(ordinal, "creating the context", e))?;
        // One stream, and the caching allocator orders reuse on it: cudarc's
        // per-buffer event tracking would only add work.
        // Safety: every buffer of this device is used on its one stream.
        unsafe { ctx.disable_event_tracking() };
        let capability = ctx
            .compute_capability()
            .map_err(|e| driver_error(ordinal, "reading the compute capability", e))?;
        let (arch, format) = if nvrtc_available() {
            let arch = choose_arch(capability, &nvrtc_supported_archs()?)
                .map_err(|e| unavailable(ordinal, e.to_string()))?;
            let format = format_for(capability, &arch)?;
            if format == ImageFormat::Ptx {
                eprintln!(
                    "ferrite: cuda:{ordinal}: NVRTC cannot build machine code for this GPU ({}); \
                     loading PTX for {arch}, compiled by the driver's JIT",
                    arch_name(capability)
                );
            }
            (arch, format)
        } else {
            (arch_name(capability), ImageFormat::Cubin)
        };
        let stream = ctx.default_stream();
        Ok(GpuDriver {
            ordinal,
            ctx,
            stream,
            capability,
            arch,
            format,
            modules: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            staging: Mutex::new(StagingRing::default()),
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
    fn kernel(&self, family: &str, entry: &str) -> Result<Kernel> {
        let fam = compile::family(family)?;
        let key = (fam.name, entry.to_string());
        if let Some(k) = lock(&self.kernels).get(&key) {
            return Ok(k.clone());
        }
        if !fam.has_entry(entry) {
            return Err(Error::cuda(
                entry,
                format!("kernels/{family}.cu defines no such kernel"),
            ));
        }
        let module = self.module(fam)?;
        let function = module
            .load_function(entry)
            .map_err(|e| driver_error(self.ordinal, &format!("loading kernel {entry}"), e))?;
        let max_threads = self.attribute(
            &function,
            entry,
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        )?;
        let kernel = Kernel {
            function,
            max_threads,
        };
        lock(&self.kernels).insert(key, kernel.clone());
        Ok(kernel)
    }

    /// One attribute of a loaded kernel.
    fn attribute(&self, f: &CudaFunction, entry: &str, which: CUfunction_attribute) -> Result<u32> {
        // Safety: `f` is a live function of a loaded module.
        let value = unsafe { result::function::get_function_attribute(f.cu_function(), which) }
            .map_err(|e| driver_error(self.ordinal, &format!("reading {which:?} of {entry}"), e))?;
        Ok(value.max(0) as u32)
    }

    /// The loaded module of `family`: a matching CUBIN from the bundle when
    /// one is configured, else compiled (or read from the caches) and
    /// loaded on first use.
    fn module(&self, family: &'static KernelFamily) -> Result<Arc<CudaModule>> {
        let mut modules = lock(&self.modules);
        if let Some((m, _)) = modules.get(family.name) {
            return Ok(m.clone());
        }
        let own = arch_name(self.capability);
        let mut note = None;
        if let Some(dir) = bundle_dir() {
            let file = bundle_file_name(family, &own);
            match read_bundle(&dir, family, &own) {
                Ok(Some(cubin)) => {
                    let image = ModuleImage {
                        format: ImageFormat::Cubin,
                        bytes: cubin,
                    };
                    match self.load_image(family, &own, &image) {
                        Ok(module) => {
                            let load = ModuleLoad {
                                family: family.name.to_string(),
                                arch: own,
                                format: Some(ImageFormat::Cubin),
                                origin: ModuleOrigin::Bundle,
                                note: None,
                            };
                            modules.insert(family.name, (module.clone(), load));
                            return Ok(module);
                        }
                        Err(e) => note = Some(format!("the bundle's {file} did not load ({e})")),
                    }
                }
                Ok(None) => note = Some(format!("{} has no {file}", dir.display())),
                Err(e) => note = Some(e.to_string()),
            }
        }
        let (image, origin) =
            compile::image(family, &self.arch, self.format).map_err(|e| match &note {
                Some(n) => unavailable(self.ordinal, format!("{n}, and compiling failed: {e}")),
                None => e,
            })?;
        let module = self.load_image(family, &self.arch, &image)?;
        let load = ModuleLoad {
            family: family.name.to_string(),
            arch: self.arch.clone(),
            format: Some(image.format),
            origin,
            note,
        };
        modules.insert(family.name, (module.clone(), load));
        Ok(module)
    }

    /// Loads `image` (built for `arch`) into the context.
    fn load_image(
        &self,
        family: &KernelFamily,
        arch: &str,
        image: &ModuleImage,
    ) -> Result<Arc<CudaModule>> {
        self.ctx.load_module(image.to_loadable()?).map_err(|e| {
            let hint = if format!("{e:?}").contains("UNSUPPORTED_PTX_VERSION") {
                " (the PTX comes from an NVRTC newer than the driver: use the NVRTC of the \
                 driver's CUDA version, or a CUBIN)"
            } else {
                ""
            };
            driver_error(
                self.ordinal,
                &format!(
                    "loading kernels/{}.cu ({} for {arch}){hint}",
                    family.name,
                    image.format.name()
                ),
                e,
            )
        })
    }

    /// A device attribute as a non-negative number.
    fn device_attribute(&self, which: CUdevice_attribute) -> Result<u32> {
        self.ctx
            .attribute(which)
            .map(|v| v.max(0) as u32)
            .map_err(|e| driver_error(self.ordinal, &format!("reading {which:?}"), e))
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
        let stream = self.stream.cu_stream();
        let copied = if src.len() >= STAGING_THRESHOLD {
            // Safety: callers check that `dst` holds `src.len()` bytes; the
            // context is current and `stream` is its stream. The bytes are
            // copied into a pinned buffer, so `src` may be dropped at once.
            let mut ring = self.staging.lock().unwrap_or_else(|e| e.into_inner());
            unsafe { ring.upload(dst, src, stream) }
        } else {
            // Safety: as above; small pageable copies are staged by the
            // driver before the call returns, so `src` may be dropped.
            unsafe { result::memcpy_htod_async(dst, src, stream) }
        };
        copied.map_err(|e| driver_error(self.ordinal, "copying to the device", e))
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
        let kernel = self.kernel(family, entry)?;
        let (bx, by, bz) = cfg.block_dim;
        let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
        if threads > u64::from(kernel.max_threads) {
            return Err(Error::cuda(
                entry,
                format!(
                    "a block of {threads} threads exceeds the {} this kernel allows on GPU {} \
                     (its registers or __launch_bounds__)",
                    kernel.max_threads, self.ordinal
                ),
            ));
        }
        let f = kernel.function;
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

    fn load_family(&self, family: &str) -> Result<ModuleLoad> {
        let fam = compile::family(family)?;
        self.module(fam)?;
        let modules = lock(&self.modules);
        let (_, load) = modules
            .get(fam.name)
            .ok_or_else(|| Error::cuda(family, "the module vanished after loading"))?;
        Ok(load.clone())
    }

    fn kernel_attributes(&self, family: &str, entry: &str) -> Result<Option<KernelAttributes>> {
        let kernel = self.kernel(family, entry)?;
        let f = &kernel.function;
        use CUfunction_attribute as A;
        Ok(Some(KernelAttributes {
            max_threads_per_block: kernel.max_threads,
            static_shared_bytes: self.attribute(
                f,
                entry,
                A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
            )?,
            registers: self.attribute(f, entry, A::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
            local_bytes: self.attribute(f, entry, A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
            max_dynamic_shared_bytes: self.attribute(
                f,
                entry,
                A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            )?,
            binary_version: self.attribute(f, entry, A::CU_FUNC_ATTRIBUTE_BINARY_VERSION)?,
        }))
    }

    fn limits(&self) -> Result<DeviceLimits> {
        use CUdevice_attribute as A;
        let shared = self.device_attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?;
        let total = self
            .ctx
            .total_mem()
            .map_err(|e| driver_error(self.ordinal, "reading the memory size", e))?;
        Ok(DeviceLimits {
            max_threads_per_block: self
                .device_attribute(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_dynamic_shared_bytes: shared,
            max_shared_per_block: Some(shared),
            registers_per_block: Some(
                self.device_attribute(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?,
            ),
            multiprocessors: Some(
                self.device_attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            ),
            total_memory_bytes: Some(total as u64),
        })
    }
}
