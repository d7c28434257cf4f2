//! Where a result comes from: the ferrite version and git commit it was
//! built from, when it was produced (UTC), and the machine it ran on
//! (worker threads, CPU model, OS and architecture). Reports and benchmark
//! outputs record it so that numbers can be traced back and compared
//! fairly.
//!
//! ```
//! let p = ferrite::provenance::Provenance::current();
//! assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
//! assert!(p.git_commit == "unknown" || p.git_commit.len() == 40);
//! assert!(p.threads >= 1);
//! let json = p.to_json();
//! assert_eq!(json["os"], std::env::consts::OS);
//! assert_eq!(ferrite::provenance::Provenance::from_json(&json), Some(p));
//! ```

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The git commit ferrite was built from (40 hex digits), or `"unknown"`
/// when it was built outside a git checkout or without git (set by
/// `build.rs`).
pub const GIT_COMMIT: &str = env!("FERRITE_GIT_COMMIT");

/// The build and the machine behind a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// ferrite's version (`Cargo.toml`).
    pub version: String,
    /// The git commit of the build, or `"unknown"` (see [`GIT_COMMIT`]).
    pub git_commit: String,
    /// When the provenance was taken, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub timestamp_utc: String,
    /// Worker threads of the rayon pool the work ran on (per rank).
    pub threads: usize,
    /// Processes of the data-parallel job the work ran in (1 for one
    /// process; see [`with_ranks`](Self::with_ranks)).
    pub ranks: usize,
    /// CPU model name (`/proc/cpuinfo`), when the OS tells it.
    pub cpu: Option<String>,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
}

impl Provenance {
    /// The provenance of work running now, in the current rayon pool.
    pub fn current() -> Self {
        Provenance {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: GIT_COMMIT.to_string(),
            timestamp_utc: format_utc(SystemTime::now()),
            threads: rayon::current_num_threads(),
            ranks: 1,
            cpu: cpu_model(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// The same provenance for work done by a data-parallel job of `ranks`
    /// processes (each with `threads` threads).
    pub fn with_ranks(self, ranks: usize) -> Self {
        Provenance { ranks, ..self }
    }

    /// The provenance as a JSON object (`cpu` is `null` when unknown).
    pub fn to_json(&self) -> Value {
        json!({
            "ferrite_version": self.version,
            "git_commit": self.git_commit,
            "timestamp_utc": self.timestamp_utc,
            "threads": self.threads,
            "ranks": self.ranks,
            "cpu": self.cpu,
            "os": self.os,
            "arch": self.arch,
        })
    }

    /// Reads back what [`to_json`](Self::to_json) wrote; `None` when a
    /// field is missing or has the wrong type. `ranks` may be missing
    /// (files written before it existed): 1.
    pub fn from_json(v: &Value) -> Option<Self> {
        let text = |k: &str| v[k].as_str().map(str::to_string);
        Some(Provenance {
            version: text("ferrite_version")?,
            git_commit: text("git_commit")?,
            timestamp_utc: text("timestamp_utc")?,
            threads: usize::try_from(v["threads"].as_u64()?).ok()?,
            ranks: match &v["ranks"] {
                Value::Null => 1,
                r => usize::try_from(r.as_u64()?).ok()?,
            },
            cpu: text("cpu"),
            os: text("os")?,
            arch: text("arch")?,
        })
    }

    /// One line for the head of a text report, e.g. `ferrite 0.1.0
    /// (commit 0123abcd…), 2026-01-02T03:04:05Z, 16 threads, AMD EPYC …,
    /// linux/x86_64` (`4 ranks × 16 threads` for a data-parallel job).
    pub fn summary_line(&self) -> String {
        let commit = if self.git_commit == "unknown" {
            "commit unknown".to_string()
        } else {
            format!(
                "commit {}",
                &self.git_commit[..self.git_commit.len().min(12)]
            )
        };
        let workers = if self.ranks > 1 {
            format!("{} ranks × {} threads", self.ranks, self.threads)
        } else {
            format!("{} threads", self.threads)
        };
        format!(
            "ferrite {} ({commit}), {}, {workers}, {}, {}/{}",
            self.version,
            self.timestamp_utc,
            self.cpu.as_deref().unwrap_or("CPU model unknown"),
            self.os,
            self.arch
        )
    }
}

/// The `model name` of the first CPU in `/proc/cpuinfo` (Linux), if any.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_model(&info)
}

/// The first `model name` (x86) or `Model` (some ARM boards) entry of a
/// `/proc/cpuinfo` text.
fn parse_cpu_model(info: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let key = key.trim();
        let value = value.trim();
        ((key == "model name" || key == "Model") && !value.is_empty()).then(|| value.to_string())
    })
}

/// `time` as UTC `YYYY-MM-DDTHH:MM:SSZ` (times before 1970 print as the
/// epoch).
pub fn format_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `(year, month, day)` of `days` since
/// 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_field_is_present_and_the_commit_is_hex_or_unknown() {
        let p = Provenance::current();
        let c = &p.git_commit;
        assert!(
            c == "unknown" || (c.len() == 40 && c.chars().all(|x| x.is_ascii_hexdigit())),
            "{c}"
        );
        let j = p.to_json();
        for k in [
            "ferrite_version",
            "git_commit",
            "timestamp_utc",
            "threads",
            "ranks",
            "cpu",
            "os",
            "arch",
        ] {
            assert!(j.get(k).is_some(), "{k} missing");
        }
        assert!(p.threads >= 1);
        assert!(!p.os.is_empty() && !p.arch.is_empty());
        assert_eq!(p.timestamp_utc.len(), 20, "{}", p.timestamp_utc);
        assert_eq!(Provenance::from_json(&j).as_ref(), Some(&p));
        assert_eq!(Provenance::from_json(&json!({"git_commit": "x"})), None);
        assert!(p.summary_line().starts_with("ferrite "));
    }

    #[test]
    fn ranks_are_recorded_and_older_files_read_as_one_process() {
        let p = Provenance::current();
        assert_eq!(p.ranks, 1);
        assert!(p
            .summary_line()
            .contains(&format!(", {} threads,", p.threads)));
        let job = p.clone().with_ranks(4);
        let j = job.to_json();
        assert_eq!(j["ranks"], 4);
        assert_eq!(Provenance::from_json(&j).as_ref(), Some(&job));
        let line = job.summary_line();
        assert!(
            line.contains(&format!(", 4 ranks × {} threads,", p.threads)),
            "{line}"
        );
        // Written before `ranks` existed: one process.
        let mut old = p.to_json();
        old.as_object_mut().unwrap().remove("ranks");
        assert_eq!(Provenance::from_json(&old), Some(p.clone()));
        // Present but not a count: refused like any malformed field.
        let mut bad = p.to_json();
        bad["ranks"] = json!("two");
        assert_eq!(Provenance::from_json(&bad), None);
    }

    #[test]
    fn utc_dates_are_formatted_by_hand_correctly() {
        let at = |s: u64| format_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn cpu_model_comes_from_the_model_name_line() {
        let info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 3.0GHz\n";
        assert_eq!(parse_cpu_model(info).as_deref(), Some("Some CPU @ 3.0GHz"));
        assert_eq!(parse_cpu_model("processor : 0\n"), None);
    }
}
