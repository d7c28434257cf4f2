//! A checked launch on the emulated GPU: argument sizes, clamped grids,
//! guard zones and the race check (see the module docs of `emulator`).

use super::ffi;
use super::memory::Memory;
use crate::error::{Error, Result};

/// Default bound of each grid dimension (`FERRITE_EMULATOR_MAX_GRID`).
const DEFAULT_MAX_GRID: u32 = 3;

/// How launches are run and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchOptions {
    /// Each grid dimension is clamped to this many blocks (at least 1).
    pub max_grid: u32,
    /// Rerun launches that synchronised with reversed thread order and
    /// compare the results.
    pub race_check: bool,
}

impl LaunchOptions {
    /// The options from the environment: `FERRITE_EMULATOR_MAX_GRID` (a
    /// positive integer, default 3) and `FERRITE_EMULATOR_RACE_CHECK`
    /// (`0` turns the race check off; on by default).
    pub(crate) fn from_env() -> Self {
        let max_grid = std::env::var("FERRITE_EMULATOR_MAX_GRID")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&g| g > 0)
            .unwrap_or(DEFAULT_MAX_GRID);
        let race_check = std::env::var("FERRITE_EMULATOR_RACE_CHECK")
            .map(|v| v.trim() != "0")
            .unwrap_or(true);
        LaunchOptions {
            max_grid,
            race_check,
        }
    }
}

/// What a successful launch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchReport {
    /// The grid that ran (after clamping).
    pub grid: (u32, u32, u32),
    /// Whether any thread reached a barrier or warp collective.
    pub synchronised: bool,
    /// Whether the reversed-order run was made and matched.
    pub race_checked: bool,
}

/// An 8-byte argument that points into a live allocation.
struct PointerArg {
    /// Index of the argument.
    index: usize,
    /// The allocation's device pointer.
    key: u64,
    /// The argument's value (may point inside the allocation).
    value: u64,
}

/// The arguments of `args` that are device pointers into live allocations.
fn pointer_args(memory: &Memory, args: &[&[u8]]) -> Vec<PointerArg> {
    args.iter()
        .enumerate()
        .filter_map(|(index, a)| {
            let value = u64::from_ne_bytes(<[u8; 8]>::try_from(*a).ok()?);
            let key = memory.containing(value)?.ptr();
            Some(PointerArg { index, key, value })
        })
        .collect()
}

/// The pointer arguments that are the first to point into their
/// allocation (each allocation once, in argument order).
fn distinct(ptrs: &[PointerArg]) -> Vec<&PointerArg> {
    let mut firsts: Vec<&PointerArg> = Vec::new();
    for p in ptrs {
        if !firsts.iter().any(|q| q.key == p.key) {
            firsts.push(p);
        }
    }
    firsts
}

/// Copies of the contents of the allocations `keys`.
fn snapshot(memory: &mut Memory, keys: &[u64]) -> Vec<Vec<u8>> {
    keys.iter()
        .map(|&k| {
            memory
                .get_mut(k)
                .map(|a| a.contents().to_vec())
                .unwrap_or_default()
        })
        .collect()
}

/// Writes `saved` (from `snapshot`) back into the allocations `keys`.
fn restore(memory: &mut Memory, keys: &[u64], saved: &[Vec<u8>]) {
    for (&k, data) in keys.iter().zip(saved) {
        if let Some(a) = memory.get_mut(k) {
            a.contents_mut().copy_from_slice(data);
        }
    }
}

/// Checks (and repairs) the guard zones of every pointer argument's
/// allocation: an error names the argument and the offset written.
fn check_guards(memory: &mut Memory, name: &str, ptrs: &[PointerArg]) -> Result<()> {
    let mut first = None;
    for p in ptrs {
        let Some(a) = memory.get_mut(p.key) else {
            continue;
        };
        let len = a.len();
        if let Some(offset) = a.check_and_repair_guards() {
            first.get_or_insert((p, len, offset));
        }
    }
    match first {
        None => Ok(()),
        Some((p, len, offset)) => {
            let rel = offset - (p.value - p.key) as i64;
            Err(Error::cuda(
                name,
                format!(
                    "out-of-bounds write: argument {} points into a {len}-byte allocation and \
                     the kernel wrote its guard zone at byte offset {rel} from that pointer \
                     ({offset} from the allocation's start)",
                    p.index
                ),
            ))
        }
    }
}

/// Checks the argument count and sizes against the kernel's parameters.
fn check_args(name: &str, args: &[&[u8]]) -> Result<()> {
    let sizes = ffi::kernel_arg_sizes(name).ok_or_else(|| {
        Error::cuda(
            name,
            format!("no kernel named {name:?} in the emulated GPU (kernels/*.cu)"),
        )
    })?;
    if sizes.len() != args.len() {
        return Err(Error::cuda(
            name,
            format!(
                "{} arguments given, the kernel takes {}",
                args.len(),
                sizes.len()
            ),
        ));
    }
    for (i, (a, &want)) in args.iter().zip(&sizes).enumerate() {
        if a.len() != want {
            return Err(Error::cuda(
                name,
                format!(
                    "argument {i} has {} bytes, the kernel's parameter has {want}",
                    a.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Runs `name` with every check; `memory` is the locked memory table, so
/// no copy or free can run during the launch.
pub(super) fn run_checked(
    memory: &mut Memory,
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_bytes: u32,
    args: &[&[u8]],
    options: LaunchOptions,
) -> Result<LaunchReport> {
    check_args(name, args)?;
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return Err(Error::cuda(name, format!("empty grid {grid:?}")));
    }
    let bound = options.max_grid.max(1);
    let g = [grid.0.min(bound), grid.1.min(bound), grid.2.min(bound)];
    let b = [block.0, block.1, block.2];
    let ptrs = pointer_args(memory, args);
    let firsts = distinct(&ptrs);
    let keys: Vec<u64> = firsts.iter().map(|p| p.key).collect();
    let before = options.race_check.then(|| snapshot(memory, &keys));

    let run = |memory: &mut Memory, reverse: bool| -> Result<bool> {
        let synchronised = ffi::launch(name, g, b, shared_bytes, args, reverse)
            .map_err(|message| Error::cuda(name, message))?;
        check_guards(memory, name, &ptrs)?;
        Ok(synchronised)
    };
    let synchronised = run(memory, false)?;
    let mut report = LaunchReport {
        grid: (g[0], g[1], g[2]),
        synchronised,
        race_checked: false,
    };
    let Some(before) = before.filter(|_| synchronised) else {
        return Ok(report);
    };
    let forward = snapshot(memory, &keys);
    restore(memory, &keys, &before);
    let reversed = run(memory, true);
    let now = snapshot(memory, &keys);
    restore(memory, &keys, &forward);
    reversed?;
    for ((f, r), p) in forward.iter().zip(&now).zip(&firsts) {
        if let Some(byte) = f.iter().zip(r).position(|(x, y)| x != y) {
            let rel = byte as i64 - (p.value - p.key) as i64;
            return Err(Error::cuda(
                name,
                format!(
                    "race between barriers in kernel {name}: results depend on thread order; \
                     first difference in argument {} at byte {rel}",
                    p.index
                ),
            ));
        }
    }
    report.race_checked = true;
    Ok(report)
}
