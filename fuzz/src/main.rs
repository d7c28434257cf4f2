//! `ferrite-fuzz`: fuzz campaigns, replays and the seed corpus.
//!
//! ```text
//! ferrite-fuzz list
//! ferrite-fuzz run [TARGET..] [--time SECS] [--runs N] [--slow-runs N] [--seed N]
//!                  [--max-ops N] [--out DIR] [--findings DIR]
//! ferrite-fuzz replay [TARGET..]      corpus/ and regressions/, each input in a process
//! ferrite-fuzz exec TARGET FOLDER [--scratch DIR]   one input, under the guards
//! ferrite-fuzz seeds                  rewrite corpus/ with files ferrite writes
//! ```

use ferrite_fuzz::engine::{self, Options, Outcome};
use ferrite_fuzz::supervisor::{self, Campaign};
use ferrite_fuzz::targets::{self, Scratch, Target};
use ferrite_fuzz::{corpus, input, scratch_dir, seeds};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GUARD: ferrite_fuzz::guard::Guard = ferrite_fuzz::guard::Guard;

/// Command-line arguments: positional words and `--key value` options.
struct Args {
    words: Vec<String>,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut words = Vec::new();
        let mut options = Vec::new();
        let mut raw = raw.peekable();
        while let Some(a) = raw.next() {
            if let Some(key) = a.strip_prefix("--") {
                let value = raw.next().ok_or(format!("--{key} needs a value"))?;
                options.push((key.to_string(), value));
            } else {
                words.push(a);
            }
        }
        Ok(Args { words, options })
    }

    fn get<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.options.iter().rev().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, v)) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{key}: `{v}` is not a valid value")),
        }
    }

    fn check_keys(&self, allowed: &[&str]) -> Result<(), String> {
        match self
            .options
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }

    /// The targets named after the command (all when none is).
    fn targets(&self) -> Result<Vec<&'static Target>, String> {
        if self.words.len() <= 1 {
            return Ok(targets::all().iter().collect());
        }
        self.words[1..]
            .iter()
            .map(|n| targets::by_name(n).ok_or(format!("unknown target `{n}` (see `list`)")))
            .collect()
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let result = match args.words.first().map(String::as_str) {
        Some("list") => {
            for t in targets::all() {
                println!(
                    "{:<12} {}{}",
                    t.name,
                    t.about,
                    if t.slow { " [slow]" } else { "" }
                );
            }
            Ok(true)
        }
        Some("run") => run(&args),
        Some("replay") => replay(&args),
        Some("exec") => exec(&args),
        Some("worker") => worker(&args),
        Some("seeds") => write_seeds(),
        _ => return usage("expected a command"),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => usage(&e),
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("ferrite-fuzz: {msg}\n\nusage: ferrite-fuzz list | run [TARGET..] [--time SECS] [--runs N] \
               [--slow-runs N] [--seed N] [--max-ops N] [--out DIR] [--findings DIR] | replay [TARGET..] \
               | exec TARGET FOLDER | seeds");
    ExitCode::from(2)
}

/// A campaign over the named targets, one after the other.
fn run(args: &Args) -> Result<bool, String> {
    args.check_keys(&[
        "time",
        "runs",
        "slow-runs",
        "seed",
        "max-ops",
        "out",
        "findings",
    ])?;
    let time = args.get::<f64>("time")?.map(Duration::from_secs_f64);
    let runs = args.get::<u64>("runs")?;
    if time.is_none() && runs.is_none() {
        return Err("give a bound: --time SECS (per target) and/or --runs N".into());
    }
    let campaign = Campaign {
        seed: args.get("seed")?.unwrap_or(0),
        time,
        runs,
        slow_runs: args.get("slow-runs")?.or(runs),
        max_ops: args.get("max-ops")?.unwrap_or(8),
        out: args
            .get("out")?
            .unwrap_or_else(|| corpus::root().join("out")),
        findings: args
            .get("findings")?
            .unwrap_or_else(|| corpus::root().join("findings")),
    };
    let mut rows = Vec::new();
    for t in args.targets()? {
        println!("== {} ({})", t.name, t.about);
        let summary = supervisor::run_target(t, &campaign).map_err(|e| e.to_string())?;
        rows.push((t, summary));
    }
    let new = supervisor::print_summary(&rows);
    if new > 0 {
        println!(
            "\n{new} new failure(s); reproducers in {}",
            campaign.findings.display()
        );
    }
    Ok(new == 0)
}

