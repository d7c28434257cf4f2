//! The launch-limit check: loads every kernel family on a device and
//! compares each kernel's launch configuration (block size and dynamic
//! shared memory, from [`shapes`]) with what the device and the compiled
//! kernel allow (threads per block after register allocation and
//! `__launch_bounds__`, static + dynamic shared memory, registers per
//! block). Register spills (local memory) are reported as warnings.
//!
//! On a GPU the kernel figures come from `cuFuncGetAttribute` after the
//! module is compiled and loaded; on the emulated GPU the check confirms
//! that every kernel is in the binary and checks the launches against the
//! emulator's limits, with the per-kernel figures reported as unknown.
//! `ferrite cuda-check` prints the report (or its JSON).

pub mod shapes;

use super::compile::{ModuleLoad, FAMILIES};
use super::driver::{DeviceLimits, KernelAttributes};
use super::CudaDevice;
use serde_json::{json, Value};
use shapes::launch_shape;

/// The check of one kernel.
#[derive(Clone, Debug)]
pub struct KernelCheck {
    /// Its family (`kernels/<family>.cu`).
    pub family: String,
    /// The kernel's name.
    pub entry: String,
    /// The launch shape its launcher uses.
    pub shape: &'static str,
    /// The most threads per block that shape launches.
    pub block_threads: u32,
    /// Dynamic shared memory of its launches, bytes.
    pub dynamic_shared_bytes: u32,
    /// What the driver reports (`None` on the emulated GPU or when the
    /// kernel could not be loaded).
    pub attributes: Option<KernelAttributes>,
    /// Limits the launch exceeds: each one is a launch that would fail.
    pub problems: Vec<String>,
    /// Worth knowing, not failures (register spills).
    pub warnings: Vec<String>,
}

/// The outcome of [`check_launch_limits`].
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The device's name.
    pub device: String,
    /// The architecture kernels were built for.
    pub arch: String,
    /// Whether the device is the emulated GPU.
    pub emulated: bool,
    /// The device's limits.
    pub limits: Option<DeviceLimits>,
    /// How each family was loaded.
    pub modules: Vec<ModuleLoad>,
    /// Families or devices that failed outright (compile or load errors).
    pub errors: Vec<String>,
    /// Every kernel of every family that loaded.
    pub kernels: Vec<KernelCheck>,
}

impl CheckReport {
    /// True when every family loaded and no launch exceeds a limit.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.kernels.iter().all(|k| k.problems.is_empty())
    }

    /// The report as JSON (for the validation script).
    pub fn to_json(&self) -> Value {
        let limits = self.limits.as_ref().map(|l| {
            json!({
                "max_threads_per_block": l.max_threads_per_block,
                "max_dynamic_shared_bytes": l.max_dynamic_shared_bytes,
                "max_shared_per_block": l.max_shared_per_block,
                "registers_per_block": l.registers_per_block,
                "multiprocessors": l.multiprocessors,
                "total_memory_bytes": l.total_memory_bytes,
            })
        });
        let modules: Vec<Value> = self
            .modules
            .iter()
            .map(|m| {
                json!({
                    "family": m.family,
                    "arch": m.arch,
                    "format": m.format.map(|f| f.name()),
                    "origin": m.origin.name(),
                    "note": m.note,
                })
            })
            .collect();
        let kernels: Vec<Value> = self
            .kernels
            .iter()
            .map(|k| {
                let a = k.attributes.map(|a| {
                    json!({
                        "max_threads_per_block": a.max_threads_per_block,
                        "static_shared_bytes": a.static_shared_bytes,
                        "registers": a.registers,
                        "local_bytes": a.local_bytes,
                        "max_dynamic_shared_bytes": a.max_dynamic_shared_bytes,
                        "binary_version": a.binary_version,
                    })
                });
                json!({
                    "family": k.family,
                    "entry": k.entry,
                    "shape": k.shape,
                    "block_threads": k.block_threads,
                    "dynamic_shared_bytes": k.dynamic_shared_bytes,
                    "attributes": a,
                    "problems": k.problems,
                    "warnings": k.warnings,
                })
            })
            .collect();
        json!({
            "device": self.device,
            "arch": self.arch,
            "emulated": self.emulated,
            "passed": self.passed(),
            "limits": limits,
            "modules": modules,
            "errors": self.errors,
            "kernels": kernels,
        })
    }

    /// A human-readable summary: one line per family, then every problem
    /// and warning.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}): {} kernels in {} families, {}\n",
            self.device,
            self.arch,
            self.kernels.len(),
            self.modules.len(),
            if self.passed() { "PASSED" } else { "FAILED" }
        );
        for m in &self.modules {
            let format = m.format.map_or("C++", |f| f.name());
            let in_family = self.kernels.iter().filter(|k| k.family == m.family);
            let (mut regs, mut smem, mut count) = (0, 0, 0);
            for k in in_family {
                count += 1;
                if let Some(a) = k.attributes {
                    regs = regs.max(a.registers);
                    smem = smem.max(a.static_shared_bytes);
                }
            }
            let figures = if self.emulated {
                String::new()
            } else {
                format!(", max {regs} registers/thread, max {smem} B static shared")
            };
            s.push_str(&format!(
                "  {:<13} {format:<5} for {} ({}): {count} kernels{figures}",
                m.family,
                m.arch,
                m.origin.name()
            ));
            if let Some(note) = &m.note {
                s.push_str(&format!(" [{note}]"));
            }
            s.push('\n');
        }
        for e in &self.errors {
            s.push_str(&format!("  ERROR {e}\n"));
        }
        for k in &self.kernels {
            for p in &k.problems {
                s.push_str(&format!("  FAIL {}: {p}\n", k.entry));
            }
            for w in &k.warnings {
                s.push_str(&format!("  warning {}: {w}\n", k.entry));
            }
        }
        s
    }
}

