//! Build script. It records the git commit ferrite is built from (see
//! the `git` module; `unknown` outside a checkout or without git) for
//! `ferrite::provenance`. With the `cuda-emulator` feature on, it also
//! compiles the CUDA kernels as C++ for the emulated GPU
//! (`src/backend/cuda/emulator`), which needs a C++17 compiler but no CUDA
//! toolkit.
//!
//! For every `kernels/*.cu` family (found by listing the directory) and the
//! emulator's own `kernels/emulation/selftest.cu`, one translation unit is
//! generated: the SIMT runtime header, `common.cuh`, the family source, and
//! a table of the family's kernels. The kernel names come from running the
//! preprocessor over `common.cuh` + the family (without the runtime header,
//! so `__global__` stays visible) and finding every
//! `extern "C" __global__ void [__launch_bounds__(...)] NAME(`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    git::record_commit();
    #[cfg(feature = "cuda-emulator")]
    if std::env::var_os("CARGO_FEATURE_CUDA_EMULATOR").is_some() {
        emulator::build();
    }
}

/// The git commit of the source tree, as the environment variable
/// `FERRITE_GIT_COMMIT` of the crate: 40 hex digits, or `unknown` when git
/// is missing or the tree is not a checkout (e.g. a crates.io download).
mod git {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Sets `FERRITE_GIT_COMMIT` and asks cargo to run the script again
    /// when `HEAD` moves: a checkout or commit changes `HEAD` or the branch
    /// it names (loose ref or `packed-refs`). Only existing files are
    /// watched: a missing one would make cargo rerun the script every time.
    pub fn record_commit() {
        let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
        let commit = git(&root, &["rev-parse", "HEAD"])
            .filter(|c| c.len() == 40 && c.chars().all(|x| x.is_ascii_hexdigit()))
            .unwrap_or_else(|| "unknown".to_string());
        println!("cargo:rustc-env=FERRITE_GIT_COMMIT={commit}");
        if commit == "unknown" {
            return;
        }
        let dir = |arg: &str| git(&root, &["rev-parse", arg]).map(|d| root.join(d));
        let mut watched = Vec::new();
        if let Some(git_dir) = dir("--git-dir") {
            watched.push(git_dir.join("HEAD"));
        }
        if let Some(common) = dir("--git-common-dir") {
            if let Some(branch) = git(&root, &["symbolic-ref", "-q", "HEAD"]) {
                // A branch only in `packed-refs` gets a loose file at its
                // next commit: watch the folder it will appear in.
                let loose = common.join(branch);
                if loose.exists() {
                    watched.push(loose);
                } else {
                    watched.extend(loose.parent().map(Path::to_path_buf));
                }
            }
            watched.push(common.join("packed-refs"));
        }
        for path in watched.iter().filter(|p| Path::exists(p)) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    /// The trimmed output of `git args` run in `dir`, when it succeeds.
    fn git(dir: &Path, args: &[&str]) -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    }
}

#[cfg(feature = "cuda-emulator")]
mod emulator {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    /// The runtime sources compiled once, beside the generated units.
    const RUNTIME_SOURCES: &[&str] = &["abi.cpp", "fiber.cpp", "scheduler.cpp"];

    /// One family: its name (the file stem) and source path.
    struct Family {
        name: String,
        path: PathBuf,
    }

