//! [`CudaDevice`]: one device (a real GPU or the emulated one) behind its
//! [`Driver`], with its caching allocator, and the process-wide registry
//! that tensors use to find a device by ordinal.

use super::allocator::{AllocatorStats, CachingAllocator};
use super::buffer::{lock, CudaBuffer, DriverMemory, SharedAllocator};
use super::compile::ModuleLoad;
use super::driver::gpu::GpuDriver;
use super::driver::{
    pod_bytes, pod_bytes_mut, DeviceLimits, Driver, KernelArg, KernelAttributes, Pod,
};
use crate::error::{Error, Result};
use crate::ground::Device;
use cudarc::driver::LaunchConfig;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The environment variable that makes `Device::Cuda(n)` the emulated GPU
/// (`FERRITE_CUDA_EMULATE=1`; needs the `cuda-emulator` feature).
pub const EMULATE_ENV: &str = "FERRITE_CUDA_EMULATE";

/// An initialised device: its driver (one stream on which every kernel,
/// copy and allocation is ordered) and its caching allocator.
pub struct CudaDevice {
    ordinal: usize,
    driver: Arc<dyn Driver>,
    pool: SharedAllocator,
    transfers: TransferCounters,
    /// Identifies this device in each thread's queue of deferred checks.
    id: u64,
}

/// A check that a kernel made on the device (a one-element u64 flag it
/// lowered from `u64::MAX` when it found bad input), read at the next
/// download or synchronisation instead of at once.
struct DeferredCheck {
    device: u64,
    flag: CudaBuffer,
    report: Box<dyn FnOnce(u64) -> Error>,
}

thread_local! {
    /// The checks queued by this thread's ops, on every device: a failed
    /// check is reported to the thread whose op queued it, never to
    /// another thread that happens to download from the same device.
    static DEFERRED: std::cell::RefCell<Vec<DeferredCheck>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many copies between host and device a [`CudaDevice`] has made, and
/// how often the host waited for it: a training step that never downloads
/// lets the host queue work ahead of the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Host-to-device copies.
    pub uploads: u64,
    /// Bytes copied to the device.
    pub upload_bytes: u64,
    /// Device-to-host copies (each waits for the queued work).
    pub downloads: u64,
    /// Bytes copied to the host.
    pub download_bytes: u64,
    /// Explicit waits ([`CudaDevice::synchronize`]).
    pub synchronizations: u64,
}

#[derive(Default)]
struct TransferCounters {
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    synchronizations: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl CudaDevice {
    /// Opens device `ordinal`: the emulated GPU when the environment sets
    /// `FERRITE_CUDA_EMULATE=1` (see [`CudaDevice::emulated`]), otherwise
    /// the real GPU (see [`CudaDevice::gpu`]).
    pub fn new(ordinal: usize) -> Result<Self> {
        if emulation_requested() {
            Self::emulated(ordinal)
        } else {
            Self::gpu(ordinal)
        }
    }

    /// Opens real GPU `ordinal`. No driver, no GPU or no NVRTC is an
    /// [`Error::DeviceUnavailable`] saying why (never a panic).
    pub fn gpu(ordinal: usize) -> Result<Self> {
        Ok(Self::with_driver(
            ordinal,
            Arc::new(GpuDriver::new(ordinal)?),
        ))
    }

    /// Opens the emulated GPU `ordinal`: the same kernels, compiled as C++
    /// into this binary, run on the CPU (feature `cuda-emulator`).
    pub fn emulated(ordinal: usize) -> Result<Self> {
        #[cfg(feature = "cuda-emulator")]
        {
            use super::driver::emulated::EmulatedDriver;
            Ok(Self::with_driver(
                ordinal,
                Arc::new(EmulatedDriver::new(ordinal)),
            ))
        }
        #[cfg(not(feature = "cuda-emulator"))]
        Err(Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            msg: "the emulated GPU is not part of this build: build with \
                  `--features cuda-emulator`"
                .into(),
        })
    }

