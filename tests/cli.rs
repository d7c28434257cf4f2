#![cfg(feature = "cli")]
//! The `ferrite` command line: bad input gives a message naming the
//! problem and a non-zero exit, and never destroys an existing run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the ferrite binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const TINY: &[&str] = &[
    "--train-size",
    "64",
    "--test-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--stem",
    "imagenet",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec!["train", "--out", out];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    ferrite(&args)
}

#[test]
fn unknown_options_and_values_are_rejected_by_name() {
    let out = ferrite(&["train", "--no-such-option"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--no-such-option"),
        "{}",
        stderr(&out)
    );

    let dir = scratch("badloss");
    let out = train(&dir, &["--loss", "hinge"]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(msg.contains("hinge") && msg.contains("plm+focal"), "{msg}");

    let out = train(&dir, &["--dataset", "imagenet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown dataset `imagenet`"));

    let out = train(&dir, &["--model", "vgg16"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown model `vgg16`"));

    for lr in [&["--lr=-1"][..], &["--lr", "-1"]] {
        let out = train(&dir, lr);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("learning rate"), "{}", stderr(&out));
    }

    let out = train(&dir, &["--data-dir", "/nonexistent/mnist"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/mnist"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_eval_and_refusal_to_overwrite() {
    let dir = scratch("run");
    let out = train(&dir, &["--loss", "plm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| class | train positives"), "{stdout}");
    let report = std::fs::read(dir.join("report.json")).unwrap();

    // A second `train` into the same folder fails and leaves the run intact.
    let again = train(&dir, &["--loss", "bce"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already holds a run"));
    assert_eq!(std::fs::read(dir.join("report.json")).unwrap(), report);

    // `eval` on the checkpoint prints the same report.
    let ckpt = dir.join("checkpoint.safetensors");
    let eval = ferrite(&["eval", "--checkpoint", ckpt.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert!(String::from_utf8_lossy(&eval.stdout).contains("| macro_f1 |"));

    // A truncated checkpoint is named in the error; `--resume` refuses it too.
    let bytes = std::fs::read(&ckpt).unwrap();
    let broken = dir.join("broken.safetensors");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let eval = ferrite(&["eval", "--checkpoint", broken.to_str().unwrap()]);
    assert!(!eval.status.success());
    assert!(
        stderr(&eval).contains("broken.safetensors"),
        "{}",
        stderr(&eval)
    );

    let missing = ferrite(&["eval", "--checkpoint", "/nonexistent/ckpt.safetensors"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("/nonexistent/ckpt.safetensors"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_of_a_folder_without_a_run_is_an_error() {
    let dir = scratch("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let out = ferrite(&["train", "--resume", "--out", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("checkpoint.safetensors"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
