//! A per-op profiler: where the time of a forward/backward step goes.
//!
//! [`profile`] runs a closure and returns, next to its result, the wall time
//! spent in each op the closure called on this thread, with forward ops,
//! backward rules and in-place updates apart:
//!
//! ```
//! use ferrite::{profile, DType, Tensor};
//! # fn main() -> ferrite::Result<()> {
//! let x = Tensor::ones(&[64, 64], DType::F32)?.requires_grad_(true);
//! let (grads, report) = profile::profile(|| x.matmul(&x)?.relu()?.sum_all()?.backward());
//! grads?;
//! assert!(report.entries.iter().any(|e| e.name == "matmul"));
//! println!("{report}"); // a Markdown table, slowest first
//! # Ok(())
//! # }
//! ```
//!
//! How it measures: every op that computes (all but the pure views such as
//! `reshape` or `permute`) opens a scope on entry, in-place updates
//! (`assign`, optimizer steps) open an update scope, and the backward pass
//! opens one around each node's rule, the seeding of the output gradient
//! and each accumulation of gradients. Only the outermost scope on the
//! thread is timed, so an op built from other ops (`linear` calls `matmul`
//! and `add`) counts once, under its own name, with everything it called;
//! a backward rule counts under its op's name with [`Phase::Backward`],
//! with the ops it ran. Time outside any op (module glue, the closure's own
//! code) is reported as the difference between the wall time and the ops'
//! sum.
//!
//! Profiling is off unless a [`profile`] call is running on the thread, and
//! then only that thread's ops are recorded: nothing is global, and the cost
//! when off is one thread-local flag read per op.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Which pass an entry was measured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The op itself, as the program called it.
    Forward,
    /// The op's backward rule, run by `Tensor::backward` (also the
    /// seeding and accumulation of gradients there).
    Backward,
    /// An in-place update outside the graph (`assign`, optimizer steps).
    Update,
}

/// Time spent in one op during a [`profile`] call.
#[derive(Clone, Debug)]
pub struct ProfileEntry {
    /// The op's name (`"conv2d"`, `"batch_norm"`, `"add"`, ...).
    pub name: &'static str,
    /// Forward call, backward rule or in-place update.
    pub phase: Phase,
    /// How many times it ran.
    pub calls: u64,
    /// Total wall time over all calls.
    pub total: Duration,
}

/// The result of a [`profile`] call: per-op times and the wall time of the
/// whole closure.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Wall time of the profiled closure.
    pub wall: Duration,
    /// One entry per (op, phase), slowest first.
    pub entries: Vec<ProfileEntry>,
}

impl Profile {
    /// Sum of the entries' times: the part of `wall` spent inside ops.
    pub fn in_ops(&self) -> Duration {
        self.entries.iter().map(|e| e.total).sum()
    }

    /// Total time of the entries in `phase`.
    pub fn phase_total(&self, phase: Phase) -> Duration {
        self.entries
            .iter()
            .filter(|e| e.phase == phase)
            .map(|e| e.total)
            .sum()
    }

    /// Divides every time and call count by `n` (a profile of `n` identical
    /// steps becomes the profile of an average step; counts round down).
    pub fn per_step(mut self, n: u32) -> Profile {
        let n = n.max(1);
        self.wall /= n;
        for e in &mut self.entries {
            e.total /= n;
            e.calls /= u64::from(n);
        }
        self
    }
}

impl fmt::Display for Profile {
    /// A Markdown table, slowest op first, with the share of the wall time,
    /// then the forward/backward split and the time outside ops.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = self.wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall;
        writeln!(f, "| op | pass | calls | total | % of wall |")?;
        writeln!(f, "|---|---|---:|---:|---:|")?;
        for e in &self.entries {
            let pass = match e.phase {
                Phase::Forward => "forward",
                Phase::Backward => "backward",
                Phase::Update => "update",
            };
            writeln!(
                f,
                "| {} | {pass} | {} | {:.2} ms | {:.1} % |",
                e.name,
                e.calls,
                ms(e.total),
                pct(e.total)
            )?;
        }
        let (fwd, bwd, upd) = (
            self.phase_total(Phase::Forward),
            self.phase_total(Phase::Backward),
            self.phase_total(Phase::Update),
        );
        let outside = self.wall.saturating_sub(self.in_ops());
        writeln!(
            f,
            "\nwall {:.1} ms: forward ops {:.1} ms ({:.0} %), backward {:.1} ms ({:.0} %), \
             updates {:.1} ms ({:.0} %), outside ops {:.1} ms ({:.0} %)",
            ms(self.wall),
            ms(fwd),
            pct(fwd),
            ms(bwd),
            pct(bwd),
            ms(upd),
            pct(upd),
            ms(outside),
            pct(outside)
        )
    }
}