    fn with_driver(ordinal: usize, driver: Arc<dyn Driver>) -> Self {
        let pool = Arc::new(Mutex::new(CachingAllocator::new(DriverMemory::new(
            driver.clone(),
        ))));
        CudaDevice {
            ordinal,
            driver,
            pool,
            transfers: TransferCounters::default(),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        }
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device as a [`Device`] value.
    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> Result<String> {
        self.driver.name()
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.driver.compute_capability()
    }

    /// The target the kernels are compiled for, e.g. `"sm_90"`.
    pub fn arch(&self) -> &str {
        self.driver.arch()
    }

    /// True for the emulated GPU.
    pub fn is_emulated(&self) -> bool {
        self.driver.is_emulated()
    }

    /// Makes kernel family `family` ready to launch (on a GPU: compiled or
    /// taken from a bundle or cache, and loaded) and says how.
    pub fn load_family(&self, family: &str) -> Result<ModuleLoad> {
        self.driver.load_family(family)
    }

    /// The registers, shared memory and thread limit of kernel `entry` of
    /// `family` as the driver reports them (`None` on the emulated GPU).
    pub fn kernel_attributes(&self, family: &str, entry: &str) -> Result<Option<KernelAttributes>> {
        self.driver.kernel_attributes(family, entry)
    }

    /// The device's launch limits (threads and shared memory per block,
    /// registers, multiprocessors, memory).
    pub fn limits(&self) -> Result<DeviceLimits> {
        self.driver.limits()
    }

    /// Waits until every queued kernel and copy has finished.
    pub fn synchronize(&self) -> Result<()> {
        bump(&self.transfers.synchronizations, 1);
        self.driver.synchronize()?;
        self.check_deferred()
    }

    /// Queues a kernel's input check: `flag` holds `u64::MAX` unless the
    /// kernel found bad input, and `report(value)` then builds the error.
    /// The flag is read at this thread's next download from this device or
    /// [`synchronize`](Self::synchronize) (where the host waits for the
    /// device anyway) and the error is returned from that call, as CUDA
    /// reports a kernel's errors asynchronously. So an op with such a
    /// check (the sigmoid losses' target check) never makes the host wait
    /// for the GPU.
    pub fn defer_check(&self, flag: CudaBuffer, report: impl FnOnce(u64) -> Error + 'static) {
        DEFERRED.with(|q| {
            q.borrow_mut().push(DeferredCheck {
                device: self.id,
                flag,
                report: Box::new(report),
            })
        });
    }

    /// Reads every check this thread queued on this device (see
    /// [`defer_check`](Self::defer_check)): the first that failed is the
    /// error (the others are dropped).
    pub fn check_deferred(&self) -> Result<()> {
        let pending: Vec<DeferredCheck> = DEFERRED.with(|q| {
            let mut q = q.borrow_mut();
            let (mine, others) = std::mem::take(&mut *q)
                .into_iter()
                .partition(|c| c.device == self.id);
            *q = others;
            mine
        });
        let mut failed = None;
        for check in pending {
            let mut value = [0u64];
            self.driver
                .copy_dtoh(check.flag.ptr(), pod_bytes_mut(&mut value))?;
            if value[0] != u64::MAX && failed.is_none() {
                failed = Some((check.report, value[0]));
            }
        }
        // Reported once the queue is released: a report may download (the
        // value that failed), which reads the queue again.
        match failed {
            Some((report, value)) => Err(report(value)),
            None => Ok(()),
        }
    }

    /// The copies and waits so far (see [`TransferStats`]).
    pub fn transfer_stats(&self) -> TransferStats {
        let t = &self.transfers;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransferStats {
            uploads: read(&t.uploads),
            upload_bytes: read(&t.upload_bytes),
            downloads: read(&t.downloads),
            download_bytes: read(&t.download_bytes),
            synchronizations: read(&t.synchronizations),
        }
    }

    /// Queues kernel `entry` of `kernels/<family>.cu` with launch shape
    /// `cfg` (`None`: nothing to do) and arguments `args` (the parameter
    /// struct, then device pointers, in the kernel's order).
    pub fn launch(
        &self,
        family: &str,
        entry: &str,
        cfg: Option<LaunchConfig>,
        args: &[&dyn KernelArgRef],
    ) -> Result<()> {
        let Some(cfg) = cfg else { return Ok(()) };
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.bytes()).collect();
        self.driver.launch(family, entry, &cfg, &bytes)
    }

    /// An uninitialised buffer of `len_bytes` bytes from the caching
    /// allocator.
    pub fn alloc(&self, len_bytes: usize) -> Result<CudaBuffer> {
        CudaBuffer::allocate(&self.pool, len_bytes)
    }

    /// A buffer of `len_bytes` zero bytes.
    pub fn alloc_zeroed(&self, len_bytes: usize) -> Result<CudaBuffer> {
        let buf = self.alloc(len_bytes)?;
        self.driver.memset(buf.ptr(), 0, len_bytes)?;
        Ok(buf)
    }

