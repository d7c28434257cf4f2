//! Campaigns: each target fuzzed in a worker process of its own, so that
//! an abort (an infallible allocation the guard refused, a stack
//! overflow), a crash or a hang stops one worker, not the campaign. The
//! worker leaves the input it was running in `<out>/<target>/current`;
//! the supervisor saves it as a reproducer and starts a new worker on the
//! remaining budget.

use crate::corpus;
use crate::engine::{save_finding, Failure, Stats, HANG_EXIT};
use crate::input;
use crate::targets::Target;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds of a campaign, per target.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// Base seed (each target and restart derives its own).
    pub seed: u64,
    /// Time per target.
    pub time: Option<Duration>,
    /// Executions per target (fast targets).
    pub runs: Option<u64>,
    /// Executions per slow (whole-run) target.
    pub slow_runs: Option<u64>,
    /// Most mutations stacked on one input.
    pub max_ops: usize,
    /// Working folder (`current` inputs, logs, stats).
    pub out: PathBuf,
    /// Where new reproducers go.
    pub findings: PathBuf,
}

/// The summary of one target's campaign.
#[derive(Clone, Debug, Default)]
pub struct TargetSummary {
    /// Totals over the target's workers.
    pub stats: Stats,
    /// Workers that ended in a crash or hang.
    pub restarts: u32,
    /// Wall-clock seconds, restarts included.
    pub wall: f64,
}

/// Stats as the worker writes them to `stats.json`.
pub fn stats_json(s: &Stats) -> Value {
    let failures: Vec<Value> = s
        .failures
        .iter()
        .map(|(sig, (kind, n, known))| json!({"signature": sig, "kind": kind, "count": n, "known": known}))
        .collect();
    json!({"execs": s.execs, "accepted": s.accepted, "answers": s.answers,
           "corpus": s.corpus, "seconds": s.seconds, "failures": failures})
}

fn stats_from_json(v: &Value) -> Stats {
    let mut s = Stats {
        execs: v["execs"].as_u64().unwrap_or(0),
        accepted: v["accepted"].as_u64().unwrap_or(0),
        answers: v["answers"].as_u64().unwrap_or(0) as usize,
        corpus: v["corpus"].as_u64().unwrap_or(0) as usize,
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        failures: BTreeMap::new(),
    };
    for f in v["failures"].as_array().into_iter().flatten() {
        s.failures.insert(
            f["signature"].as_str().unwrap_or("").to_string(),
            (
                f["kind"].as_str().unwrap_or("").to_string(),
                f["count"].as_u64().unwrap_or(0),
                f["known"].as_bool().unwrap_or(false),
            ),
        );
    }
    s
}

fn merge(total: &mut Stats, part: &Stats) {
    total.execs += part.execs;
    total.accepted += part.accepted;
    total.answers = total.answers.max(part.answers);
    total.corpus = total.corpus.max(part.corpus);
    total.seconds += part.seconds;
    for (sig, (kind, n, known)) in &part.failures {
        let e = total
            .failures
            .entry(sig.clone())
            .or_insert_with(|| (kind.clone(), 0, *known));
        e.1 += n;
    }
}

