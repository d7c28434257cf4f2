//! What a device and its compiled kernels allow: the limits that a launch
//! configuration must respect, as the driver reports them
//! (`cuDeviceGetAttribute`, `cuFuncGetAttribute`).

/// Limits of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most threads in one block.
    pub max_threads_per_block: u32,
    /// Most dynamic shared memory a launch may ask for without opting in
    /// (0 on the emulated GPU, which refuses it).
    pub max_dynamic_shared_bytes: u32,
    /// Most shared memory (static + dynamic) per block without opting in
    /// (`None`: not limited, the emulated GPU's `__shared__` arrays are
    /// host statics).
    pub max_shared_per_block: Option<u32>,
    /// 32-bit registers available to one block (`None`: the emulated GPU
    /// has no registers to count).
    pub registers_per_block: Option<u32>,
    /// Streaming multiprocessors (`None` on the emulated GPU).
    pub multiprocessors: Option<u32>,
    /// Device memory in bytes (`None` on the emulated GPU, whose memory is
    /// the host's).
    pub total_memory_bytes: Option<u64>,
}

impl DeviceLimits {
    /// The limits of the emulated GPU: blocks of at most 1024 threads, no
    /// dynamic shared memory, nothing else counted.
    pub fn emulated() -> Self {
        DeviceLimits {
            max_threads_per_block: 1024,
            max_dynamic_shared_bytes: 0,
            max_shared_per_block: None,
            registers_per_block: None,
            multiprocessors: None,
            total_memory_bytes: None,
        }
    }
}

/// Resources of one compiled kernel, as the driver reports them after
/// loading its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelAttributes {
    /// Most threads per block this kernel can be launched with (accounts
    /// for its registers and `__launch_bounds__`).
    pub max_threads_per_block: u32,
    /// Static `__shared__` memory per block, bytes.
    pub static_shared_bytes: u32,
    /// Registers per thread.
    pub registers: u32,
    /// Local memory per thread (register spills, stack), bytes.
    pub local_bytes: u32,
    /// Most dynamic shared memory a launch of it may ask for, bytes.
    pub max_dynamic_shared_bytes: u32,
    /// Architecture of the machine code, as `10·major + minor` (e.g. 90).
    pub binary_version: u32,
}
