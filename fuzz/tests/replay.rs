//! Replays the committed seed corpus and every regression input through
//! the fuzz binary (each input in a process of its own, under the
//! allocation and time guards): seeds must be accepted, and no reproducer
//! may panic, abort, hang or be accepted when invalid — except those
//! marked `OPEN` (fix pending), which are listed.

use std::process::Command;

#[test]
fn corpus_and_regressions_replay_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite-fuzz"))
        .arg("replay")
        .output()
        .expect("running ferrite-fuzz replay");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    assert!(out.status.success(), "replay failed:\n{text}");
    assert!(text.contains("replayed"), "no summary:\n{text}");
}

#[test]
fn a_short_campaign_runs_exactly_the_executions_asked_for() {
    let out_dir = std::env::temp_dir().join(format!("ferrite-fuzz-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite-fuzz"))
        .args(["run", "idx", "loss-spec", "--runs", "300", "--seed", "3"])
        .arg("--out")
        .arg(out_dir.join("out"))
        .arg("--findings")
        .arg(out_dir.join("findings"))
        .output()
        .expect("running ferrite-fuzz run");
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&out_dir);
    for target in ["idx", "loss-spec"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(target) && l.split_whitespace().count() > 3)
            .unwrap_or_else(|| panic!("no summary row for {target}:\n{text}"));
        let execs: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(execs, 300, "{row}");
    }
}