/// The worker process of one target (started by `run`).
fn worker(args: &Args) -> Result<bool, String> {
    let target = *args.targets()?.first().ok_or("worker needs a target")?;
    engine::install_panic_hook();
    engine::start_time_guard(target.timeout);
    let out: PathBuf = args.get("out")?.ok_or("--out is required")?;
    let findings: PathBuf = args.get("findings")?.ok_or("--findings is required")?;
    let opts = Options {
        seed: args.get("seed")?.unwrap_or(0),
        time: args.get::<f64>("time")?.map(Duration::from_secs_f64),
        runs: args.get("runs")?,
        max_ops: args.get("max-ops")?.unwrap_or(8),
    };
    let dir = out.join(target.name);
    let scratch_path = args
        .get("scratch")?
        .unwrap_or_else(|| scratch_dir(target.name));
    let scratch = Scratch::new(scratch_path.clone()).map_err(|e| e.to_string())?;
    let mut seeds: Vec<_> = corpus::inputs(&corpus::corpus_dir(), target);
    // Fixed regressions are good seeds; open ones would mostly re-trigger
    // their known failure (and an abort restarts the worker).
    seeds.extend(
        corpus::inputs(&corpus::regressions_dir(), target)
            .into_iter()
            .filter(|(d, _)| !corpus::is_open(d)),
    );
    if seeds.is_empty() {
        return Err(format!("no seed in corpus/{}", target.name));
    }
    let places = engine::Places {
        scratch: &scratch,
        current: &dir.join("current"),
        findings: &findings,
        known: &corpus::known_open(target),
        saved: &corpus::signatures(&findings, target),
    };
    let stats_file = dir.join("stats.json");
    let mut progress = |s: &engine::Stats| {
        let _ = std::fs::write(&stats_file, supervisor::stats_json(s).to_string());
    };
    let corpus_inputs = seeds.into_iter().map(|(_, i)| i).collect();
    engine::fuzz(target, corpus_inputs, &places, &opts, &mut progress);
    let _ = std::fs::remove_dir_all(scratch_path);
    Ok(true)
}

/// Runs one input folder under the guards and prints what happened.
fn exec(args: &Args) -> Result<bool, String> {
    args.check_keys(&["scratch"])?;
    let (name, folder) = match &args.words[..] {
        [_, n, f] => (n, PathBuf::from(f)),
        _ => return Err("exec needs a target and an input folder".into()),
    };
    let target = targets::by_name(name).ok_or(format!("unknown target `{name}`"))?;
    let input = input::load(&folder, target.parts).map_err(|e| e.to_string())?;
    engine::install_panic_hook();
    engine::start_time_guard(target.timeout);
    let scratch_path = args.get("scratch")?.unwrap_or_else(|| scratch_dir("exec"));
    let scratch = Scratch::new(scratch_path.clone()).map_err(|e| e.to_string())?;
    let outcome = engine::execute(target, &scratch, &input);
    let _ = std::fs::remove_dir_all(scratch_path);
    match outcome {
        Outcome::Answer(v) => {
            println!("ok: {v:?}");
            Ok(true)
        }
        Outcome::Failed(f) => {
            println!("{}: {} — {}", f.kind, f.signature, f.detail);
            Ok(false)
        }
    }
}

/// Replays every committed input, each in a process of its own: seeds
/// must be accepted, regressions must not fail (unless marked open).
fn replay(args: &Args) -> Result<bool, String> {
    args.check_keys(&[])?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (mut failed, mut open, mut total) = (0, 0, 0);
    for t in args.targets()? {
        for base in [corpus::corpus_dir(), corpus::regressions_dir()] {
            for (dir, _) in corpus::inputs(&base, t) {
                total += 1;
                let scratch = scratch_dir(&format!("replay-{total}"));
                let out = std::process::Command::new(&exe)
                    .args(["exec", t.name])
                    .arg(&dir)
                    .arg("--scratch")
                    .arg(&scratch)
                    .env("RAYON_NUM_THREADS", "1")
                    .env("RUST_BACKTRACE", "0")
                    .output();
                let _ = std::fs::remove_dir_all(&scratch);
                let out = out.map_err(|e| e.to_string())?;
                let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let shown = dir
                    .strip_prefix(corpus::root())
                    .unwrap_or(&dir)
                    .display()
                    .to_string();
                let is_seed = base == corpus::corpus_dir();
                if is_seed && out.status.success() && said != "ok: Accepted" {
                    failed += 1;
                    println!("FAILED  {shown}: a seed must be a valid input, got {said}");
                    continue;
                }
                if out.status.success() {
                    if corpus::is_open(&dir) {
                        println!("FIXED   {shown}: passes now; delete its OPEN file");
                    }
                    continue;
                }
                let what = if said.is_empty() {
                    // Aborted: the guard's or the runtime's last words.
                    let err = String::from_utf8_lossy(&out.stderr);
                    let last = err
                        .lines()
                        .rev()
                        .find(|l| l.contains(" guard: "))
                        .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()));
                    format!("{} ({})", last.unwrap_or("no output"), out.status)
                } else {
                    said
                };
                if corpus::is_open(&dir) {
                    open += 1;
                    println!("open    {shown}: {what}");
                } else {
                    failed += 1;
                    println!("FAILED  {shown}: {what}");
                }
            }
        }
    }
    println!("replayed {total} inputs: {failed} failed, {open} open (fix pending)");
    Ok(failed == 0)
}

fn write_seeds() -> Result<bool, String> {
    let work = scratch_dir("seeds");
    let n = seeds::write_corpus(&corpus::corpus_dir(), &work).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(work);
    println!("wrote {n} seeds to {}", corpus::corpus_dir().display());
    Ok(true)
}
