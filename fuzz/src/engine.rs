//! Running inputs: one execution under the guards ([`execute`]) and the
//! mutational loop of a worker process ([`fuzz`]).
//!
//! Feedback without instrumentation: an input joins the in-memory corpus
//! when it makes the reader answer something new — an error message not
//! seen before (numbers masked), or an acceptance — so the mutator keeps
//! building on inputs that got further into the reader.

use crate::guard;
use crate::input::{self, Input};
use crate::mutate;
use crate::rng::Rng;
use crate::targets::{Scratch, Target, Verdict};
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exit status of a worker stopped by the time guard.
pub const HANG_EXIT: i32 = 86;

/// A failure: a panic, a refused allocation, an accepted invalid input or
/// (seen from outside the worker) a hang or crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `panic`, `oversize`, `invalid`, `hang` or `crash`.
    pub kind: &'static str,
    /// What tells this failure apart from others (a panic's location, the
    /// function that asked for the memory, the violated check).
    pub signature: String,
    /// The message, size or details.
    pub detail: String,
}

/// The result of one execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The reader answered (accepted or rejected) without a failure.
    Answer(Verdict),
    /// Something went wrong.
    Failed(Failure),
}

static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Replaces the panic hook by one that records the location and message
/// (for [`execute`]) instead of printing them.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let (file, line, ours) = info.location().map_or_else(
            || ("unknown".to_string(), 0, false),
            |l| {
                let (file, ours) = short_path(l.file());
                (file, l.line(), ours)
            },
        );
        // A panic inside the standard library or a dependency says
        // little: add the ferrite function that called it.
        let location = if ours {
            format!("{file}:{line}")
        } else {
            format!("{file}:{line} in {}", guard::ferrite_frame())
        };
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut slot) = LAST_PANIC.lock() {
            slot.get_or_insert((location, msg));
        }
    }));
}

/// A source path without the machine-specific prefix (`src/…` for
/// ferrite's files, `library/…` for the standard library's,
/// `crate-version/src/…` for a dependency's), and whether it is ferrite's.
fn short_path(file: &str) -> (String, bool) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| format!("{}/", p.display()))
        .unwrap_or_default();
    if let Some(rest) = file.strip_prefix(&root) {
        return (rest.to_string(), rest.starts_with("src/"));
    }
    if let Some(i) = file.find("/library/") {
        return (file[i + 1..].to_string(), false);
    }
    if let Some(i) = file.find("/registry/src/") {
        let rest = &file[i + "/registry/src/".len()..];
        return (
            rest.split_once('/').map_or(rest, |(_, r)| r).to_string(),
            false,
        );
    }
    (file.to_string(), false)
}

/// Runs `target` on `input` once, catching panics and refused allocations.
pub fn execute(target: &Target, scratch: &Scratch, input: &Input) -> Outcome {
    let _ = guard::take_refused();
    if let Ok(mut slot) = LAST_PANIC.lock() {
        *slot = None;
    }
    mark_start(true);
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(scratch, input)));
    mark_start(false);
    if let Some(o) = guard::take_refused() {
        return Outcome::Failed(Failure {
            kind: "oversize",
            signature: format!("allocation over 1 GiB in {}", o.frame),
            detail: format!("{} bytes requested", o.bytes),
        });
    }
    match result {
        Ok(Verdict::Invalid(why, detail)) => Outcome::Failed(Failure {
            kind: "invalid",
            signature: why.to_string(),
            detail,
        }),
        Ok(v) => Outcome::Answer(v),
        Err(_) => {
            let (location, msg) = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| ("unknown".into(), String::new()));
            Outcome::Failed(Failure {
                kind: "panic",
                signature: format!("panic at {location}"),
                detail: msg,
            })
        }
    }
}

/// When the running execution started (milliseconds after
/// [`STARTED_EPOCH`], plus one), or 0 between executions.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static STARTED_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Starts the time guard: a thread that ends the process with
/// [`HANG_EXIT`] when one execution runs longer than `limit` (the input is
/// already on disk, see [`fuzz`]).
pub fn start_time_guard(limit: Duration) {
    let epoch = Instant::now();
    STARTED_EPOCH.get_or_init(|| epoch);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let started = STARTED_MS.load(Ordering::Relaxed);
        let now = STARTED_EPOCH
            .get()
            .map_or(0, |e| e.elapsed().as_millis() as u64 + 1);
        if started != 0 && now.saturating_sub(started) > limit.as_millis() as u64 {
            eprintln!("time guard: one execution ran longer than {limit:?}");
            std::process::exit(HANG_EXIT);
        }
    });
}

fn mark_start(running: bool) {
    let v = match (running, STARTED_EPOCH.get()) {
        (true, Some(e)) => e.elapsed().as_millis() as u64 + 1,
        _ => 0,
    };
    STARTED_MS.store(v, Ordering::Relaxed);
}

/// Bounds and settings of one worker's loop.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of every random choice.
    pub seed: u64,
    /// Stop after this long.
    pub time: Option<Duration>,
    /// Stop after this many executions.
    pub runs: Option<u64>,
    /// Most mutations stacked on one input.
    pub max_ops: usize,
}

/// What a worker did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Executions.
    pub execs: u64,
    /// Inputs the reader accepted.
    pub accepted: u64,
    /// Distinct answers (masked error messages, acceptance).
    pub answers: usize,
    /// Inputs in the corpus at the end.
    pub corpus: usize,
    /// Seconds spent.
    pub seconds: f64,
    /// Failures by signature: kind, count, and whether it is already a
    /// known (committed, open) regression.
    pub failures: BTreeMap<String, (String, u64, bool)>,
}

