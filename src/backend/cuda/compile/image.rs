//! What a compiled kernel family is handed to the driver as: a CUBIN (GPU
//! machine code for one architecture) or PTX (virtual assembly the driver
//! compiles at load time), and where it came from.

use crate::error::{Error, Result};

/// The format of a compiled module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Machine code for one GPU architecture (`nvrtcGetCUBIN`). Loads on
    /// any driver of the same CUDA major version, whatever NVRTC made it.
    Cubin,
    /// PTX (`nvrtcGetPTX`), compiled by the driver's JIT at load time. Only
    /// loads when the driver is at least as new as the NVRTC that wrote it.
    Ptx,
}

impl ImageFormat {
    /// `"cubin"` or `"ptx"` (also the file extension of cached modules).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Cubin => "cubin",
            ImageFormat::Ptx => "ptx",
        }
    }
}

/// The format to compile for a GPU of compute capability `(major, minor)`
/// when NVRTC targets `arch` (`"sm_XY"`, from
/// [`choose_arch`](super::choose_arch)): a CUBIN when it runs on that GPU
/// (same major version, minor not above the GPU's), PTX otherwise (NVRTC
/// does not know the GPU, so the driver's JIT must compile for it).
pub fn format_for(capability: (i32, i32), arch: &str) -> Result<ImageFormat> {
    let (major, minor) = arch_capability(arch)?;
    Ok(if major == capability.0 && minor <= capability.1 {
        ImageFormat::Cubin
    } else {
        ImageFormat::Ptx
    })
}

/// The compute capability `(major, minor)` of a target `"sm_XY"` (`sm_90`
/// is 9.0, `sm_120` is 12.0).
pub fn arch_capability(arch: &str) -> Result<(i32, i32)> {
    arch.strip_prefix("sm_")
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|&n| n >= 10)
        .map(|n| (n / 10, n % 10))
        .ok_or_else(|| {
            Error::invalid(
                "cuda::compile",
                format!("{arch:?} is not a GPU architecture of the form sm_XY (e.g. sm_90)"),
            )
        })
}

/// The target name of compute capability `(major, minor)`: `sm_<major><minor>`.
pub fn arch_name(capability: (i32, i32)) -> String {
    format!("sm_{}{}", capability.0, capability.1)
}

/// A compiled module, ready for `cuModuleLoadData`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleImage {
    /// CUBIN or PTX.
    pub format: ImageFormat,
    /// The CUBIN's bytes, or the PTX text (UTF-8, no trailing NUL).
    pub bytes: Vec<u8>,
}

impl ModuleImage {
    /// The image as cudarc's loadable type.
    pub fn to_loadable(&self) -> Result<cudarc::nvrtc::Ptx> {
        Ok(match self.format {
            ImageFormat::Cubin => cudarc::nvrtc::Ptx::from_binary(self.bytes.clone()),
            ImageFormat::Ptx => {
                let text = String::from_utf8(self.bytes.clone()).map_err(|_| {
                    Error::invalid("cuda::compile", "a PTX module is not valid UTF-8")
                })?;
                cudarc::nvrtc::Ptx::from_src(text)
            }
        })
    }
}

/// Where a loaded module came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// A prebuilt CUBIN from the bundle directory
    /// ([`BUNDLE_ENV`](super::bundle::BUNDLE_ENV)).
    Bundle,
    /// Compiled earlier in this process.
    ProcessCache,
    /// The on-disk cache ([`cache_dir`](super::cache_dir)).
    DiskCache,
    /// Compiled now by NVRTC.
    Nvrtc,
    /// The emulated GPU: the family was compiled as C++ into the binary.
    Emulator,
}

impl ModuleOrigin {
    /// The origin in words, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ModuleOrigin::Bundle => "prebuilt bundle",
            ModuleOrigin::ProcessCache => "process cache",
            ModuleOrigin::DiskCache => "disk cache",
            ModuleOrigin::Nvrtc => "compiled by NVRTC",
            ModuleOrigin::Emulator => "compiled as C++ into the binary",
        }
    }
}

/// How one kernel family was made available on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleLoad {
    /// The family (`kernels/<family>.cu`).
    pub family: String,
    /// The target it was built for (`sm_90`), or the emulator's.
    pub arch: String,
    /// CUBIN or PTX; `None` on the emulated GPU (C++).
    pub format: Option<ImageFormat>,
    /// Where it came from.
    pub origin: ModuleOrigin,
    /// Anything worth saying (e.g. why a bundle file was not used).
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubin_when_the_target_runs_on_the_gpu_ptx_otherwise() {
        assert_eq!(format_for((9, 0), "sm_90").unwrap(), ImageFormat::Cubin);
        assert_eq!(format_for((8, 9), "sm_86").unwrap(), ImageFormat::Cubin);
        assert_eq!(format_for((12, 1), "sm_120").unwrap(), ImageFormat::Cubin);
        // NVRTC too old for the GPU: PTX for the driver's JIT.
        assert_eq!(format_for((10, 0), "sm_90").unwrap(), ImageFormat::Ptx);
        // A newer minor than the GPU's would not run.
        assert_eq!(format_for((8, 0), "sm_86").unwrap(), ImageFormat::Ptx);
        assert!(format_for((9, 0), "compute_90").is_err());
        assert!(format_for((9, 0), "sm_x").is_err());
    }

    #[test]
    fn arch_names_round_trip() {
        assert_eq!(arch_capability("sm_90").unwrap(), (9, 0));
        assert_eq!(arch_capability("sm_120").unwrap(), (12, 0));
        assert_eq!(arch_capability("sm_89").unwrap(), (8, 9));
        assert_eq!(arch_name((9, 0)), "sm_90");
        assert_eq!(arch_name((12, 1)), "sm_121");
        assert!(arch_capability("sm_9").is_err());
    }

    #[test]
    fn ptx_images_must_be_text() {
        let bad = ModuleImage {
            format: ImageFormat::Ptx,
            bytes: vec![0xff, 0xfe],
        };
        assert!(bad.to_loadable().is_err());
        let cubin = ModuleImage {
            format: ImageFormat::Cubin,
            bytes: vec![0x7f, b'E', b'L', b'F'],
        };
        assert!(cubin.to_loadable().is_ok());
    }
}
