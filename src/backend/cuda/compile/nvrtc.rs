//! NVRTC, the runtime compiler: its version, its targets, and the
//! compilation of one kernel family to PTX or to a CUBIN. Every call first
//! checks that `libnvrtc` can be loaded (cudarc would panic otherwise), and
//! every failure is an error carrying the compiler's log.

use super::image::{ImageFormat, ModuleImage};
use super::{nvrtc_options, KernelFamily};
use crate::backend::cuda::require_nvrtc;
use crate::error::{Error, Result};
use cudarc::nvrtc::sys;
use std::ffi::{c_char, CString};

/// The version `(major, minor)` of the loaded NVRTC.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc(0)?;
    let (mut major, mut minor) = (0, 0);
    // Safety: NVRTC is loadable (checked above); the call writes two ints.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(status, "nvrtcVersion")?;
    Ok((major, minor))
}

/// The targets the loaded NVRTC can compile for, as `10·major + minor`.
pub fn nvrtc_supported_archs() -> Result<Vec<i32>> {
    require_nvrtc(0)?;
    let mut count = 0;
    // Safety: NVRTC is loadable; the first call writes one int, the second
    // fills exactly `count` ints.
    let status = unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) };
    check(status, "nvrtcGetNumSupportedArchs")?;
    let mut archs = vec![0; count.max(0) as usize];
    let status = unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    check(status, "nvrtcGetSupportedArchs")?;
    Ok(archs)
}

fn check(status: sys::nvrtcResult, call: &str) -> Result<()> {
    if status == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::invalid(
            "nvrtc",
            format!("{call} failed: {status:?}"),
        ))
    }
}

/// An NVRTC program, destroyed on drop.
struct Program {
    handle: sys::nvrtcProgram,
    // NVRTC may keep pointers to the source and name until destruction.
    _source: CString,
    _name: CString,
}

impl Program {
    /// Creates the program of `family` (its full source, named
    /// `<family>.cu` in compiler messages).
    fn new(family: &KernelFamily) -> Result<Self> {
        let nul = |what: &str| {
            Error::invalid(
                "nvrtc",
                format!("kernels/{}.cu: the {what} contains a NUL byte", family.name),
            )
        };
        let source = CString::new(family.full_source()).map_err(|_| nul("source"))?;
        let name = CString::new(format!("{}.cu", family.name)).map_err(|_| nul("name"))?;
        let mut handle = std::ptr::null_mut();
        // Safety: both strings are NUL-terminated and outlive the program
        // (held in the struct); no headers are passed.
        let status = unsafe {
            sys::nvrtcCreateProgram(
                &mut handle,
                source.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        check(status, "nvrtcCreateProgram")?;
        Ok(Program {
            handle,
            _source: source,
            _name: name,
        })
    }

    /// Compiles with `options`; a failure carries the compiler's log.
    fn compile(&self, options: &[String]) -> Result<()> {
        let options: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid("nvrtc", "an NVRTC option contains a NUL byte"))?;
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        // Safety: the program is live; `pointers` holds `len` valid C strings.
        let status = unsafe {
            sys::nvrtcCompileProgram(self.handle, pointers.len() as i32, pointers.as_ptr())
        };
        if status == sys::nvrtcResult::NVRTC_SUCCESS {
            return Ok(());
        }
        let log = self.log().unwrap_or_else(|e| format!("(no log: {e})"));
        Err(Error::invalid("nvrtc", format!("{status:?}\n{log}")))
    }

    /// The compiler's log.
    fn log(&self) -> Result<String> {
        let bytes = self.output(
            "nvrtcGetProgramLog",
            sys::nvrtcGetProgramLogSize,
            sys::nvrtcGetProgramLog,
        )?;
        Ok(String::from_utf8_lossy(&text(bytes)).into_owned())
    }

    /// One output of the compiled program, through its size and copy
    /// calls, without a trailing NUL.
    fn output(
        &self,
        call: &str,
        size_of: unsafe fn(sys::nvrtcProgram, *mut usize) -> sys::nvrtcResult,
        copy: unsafe fn(sys::nvrtcProgram, *mut c_char) -> sys::nvrtcResult,
    ) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // Safety: the program is live; the call writes one usize.
        check(unsafe { size_of(self.handle, &mut size) }, call)?;
        let mut bytes = vec![0u8; size];
        if size > 0 {
            // Safety: `bytes` holds exactly the `size` bytes NVRTC writes.
            check(
                unsafe { copy(self.handle, bytes.as_mut_ptr().cast()) },
                call,
            )?;
        }
        // Text outputs (PTX, log) end with a NUL, which [`text`] strips;
        // a CUBIN's size is exact.
        Ok(bytes)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Safety: the handle came from nvrtcCreateProgram and is destroyed
        // once; a failure can only leak the program.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.handle) };
    }
}

/// Strips the NUL that ends NVRTC's text outputs.
fn text(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Compiles `family` for `arch` (`"sm_XY"`) into `format`, bypassing
/// every cache.
pub fn compile_image(
    family: &KernelFamily,
    arch: &str,
    format: ImageFormat,
) -> Result<ModuleImage> {
    require_nvrtc(0)?;
    let failed = |e: Error| {
        Error::invalid(
            "nvrtc",
            format!(
                "compiling kernels/{}.cu for {arch} failed: {}",
                family.name,
                e.to_string().trim_start_matches("nvrtc: ")
            ),
        )
    };
    let program = Program::new(family).map_err(failed)?;
    program
        .compile(&nvrtc_options(family, arch))
        .map_err(failed)?;
    let bytes = match format {
        ImageFormat::Ptx => text(
            program
                .output("nvrtcGetPTX", sys::nvrtcGetPTXSize, sys::nvrtcGetPTX)
                .map_err(failed)?,
        ),
        ImageFormat::Cubin => program
            .output("nvrtcGetCUBIN", sys::nvrtcGetCUBINSize, sys::nvrtcGetCUBIN)
            .map_err(failed)?,
    };
    if bytes.is_empty() {
        return Err(failed(Error::invalid(
            "nvrtc",
            format!("NVRTC produced no {} for {arch}", format.name()),
        )));
    }
    Ok(ModuleImage { format, bytes })
}

/// The PTX of `family` for `arch`, compiled by NVRTC, bypassing every
/// cache.
pub fn compile_uncached(family: &KernelFamily, arch: &str) -> Result<String> {
    let image = compile_image(family, arch, ImageFormat::Ptx)?;
    String::from_utf8(image.bytes)
        .map_err(|_| Error::invalid("nvrtc", "NVRTC produced PTX that is not UTF-8"))
}

/// The CUBIN of `family` for `arch` (a real architecture, `"sm_XY"`),
/// compiled by NVRTC, bypassing every cache.
pub fn compile_cubin(family: &KernelFamily, arch: &str) -> Result<Vec<u8>> {
    Ok(compile_image(family, arch, ImageFormat::Cubin)?.bytes)
}