    /// Generates and compiles the emulator library `ferrite_emu`.
    pub fn build() {
        let root = PathBuf::from(env("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env("OUT_DIR"));
        let kernels = root.join("kernels");
        let emulation = kernels.join("emulation");
        println!("cargo:rerun-if-changed={}", kernels.display());

        let mut families = list_families(&kernels);
        families.push(Family {
            name: "selftest".into(),
            path: emulation.join("selftest.cu"),
        });
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut units = Vec::new();
        for f in &families {
            let names = kernel_names(&kernels, f, &out);
            for n in &names {
                if let Some(other) = seen.insert(n.clone(), f.name.clone()) {
                    panic!("kernel {n} is defined in both {other}.cu and {}.cu", f.name);
                }
            }
            let unit = out.join(format!("emu_{}.cpp", ident(&f.name)));
            write(&unit, &family_unit(&kernels, f, &names));
            units.push(unit);
        }
        let registry = out.join("emu_registry.cpp");
        write(&registry, &registry_unit(&emulation, &families));
        units.push(registry);

        let mut build = compiler();
        build.include(&emulation);
        for s in RUNTIME_SOURCES {
            build.file(emulation.join(s));
        }
        build.files(&units);
        if let Err(e) = build.try_compile("ferrite_emu") {
            panic!("compiling the kernels for the emulated GPU failed: {e}");
        }
    }

    /// A C++17 compiler set up like the emulator needs: -O2, every float
    /// operation rounded separately (-ffp-contract=off, as NVRTC's
    /// --fmad=false), no strict aliasing (the kernels reinterpret shared
    /// memory), and no warnings (the CUDA code uses pragmas and idioms a
    /// host compiler warns about; errors still fail the build).
    fn compiler() -> cc::Build {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(2)
            .debug(false)
            .warnings(false)
            .flag("-ffp-contract=off")
            .flag("-fno-strict-aliasing")
            .flag("-w")
            .define("FERRITE_EMULATOR", "1");
        b
    }

    /// Every `kernels/*.cu` file, sorted by name.
    fn list_families(kernels: &Path) -> Vec<Family> {
        let dir = std::fs::read_dir(kernels)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", kernels.display()));
        let mut families: Vec<Family> = dir
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .map(|path| Family {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                path,
            })
            .collect();
        families.sort_by(|a, b| a.name.cmp(&b.name));
        families
    }

    /// The kernels of `family`: preprocesses common.cuh + the family and
    /// scans the result for `extern "C" __global__` definitions.
    fn kernel_names(kernels: &Path, family: &Family, out: &Path) -> Vec<String> {
        let probe = out.join(format!("names_{}.cpp", ident(&family.name)));
        write(
            &probe,
            &format!(
                "#include \"{}\"\n#include \"{}\"\n",
                kernels.join("common.cuh").display(),
                family.path.display()
            ),
        );
        let expanded = compiler()
            .file(&probe)
            .try_expand()
            .unwrap_or_else(|e| panic!("preprocessing {} failed: {e}", family.path.display()));
        // Line markers (`# 12 "file"`) may split a declaration: drop them.
        let text: String = String::from_utf8_lossy(&expanded)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        scan_kernels(&text)
    }

    /// Names of `extern "C" __global__ void [__launch_bounds__(...)] NAME(`
    /// in preprocessed text.
    fn scan_kernels(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("extern \"C\"") {
            rest = &rest[at + "extern \"C\"".len()..];
            let mut s = rest.trim_start();
            let Some(t) = s.strip_prefix("__global__") else {
                continue;
            };
            let Some(t) = t.trim_start().strip_prefix("void") else {
                continue;
            };
            s = t.trim_start();
            if let Some(t) = s.strip_prefix("__launch_bounds__") {
                let t = t.trim_start();
                let Some(close) = balanced(t) else { continue };
                s = t[close..].trim_start();
            }
            let len = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if len > 0 && s[len..].trim_start().starts_with('(') {
                names.push(s[..len].to_string());
            }
        }
        names
    }

    /// The index just past the parenthesis closing the one `s` starts with.
    fn balanced(s: &str) -> Option<usize> {
        let mut depth = 0usize;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ if depth == 0 => return None,
                _ => {}
            }
        }
        None
    }

    /// The translation unit of one family: runtime, prelude, source (in an
    /// unnamed namespace, so helpers of different families never clash),
    /// then the kernel table `ferrite_emu::family_<name>`.
    fn family_unit(kernels: &Path, family: &Family, names: &[String]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "// Generated by build.rs for {}.", family.path.display());
        let _ = writeln!(s, "#include \"runtime.h\"\nnamespace {{");
        let _ = writeln!(s, "#include \"{}\"", kernels.join("common.cuh").display());
        let _ = writeln!(s, "#include \"{}\"", family.path.display());
        if names.is_empty() {
            let _ = writeln!(
                s,
                "const ::ferrite_emu::KernelEntry* const kEntries = nullptr;"
            );
        } else {
            let _ = writeln!(s, "const ::ferrite_emu::KernelEntry kEntries[] = {{");
            for n in names {
                let _ = writeln!(s, "    FERRITE_EMU_KERNEL({n}),");
            }
            let _ = writeln!(s, "}};");
        }
        let _ = writeln!(s, "}}  // namespace");
        let id = ident(&family.name);
        let _ = writeln!(
            s,
            "namespace ferrite_emu {{\nextern const KernelTable family_{id};\n\
             const KernelTable family_{id} = {{\"{}\", kEntries, {}}};\n}}",
            family.name,
            names.len()
        );
        s
    }

    /// The list of every family's table (`ferrite_emu::kFamilies`).
    fn registry_unit(emulation: &Path, families: &[Family]) -> String {
        let mut s = format!(
            "// Generated by build.rs.\n#include \"{}\"\nnamespace ferrite_emu {{\n",
            emulation.join("scheduler.h").display()
        );
        for f in families {
            let _ = writeln!(s, "extern const KernelTable family_{};", ident(&f.name));
        }
        let _ = writeln!(s, "extern const KernelTable* const kFamilies[] = {{");
        for f in families {
            let _ = writeln!(s, "    &family_{},", ident(&f.name));
        }
        let _ = writeln!(
            s,
            "}};\nextern const size_t kFamilyCount = {};\n}}",
            families.len()
        );
        s
    }

    /// `name` as a C identifier (other characters become `_`).
    fn ident(name: &str) -> String {
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    }

    /// Writes `text` to `path` unless it already holds exactly that (so an
    /// unchanged unit keeps its timestamp).
    fn write(path: &Path, text: &str) {
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return;
        }
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// An environment variable cargo always sets for build scripts.
    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
    }
}