/// Compares the launch of one kernel (`block_threads` threads, `dynamic`
/// bytes of dynamic shared memory) with the device's limits and, where
/// known, the compiled kernel's: the problems (launches that would fail)
/// and warnings.
pub fn compare(
    block_threads: u32,
    dynamic: u32,
    limits: &DeviceLimits,
    attributes: Option<&KernelAttributes>,
) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    if block_threads > limits.max_threads_per_block {
        problems.push(format!(
            "blocks of {block_threads} threads exceed the device's {} per block",
            limits.max_threads_per_block
        ));
    }
    if dynamic > limits.max_dynamic_shared_bytes {
        problems.push(format!(
            "{dynamic} B of dynamic shared memory exceed the device's {} B",
            limits.max_dynamic_shared_bytes
        ));
    }
    let Some(a) = attributes else {
        return (problems, warnings);
    };
    if block_threads > a.max_threads_per_block {
        problems.push(format!(
            "blocks of {block_threads} threads exceed the {} this kernel allows \
             ({} registers/thread or __launch_bounds__)",
            a.max_threads_per_block, a.registers
        ));
    }
    if dynamic > a.max_dynamic_shared_bytes {
        problems.push(format!(
            "{dynamic} B of dynamic shared memory exceed the kernel's {} B",
            a.max_dynamic_shared_bytes
        ));
    }
    if let Some(max) = limits.max_shared_per_block {
        let total = u64::from(a.static_shared_bytes) + u64::from(dynamic);
        if total > u64::from(max) {
            problems.push(format!(
                "{total} B of shared memory ({} B static) exceed the {max} B per block",
                a.static_shared_bytes
            ));
        }
    }
    if let Some(regs) = limits.registers_per_block {
        let needed = u64::from(a.registers) * u64::from(block_threads);
        if needed > u64::from(regs) {
            problems.push(format!(
                "{} registers × {block_threads} threads = {needed} exceed the {regs} per block",
                a.registers
            ));
        }
    }
    if a.local_bytes > 0 {
        warnings.push(format!(
            "{} B of local memory per thread (register spills or stack)",
            a.local_bytes
        ));
    }
    (problems, warnings)
}