/// The stable part of an answer: an error message up to its first quote
/// (what follows often echoes the input), with numbers and paths masked,
/// so that the same error on other sizes or names counts once.
pub fn answer_key(v: &Verdict) -> String {
    match v {
        Verdict::Rejected(msg) => msg
            .split(['"', '`', '\''])
            .next()
            .unwrap_or("")
            .split(' ')
            .take(24)
            .map(|w| {
                if w.contains('/') {
                    "<path>"
                } else if w.chars().any(|c| c.is_ascii_digit()) {
                    "#"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}

/// Where a worker works.
pub struct Places<'a> {
    /// The target's scratch folder.
    pub scratch: &'a Scratch,
    /// The file holding the input being run (read back after a crash).
    pub current: &'a Path,
    /// Where new reproducers go.
    pub findings: &'a Path,
    /// Signatures of known (open) failures: counted, not saved again.
    pub known: &'a HashSet<String>,
    /// Signatures already saved in `findings` (by an earlier worker).
    pub saved: &'a HashSet<String>,
}

/// The mutational loop of one worker: mutates corpus inputs, runs them,
/// records failures as reproducers. While an input runs it is also in
/// `places.current`, so that a crash or hang can be reported from
/// outside. `progress` is called about once a second with the stats.
pub fn fuzz(
    target: &Target,
    mut corpus: Vec<Input>,
    places: &Places,
    opts: &Options,
    progress: &mut dyn FnMut(&Stats),
) -> Stats {
    let Places {
        scratch,
        current,
        findings,
        known,
        saved,
    } = *places;
    assert!(!corpus.is_empty(), "the corpus of {} is empty", target.name);
    let mut rng = Rng::new(opts.seed);
    let mut stats = Stats::default();
    let mut answers = HashSet::new();
    let start = Instant::now();
    let mut last_report = Instant::now();
    let current_file = std::fs::File::create(current).expect("creating the current-input file");
    loop {
        if opts.runs.is_some_and(|r| stats.execs >= r)
            || opts.time.is_some_and(|t| start.elapsed() >= t)
        {
            break;
        }
        let input = next_input(&mut rng, target, &corpus, opts.max_ops);
        write_current(&current_file, &input);
        let outcome = execute(target, scratch, &input);
        stats.execs += 1;
        match outcome {
            Outcome::Answer(v) => {
                if v == Verdict::Accepted {
                    stats.accepted += 1;
                }
                let fresh = answers.insert(answer_key(&v));
                let keep_accepted = v == Verdict::Accepted && rng.one_in(64);
                if (fresh || keep_accepted) && corpus.len() < 4096 {
                    corpus.push(input);
                }
            }
            Outcome::Failed(f) => {
                let is_known = known.contains(&f.signature);
                let entry = stats
                    .failures
                    .entry(f.signature.clone())
                    .or_insert_with(|| (f.kind.to_string(), 0, is_known));
                entry.1 += 1;
                if entry.1 == 1 && !is_known && !saved.contains(&f.signature) {
                    let dir = save_finding(findings, target, &input, &f, opts.seed, stats.execs);
                    println!(
                        "{}: {} — {} ({})",
                        target.name,
                        f.kind,
                        f.signature,
                        dir.display()
                    );
                }
            }
        }
        if stats.execs % 256 == 0 || last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            stats.seconds = start.elapsed().as_secs_f64();
            stats.answers = answers.len();
            stats.corpus = corpus.len();
            progress(&stats);
        }
    }
    stats.seconds = start.elapsed().as_secs_f64();
    stats.answers = answers.len();
    stats.corpus = corpus.len();
    progress(&stats);
    stats
}

/// A corpus input with one (sometimes two) of its files mutated.
fn next_input(rng: &mut Rng, target: &Target, corpus: &[Input], max_ops: usize) -> Input {
    let mut input = rng.pick(corpus).clone();
    let donor = rng.pick(corpus);
    let rounds = if input.len() > 1 && rng.one_in(8) {
        2
    } else {
        1
    };
    for _ in 0..rounds {
        let p = rng.below(input.len());
        let part = target.parts[p];
        mutate::mutate(
            rng,
            &mut input[p],
            part.kind,
            target.dictionary,
            donor.get(p).map(Vec::as_slice),
            max_ops,
        );
    }
    input
}

fn write_current(file: &std::fs::File, input: &Input) {
    use std::os::unix::fs::FileExt;
    let bundle = input::to_bundle(input);
    let _ = file.set_len(bundle.len() as u64);
    let _ = file.write_all_at(&bundle, 0);
}

/// Saves `input` as `findings/<target>/<hash>/` with a `NOTE.md` saying
/// what it triggers and how to replay it.
pub fn save_finding(
    findings: &Path,
    target: &Target,
    input: &Input,
    f: &Failure,
    seed: u64,
    execs: u64,
) -> PathBuf {
    let dir = findings.join(target.name).join(input::hash(input));
    if let Err(e) = input::save(&dir, target.parts, input) {
        eprintln!("cannot save a reproducer to {}: {e}", dir.display());
    }
    let note = format!(
        "# {} finding\n\nTarget: {}\nKind: {}\nSignature: {}\nDetail: {}\nFound: seed {seed}, execution {execs}\n\n\
         Replay: `cargo run --release -- exec {} <this folder>` (in fuzz/).\n",
        target.name,
        target.name,
        f.kind,
        f.signature,
        f.detail.replace('\n', " "),
        target.name,
    );
    let _ = std::fs::write(dir.join("NOTE.md"), note);
    dir
}