    /// A buffer holding a copy of `host`.
    pub fn upload<T: Pod>(&self, host: &[T]) -> Result<CudaBuffer> {
        let mut buf = self.alloc(std::mem::size_of_val(host))?;
        self.write(&mut buf, host)?;
        Ok(buf)
    }

    /// Overwrites the start of `buf` with `host`.
    pub fn write<T: Pod>(&self, buf: &mut CudaBuffer, host: &[T]) -> Result<()> {
        buf.check_holds::<T>("CudaDevice::write", "the buffer", host.len())?;
        bump(&self.transfers.uploads, 1);
        bump(
            &self.transfers.upload_bytes,
            std::mem::size_of_val(host) as u64,
        );
        self.driver.copy_htod(buf.ptr(), pod_bytes(host))
    }

    /// The first `count` elements of `buf` as `T`, once every queued
    /// operation has finished.
    pub fn download<T: Pod>(&self, buf: &CudaBuffer, count: usize) -> Result<Vec<T>> {
        self.download_at(buf, 0, count)
    }

    /// Elements `start..start + count` of `buf` as `T`, once every queued
    /// operation has finished.
    pub fn download_at<T: Pod>(
        &self,
        buf: &CudaBuffer,
        start: usize,
        count: usize,
    ) -> Result<Vec<T>> {
        let end = start
            .checked_add(count)
            .ok_or_else(|| Error::invalid("CudaDevice::download", "the element range overflows"))?;
        buf.check_holds::<T>("CudaDevice::download", "the buffer", end)?;
        let mut host = crate::backend::cpu::pool::take_zeroed::<T>(count)?;
        let from = buf.ptr() + (start * std::mem::size_of::<T>()) as u64;
        bump(&self.transfers.downloads, 1);
        bump(
            &self.transfers.download_bytes,
            std::mem::size_of_val(&host[..]) as u64,
        );
        self.driver.copy_dtoh(from, pod_bytes_mut(&mut host))?;
        self.check_deferred()?;
        Ok(host)
    }

    /// A new buffer holding the first `bytes` bytes of `src`.
    pub fn duplicate(&self, src: &CudaBuffer, bytes: usize) -> Result<CudaBuffer> {
        src.check_bytes("CudaDevice::duplicate", "the source", bytes, 1)?;
        let dst = self.alloc(bytes)?;
        self.driver.copy_dtod(dst.ptr(), src.ptr(), bytes)?;
        Ok(dst)
    }

    /// Copies `bytes` bytes from device address `src` to `dst` (both
    /// inside buffers of this device that the caller checked).
    pub(crate) fn copy_on_device(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.driver.copy_dtod(dst, src, bytes)
    }

    /// The caching allocator's counters.
    pub fn memory_stats(&self) -> AllocatorStats {
        lock(&self.pool).stats()
    }

    /// Restarts the allocator's peak of bytes in use from the bytes in use
    /// now.
    pub fn reset_peak_memory(&self) {
        lock(&self.pool).reset_peak();
    }

    /// Frees every cached (unused) block back to the driver.
    pub fn empty_cache(&self) {
        lock(&self.pool).empty_cache();
    }
}

/// A kernel argument as the launch passes it: its bytes.
pub trait KernelArgRef {
    /// The argument's bytes.
    fn bytes(&self) -> &[u8];
}

impl<T: KernelArg> KernelArgRef for T {
    fn bytes(&self) -> &[u8] {
        self.arg_bytes()
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ordinal)
            .field("capability", &self.compute_capability())
            .field("arch", &self.arch())
            .field("emulated", &self.is_emulated())
            .finish()
    }
}

/// True when the environment asks for the emulated GPU.
pub fn emulation_requested() -> bool {
    std::env::var(EMULATE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The process-wide device `Device::Cuda(ordinal)`, opened on first use and
/// shared by every tensor on it. The first time the emulated GPU is opened
/// this way, a line on stderr says so.
pub fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(dev) = devices.get(&ordinal) {
        return Ok(dev.clone());
    }
    let dev = Arc::new(CudaDevice::new(ordinal)?);
    if dev.is_emulated() {
        eprintln!(
            "ferrite: cuda:{ordinal} is the emulated GPU ({EMULATE_ENV}=1): kernels run on the CPU"
        );
    }
    devices.insert(ordinal, dev.clone());
    Ok(dev)
}