/// Loads every kernel family on `dev` and checks every kernel's launch
/// configuration against the limits. Never fails: a family that does not
/// compile or load is recorded in [`CheckReport::errors`].
pub fn check_launch_limits(dev: &CudaDevice) -> CheckReport {
    let mut report = CheckReport {
        device: dev
            .name()
            .unwrap_or_else(|e| format!("(name unavailable: {e})")),
        arch: dev.arch().to_string(),
        emulated: dev.is_emulated(),
        limits: None,
        modules: Vec::new(),
        errors: Vec::new(),
        kernels: Vec::new(),
    };
    let limits = match dev.limits() {
        Ok(l) => l,
        Err(e) => {
            report.errors.push(format!("device limits: {e}"));
            return report;
        }
    };
    for family in FAMILIES {
        match dev.load_family(family.name) {
            Ok(load) => report.modules.push(load),
            Err(e) => {
                report
                    .errors
                    .push(format!("kernels/{}.cu: {e}", family.name));
                continue;
            }
        }
        for entry in family.entry_points() {
            let shape = launch_shape(family.name, &entry);
            let (_, block_threads) = shape.threads();
            let dynamic = shape.dynamic_shared_bytes();
            let attributes = match dev.kernel_attributes(family.name, &entry) {
                Ok(a) => a,
                Err(e) => {
                    report.errors.push(format!("{entry}: {e}"));
                    None
                }
            };
            let (problems, warnings) =
                compare(block_threads, dynamic, &limits, attributes.as_ref());
            report.kernels.push(KernelCheck {
                family: family.name.to_string(),
                entry,
                shape: shape.name(),
                block_threads,
                dynamic_shared_bytes: dynamic,
                attributes,
                problems,
                warnings,
            });
        }
    }
    report.limits = Some(limits);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> DeviceLimits {
        DeviceLimits {
            max_threads_per_block: 1024,
            max_dynamic_shared_bytes: 49152,
            max_shared_per_block: Some(49152),
            registers_per_block: Some(65536),
            multiprocessors: Some(132),
            total_memory_bytes: Some(80 << 30),
        }
    }

    fn kernel(max_threads: u32, regs: u32, smem: u32, local: u32) -> KernelAttributes {
        KernelAttributes {
            max_threads_per_block: max_threads,
            static_shared_bytes: smem,
            registers: regs,
            local_bytes: local,
            max_dynamic_shared_bytes: 49152 - smem,
            binary_version: 90,
        }
    }

    #[test]
    fn a_launch_within_every_limit_passes() {
        let (p, w) = compare(256, 0, &h100(), Some(&kernel(1024, 40, 8192, 0)));
        assert!(p.is_empty() && w.is_empty(), "{p:?} {w:?}");
    }

    #[test]
    fn each_exceeded_limit_is_a_problem() {
        // __launch_bounds__(256) kernel launched with 512 threads.
        let (p, _) = compare(512, 0, &h100(), Some(&kernel(256, 64, 0, 0)));
        assert!(
            p.iter().any(|m| m.contains("256 this kernel allows")),
            "{p:?}"
        );
        // 168 registers × 512 threads > 65536.
        let (p, _) = compare(512, 0, &h100(), Some(&kernel(1024, 168, 0, 0)));
        assert!(p.iter().any(|m| m.contains("registers")), "{p:?}");
        // Static + dynamic shared memory over 48 KiB.
        let (p, _) = compare(128, 16384, &h100(), Some(&kernel(1024, 32, 40000, 0)));
        assert!(p.iter().any(|m| m.contains("shared memory")), "{p:?}");
        // Over the device's threads per block, even without kernel figures.
        let (p, _) = compare(2048, 0, &h100(), None);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn spills_warn_and_the_emulator_refuses_dynamic_shared_memory() {
        let (p, w) = compare(256, 0, &h100(), Some(&kernel(1024, 255, 0, 64)));
        assert!(p.is_empty());
        assert!(w[0].contains("64 B of local memory"), "{w:?}");
        let (p, _) = compare(256, 1024, &DeviceLimits::emulated(), None);
        assert!(p[0].contains("dynamic shared memory"), "{p:?}");
        let (p, _) = compare(512, 0, &DeviceLimits::emulated(), None);
        assert!(p.is_empty());
    }
}