/// What a running [`profile`] call has collected on this thread.
#[derive(Default)]
struct Collector {
    totals: HashMap<(&'static str, Phase), (u64, Duration)>,
}

thread_local! {
    /// Whether a [`profile`] call is running on this thread.
    static PROFILING: Cell<bool> = const { Cell::new(false) };
    static COLLECTOR: RefCell<Option<Collector>> = const { RefCell::new(None) };
    /// Whether a scope is already open on this thread (only the outermost
    /// one is timed).
    static IN_SCOPE: Cell<bool> = const { Cell::new(false) };
}

/// True while a [`profile`] call is running on this thread.
pub fn is_profiling() -> bool {
    PROFILING.with(|p| p.get())
}

/// Runs `f` with profiling on for this thread and returns its result with
/// the per-op times. A `profile` nested inside another collects the inner
/// closure's ops on its own; the outer one sees that time as outside ops.
///
/// ```
/// use ferrite::{profile, DType, Tensor};
/// let x = Tensor::ones(&[32, 32], DType::F32)?;
/// let (y, report) = profile::profile(|| x.matmul(&x)?.exp());
/// assert_eq!(y?.shape(), &[32, 32]);
/// let names: Vec<&str> = report.entries.iter().map(|e| e.name).collect();
/// assert!(names.contains(&"matmul") && names.contains(&"exp"), "{names:?}");
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn profile<R>(f: impl FnOnce() -> R) -> (R, Profile) {
    let saved = SavedState {
        collector: COLLECTOR.with(|c| c.replace(Some(Collector::default()))),
        profiling: PROFILING.with(|p| p.replace(true)),
        in_scope: IN_SCOPE.with(|s| s.replace(false)),
    };
    let start = Instant::now();
    let result = f();
    let wall = start.elapsed();
    let collected = COLLECTOR.with(|c| c.take()).unwrap_or_default();
    drop(saved);
    let mut entries: Vec<ProfileEntry> = collected
        .totals
        .into_iter()
        .map(|((name, phase), (calls, total))| ProfileEntry {
            name,
            phase,
            calls,
            total,
        })
        .collect();
    entries.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then((a.name, a.phase).cmp(&(b.name, b.phase)))
    });
    (result, Profile { wall, entries })
}

/// The thread's profiling state before a [`profile`] call, put back when
/// the call ends (also if its closure panics).
struct SavedState {
    collector: Option<Collector>,
    profiling: bool,
    in_scope: bool,
}

impl Drop for SavedState {
    fn drop(&mut self) {
        COLLECTOR.with(|c| *c.borrow_mut() = self.collector.take());
        PROFILING.with(|p| p.set(self.profiling));
        IN_SCOPE.with(|s| s.set(self.in_scope));
    }
}

/// Times the code until the guard drops as a call of op `name`, when a
/// [`profile`] is running on this thread and no other scope is open;
/// otherwise does nothing.
pub(crate) fn scope(name: &'static str) -> Scope {
    Scope::open(name, Phase::Forward)
}

/// Like [`scope`], for the backward rule of op `name` (or other work of
/// the backward pass).
pub(crate) fn backward_scope(name: &'static str) -> Scope {
    Scope::open(name, Phase::Backward)
}

/// Like [`scope`], for an in-place update named `name`.
pub(crate) fn update_scope(name: &'static str) -> Scope {
    Scope::open(name, Phase::Update)
}

/// An open profiling scope (see [`scope`]); records its time on drop.
pub(crate) struct Scope {
    timed: Option<(&'static str, Phase, Instant)>,
}

impl Scope {
    fn open(name: &'static str, phase: Phase) -> Scope {
        if !is_profiling() || IN_SCOPE.with(|s| s.replace(true)) {
            return Scope { timed: None };
        }
        Scope {
            timed: Some((name, phase, Instant::now())),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some((name, phase, start)) = self.timed else {
            return;
        };
        let elapsed = start.elapsed();
        IN_SCOPE.with(|s| s.set(false));
        COLLECTOR.with(|c| {
            if let Some(collector) = c.borrow_mut().as_mut() {
                let entry = collector.totals.entry((name, phase)).or_default();
                entry.0 += 1;
                entry.1 += elapsed;
            }
        });
    }
}
