//! The C entry points of the emulator library (`kernels/emulation/abi.cpp`,
//! compiled by build.rs) and safe wrappers around them.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};

extern "C" {
    #[cfg(test)]
    fn ferrite_emu_kernel_count() -> usize;
    #[cfg(test)]
    fn ferrite_emu_kernel_name(i: usize) -> *const c_char;
    fn ferrite_emu_kernel_info(
        name: *const c_char,
        n_args: *mut usize,
        arg_sizes: *mut *const usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn ferrite_emu_launch(
        name: *const c_char,
        grid: *const c_uint,
        block: *const c_uint,
        dynamic_shared_bytes: c_uint,
        args: *const *const c_void,
        arg_sizes: *const usize,
        n_args: usize,
        reverse: c_int,
        synchronised: *mut c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// The parameter sizes of kernel `name`, or `None` when the binary has no
/// such kernel.
pub(super) fn kernel_arg_sizes(name: &str) -> Option<Vec<usize>> {
    let cname = CString::new(name).ok()?;
    let mut n = 0usize;
    let mut sizes: *const usize = std::ptr::null();
    // Safety: `cname` is a valid C string; the out-pointers point to locals.
    let found = unsafe { ferrite_emu_kernel_info(cname.as_ptr(), &mut n, &mut sizes) };
    if found == 0 {
        return None;
    }
    if n == 0 {
        return Some(Vec::new());
    }
    // Safety: the runtime returns a pointer to a static array of `n` sizes
    // (the generated kernel table), valid for the life of the program.
    Some(unsafe { std::slice::from_raw_parts(sizes, n) }.to_vec())
}

/// The names of every kernel in the binary, family by family.
#[cfg(test)]
pub(super) fn kernel_names() -> Vec<String> {
    // Safety: no arguments; reads the static kernel tables.
    let count = unsafe { ferrite_emu_kernel_count() };
    (0..count)
        .filter_map(|i| {
            // Safety: `i` is below the count; the runtime returns a static
            // NUL-terminated name, or null past the end.
            let p = unsafe { ferrite_emu_kernel_name(i) };
            // Safety: non-null pointers are static C strings (see above).
            (!p.is_null()).then(|| {
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

/// Runs kernel `name` on the emulated GPU exactly as given (no clamping,
/// no memory checks): `Ok(synchronised)` or the runtime's message.
pub(super) fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[&[u8]],
    reverse: bool,
) -> Result<bool, String> {
    let cname = CString::new(name).map_err(|_| format!("no kernel named {name:?}"))?;
    let ptrs: Vec<*const c_void> = args.iter().map(|a| a.as_ptr().cast()).collect();
    let sizes: Vec<usize> = args.iter().map(|a| a.len()).collect();
    let mut synchronised: c_int = 0;
    let mut err = vec![0u8; 1024];
    // Safety: every pointer is valid for the call: the name is a C string,
    // grid and block hold 3 values, ptrs[i] points to sizes[i] readable
    // bytes (the runtime copies them before the kernel runs), and `err` is
    // a writable buffer of err.len() bytes. Device pointers inside the
    // arguments are checked by the caller to lie in live allocations.
    let rc = unsafe {
        ferrite_emu_launch(
            cname.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            shared_bytes,
            ptrs.as_ptr(),
            sizes.as_ptr(),
            args.len(),
            c_int::from(reverse),
            &mut synchronised,
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if rc == 0 {
        Ok(synchronised != 0)
    } else {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        Err(String::from_utf8_lossy(&err[..end]).into_owned())
    }
}