/// Fuzzes `target` within the campaign's bounds; prints new findings.
pub fn run_target(target: &Target, c: &Campaign) -> std::io::Result<TargetSummary> {
    let dir = c.out.join(target.name);
    std::fs::create_dir_all(&dir)?;
    let known = corpus::known_open(target);
    let runs = if target.slow { c.slow_runs } else { c.runs };
    let start = Instant::now();
    let mut summary = TargetSummary::default();
    for restart in 0u64.. {
        let time_left = c.time.map(|t| t.saturating_sub(start.elapsed()));
        let runs_left = runs.map(|r| r.saturating_sub(summary.stats.execs));
        if time_left.is_some_and(|t| t.is_zero()) || runs_left == Some(0) || restart > 100_000 {
            break;
        }
        let _ = std::fs::remove_file(dir.join("stats.json"));
        let seed = c.seed ^ fnv(target.name) ^ restart.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The supervisor owns the worker's scratch folder, so that it goes
        // away also when the worker aborts.
        let scratch = crate::scratch_dir(&format!("{}-{restart}", target.name));
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("worker")
            .arg("--scratch")
            .arg(&scratch)
            .arg(target.name)
            .args([
                "--seed",
                &seed.to_string(),
                "--max-ops",
                &c.max_ops.to_string(),
            ])
            .args(["--out", &c.out.display().to_string()])
            .args(["--findings", &c.findings.display().to_string()])
            .env("RAYON_NUM_THREADS", "1")
            .env("RUST_BACKTRACE", "0")
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?));
        if let Some(t) = time_left {
            cmd.args(["--time", &format!("{:.3}", t.as_secs_f64())]);
        }
        if let Some(r) = runs_left {
            cmd.args(["--runs", &r.to_string()]);
        }
        let status = cmd.status();
        let _ = std::fs::remove_dir_all(&scratch);
        let status = status?;
        let part = std::fs::read(dir.join("stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| stats_from_json(&v))
            .unwrap_or_default();
        merge(&mut summary.stats, &part);
        if status.success() {
            break;
        }
        if status.code() == Some(2) {
            // The worker refused its arguments or found no seed: not a finding.
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "the {} worker did not start: {}",
                target.name,
                log.lines().next().unwrap_or("")
            )));
        }
        summary.restarts += 1;
        summary.stats.execs += 1; // the execution that did not come back
        let failure = dead_worker_failure(&dir, status.code(), target);
        let is_known = known.contains(&failure.signature);
        let e = summary
            .stats
            .failures
            .entry(failure.signature.clone())
            .or_insert_with(|| (failure.kind.to_string(), 0, is_known));
        e.1 += 1;
        let saved = corpus::signatures(&c.findings, target);
        if e.1 == 1 && !is_known && !saved.contains(&failure.signature) {
            match std::fs::read(dir.join("current"))
                .ok()
                .and_then(|b| input::from_bundle(&b))
            {
                Some(inp) if inp.len() == target.parts.len() => {
                    let d = save_finding(&c.findings, target, &inp, &failure, seed, part.execs + 1);
                    println!(
                        "{}: {} — {} ({})",
                        target.name,
                        failure.kind,
                        failure.signature,
                        d.display()
                    );
                }
                _ => println!(
                    "{}: {} — {} (input lost)",
                    target.name, failure.kind, failure.signature
                ),
            }
        }
    }
    summary.wall = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// What killed a worker, from its exit status and the end of its stderr.
fn dead_worker_failure(dir: &Path, code: Option<i32>, target: &Target) -> Failure {
    let log = std::fs::read(dir.join("stderr.log")).unwrap_or_default();
    let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(1 << 16)..]).into_owned();
    if code == Some(HANG_EXIT) {
        return Failure {
            kind: "hang",
            signature: format!("hang: one execution over {:?}", target.timeout),
            detail: String::new(),
        };
    }
    let refused = tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("allocation guard: refused "));
    if let (Some(r), true) = (refused, tail.contains("memory allocation of")) {
        let (bytes, frame) = r.split_once(" bytes in ").unwrap_or((r, "unknown"));
        return Failure {
            kind: "oversize",
            signature: format!("allocation over 1 GiB in {frame}"),
            detail: format!("{bytes} bytes requested (aborted)"),
        };
    }
    let last = tail
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Failure {
        kind: "crash",
        signature: format!("crash: exit {code:?}"),
        detail: last.to_string(),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Prints the per-target table; returns the number of new (not known)
/// failure signatures.
pub fn print_summary(rows: &[(&Target, TargetSummary)]) -> usize {
    println!(
        "\n{:<12} {:>11} {:>9} {:>9} {:>8} {:>7} {:>8} {:>9} {:>6}",
        "target",
        "execs",
        "exec/s",
        "accepted",
        "answers",
        "corpus",
        "restarts",
        "failures",
        "known"
    );
    let mut new = 0;
    for (t, s) in rows {
        let st = &s.stats;
        let known = st.failures.values().filter(|f| f.2).count();
        let fresh = st.failures.len() - known;
        new += fresh;
        println!(
            "{:<12} {:>11} {:>9.0} {:>9} {:>8} {:>7} {:>8} {:>9} {:>6}",
            t.name,
            st.execs,
            st.execs as f64 / s.wall.max(1e-9),
            st.accepted,
            st.answers,
            st.corpus,
            s.restarts,
            fresh,
            known
        );
        for (sig, (kind, n, k)) in &st.failures {
            println!(
                "    {kind:<8} ×{n:<8} {}{sig}",
                if *k { "(known) " } else { "" }
            );
        }
    }
    new
}
