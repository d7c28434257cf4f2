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
    // The old `loss/key=value` form is refused with the new spelling.
    let out = train(&dir, &["--loss", "plm/lambda=0"]);
    assert!(
        stderr(&out).contains("plm(init=balanced,lambda=0)"),
        "{}",
        stderr(&out)
    );

    let out = train(&dir, &["--dataset", "imagenet"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown dataset `imagenet`"));

    let out = train(&dir, &["--model", "vgg16"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown model `vgg16`"));

    for lr in [&["--lr=-1"][..], &["--lr", "-1"]] {
        let out = train(&dir, lr);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("`optim.lr` (--lr)"),
            "{}",
            stderr(&out)
        );
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

/// `--distributed mpi` in a build without the MPI backend says how to get
/// one, before any work; an unknown launcher is refused by name.
#[test]
fn distributed_mpi_needs_the_mpi_feature() {
    let dir = scratch("mpi");
    for cmd in ["train", "compare"] {
        let args = [cmd, "--distributed", "mpi", "--out", dir.to_str().unwrap()];
        let out = ferrite(&args);
        if cfg!(feature = "mpi") {
            continue; // this build has it; .ci/mpi runs it under mpirun
        }
        assert_refused(&out, "--features mpi", &args);
        assert!(!dir.exists(), "{cmd} wrote before refusing");
    }
    let args = ["train", "--distributed", "nccl-ish"];
    assert_refused(&ferrite(&args), "nccl-ish", &args);
}

/// `--distributed nccl` puts one rank on each GPU: on the CPU it is
/// refused before any work, saying what to add.
#[test]
fn distributed_nccl_needs_a_gpu_device() {
    let dir = scratch("nccl");
    for cmd in ["train", "compare"] {
        let args = [
            cmd,
            "--distributed",
            "nccl",
            "--device",
            "cpu",
            "--out",
            dir.to_str().unwrap(),
        ];
        assert_refused(&ferrite(&args), "add --device cuda", &args);
        assert!(!dir.exists(), "{cmd} wrote before refusing");
    }
}

/// The command failed cleanly: non-zero exit, `needle` in the message, no
/// panic or backtrace.
fn assert_refused(out: &Output, needle: &str, args: &[&str]) {
    let msg = stderr(out);
    assert!(!out.status.success(), "{args:?} succeeded: {msg}");
    assert!(msg.contains(needle), "{args:?}: `{needle}` not in: {msg}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!msg.contains(bad), "{args:?}: {msg}");
    }
}

#[test]
fn every_bad_setting_is_refused_by_name_before_any_work() {
    let dir = scratch("badsettings");
    // No data folder: a setting that passed validation would fail on the
    // data instead, naming the folder rather than the option.
    let cases: &[(&[&str], &str)] = &[
        (&["--threads", "100000"], "--threads"),
        (&["--threads", "0"], "--threads"),
        (&["--lr-gamma", "0"], "--lr-gamma"),
        (&["--lr-gamma", "-1"], "--lr-gamma"),
        (&["--lr-gamma", "nan"], "--lr-gamma"),
        (&["--lr-gamma", "inf"], "--lr-gamma"),
        (&["--loss", "focal(alpha=5)"], "alpha"),
        (&["--loss", "focal(gamma=-1)"], "gamma"),
        (&["--loss", "plm+focal(gamma=nan)"], "gamma"),
        (&["--loss", "asl(gamma_neg=inf)"], "gamma_neg"),
        (&["--loss", "asl(gamma_pos=-2)"], "gamma_pos"),
        (&["--loss", "asl(clip=1)"], "clip"),
        (&["--loss", "cb(beta=1)"], "beta"),
        (&["--loss", "cb(beta=-0.5)+focal"], "beta"),
        (&["--loss", "plm+ce"], "per-element"),
        (&["--loss", "plm+plm"], "twice"),
        (&["--loss", "focal+asl"], "two base losses"),
        (&["--epochs", "0"], "--epochs"),
        (&["--epochs", "100000000000"], "--epochs"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--batch-size", "1000000000"], "--batch-size"),
        (&["--loss", "plm(bins=0)"], "bins"),
        (&["--loss", "plm(bins=1)"], "bins"),
        (&["--loss", "plm(bins=1099511627776)"], "bins"),
        (&["--loss", "plm(lambda=-1)"], "lambda"),
        (&["--loss", "plm(divergence=kl)"], "pred-gt"),
        (&["--train-size", "100000000000"], "--train-size"),
        (&["--test-size", "100000000000"], "--test-size"),
        (&["--crop-padding", "1000000"], "--crop-padding"),
        (&["--schedule", "multistep"], "--milestones"),
        (
            &["--schedule", "multistep", "--milestones", "3,2"],
            "--milestones",
        ),
        (
            &["--schedule", "multistep", "--milestones", "0,3"],
            "--milestones",
        ),
        (&["--momentum", "1"], "--momentum"),
        (&["--optimizer", "adam", "--nesterov"], "--nesterov"),
        (&["--weight-decay", "-1"], "--weight-decay"),
        (&["--clip-grad-norm", "0"], "--clip-grad-norm"),
        (&["--threshold", "1"], "--threshold"),
        (&["--imbalance-factor", "0.5"], "--imbalance-factor"),
        (&["--lr", "inf"], "--lr"),
        // Options that would change nothing are refused, not ignored.
        (
            &["--dataset", "mnist", "--train-size", "100"],
            "--train-size has no effect",
        ),
        (
            &["--dataset", "cifar10", "--imbalance-factor", "10"],
            "--imbalance-factor has no effect",
        ),
        (
            &["--dataset", "mnist", "--data-seed", "3"],
            "--data-seed has no effect",
        ),
        (
            &["--optimizer", "adam", "--momentum", "0.5"],
            "--momentum has no effect",
        ),
        (&["--milestones", "3"], "--milestones has no effect"),
        (
            &["--schedule", "cosine", "--lr-gamma", "0.5"],
            "--lr-gamma has no effect",
        ),
        (
            &["--dataset", "mnist", "--threshold", "0.3"],
            "--threshold has no effect",
        ),
        (
            &["--dataset", "mnist", "--test-set", "balanced"],
            "--test-set",
        ),
        (&["--test-set", "uniform"], "imbalanced, balanced, both"),
    ];
    let out_dir = dir.to_str().unwrap();
    for (extra, needle) in cases {
        let mut args = vec!["train", "--out", out_dir, "--data-dir", "/nonexistent/data"];
        args.extend_from_slice(extra);
        let out = ferrite(&args);
        assert_refused(&out, needle, &args);
        assert!(!stderr(&out).contains("/nonexistent"), "{}", stderr(&out));
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
    for threads in ["100000", "0"] {
        let args = [
            "eval",
            "--checkpoint",
            "x.safetensors",
            "--threads",
            threads,
        ];
        assert_refused(&ferrite(&args), "--threads", &args);
    }
}

#[test]
fn compare_checks_every_loss_before_training_any() {
    let dir = scratch("compare-bad-loss");
    let out_dir = dir.to_str().unwrap();
    let mut args = vec!["compare", "--out", out_dir, "--seeds", "0,1"];
    args.extend_from_slice(TINY);
    for (losses, needle) in [
        ("bce,focal(alpha=5)", "focal(alpha=5)"),
        ("bce,focal(gamma=-1)", "focal(gamma=-1)"),
        ("bce,cb(beta=1)", "cb(beta=1)"),
        ("bce,plm(bins=0,lambda=0)", "plm(bins=0,lambda=0)"),
        ("bce,,plm", "empty loss"),
    ] {
        let mut args = args.clone();
        args.extend_from_slice(&["--losses", losses]);
        assert_refused(&ferrite(&args), needle, &args);
        assert!(!dir.exists(), "{losses}: a run started");
    }
    // The same run twice would count one result as two.
    for extra in [["--losses", "bce,bce"], ["--seeds", "2,2"]] {
        let mut args = vec!["compare", "--out", out_dir];
        args.extend_from_slice(TINY);
        args.extend_from_slice(&extra);
        assert_refused(&ferrite(&args), extra[0], &args);
        assert!(!dir.exists(), "{extra:?}: the output folder was created");
    }
}

#[test]
fn compare_refuses_runs_made_with_other_settings() {
    let dir = scratch("compare-mismatch");
    let out_dir = dir.to_str().unwrap();
    let compare = |extra: &[&str]| {
        let mut args = vec![
            "compare", "--out", out_dir, "--losses", "bce", "--seeds", "0",
        ];
        args.extend_from_slice(&TINY[..4]); // sizes only
        args.extend_from_slice(&["--batch-size", "32", "--stem", "imagenet"]);
        args.extend_from_slice(extra);
        ferrite(&args)
    };
    let first = compare(&["--epochs", "1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // The same settings reuse the finished run (and write the table again,
    // with a new time in its provenance line).
    let again = compare(&["--epochs", "1"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let table = std::fs::read(dir.join("compare.md")).unwrap();

    // Other settings: refused, naming the folder and each differing key.
    let args = ["--epochs", "3", "--lr", "0.1"];
    let other = compare(&args);
    assert_refused(&other, "bce/seed0", &args);
    let msg = stderr(&other);
    assert!(msg.contains("epochs: 1 there, 3 here"), "{msg}");
    assert!(msg.contains("optim.lr: 0.001 there, 0.1 here"), "{msg}");
    assert_eq!(std::fs::read(dir.join("compare.md")).unwrap(), table);

    // An interrupted run (checkpoint, no report) is checked the same way.
    std::fs::remove_file(dir.join("bce/seed0/report.json")).unwrap();
    let other = compare(&args);
    assert_refused(&other, "epochs: 1 there, 3 here", &args);
    assert!(!dir.join("bce/seed0/report.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_run_says_so_and_what_to_change() {
    let dir = scratch("diverge");
    // One batch, whose finite loss gives an update that ruins the model.
    let args = [
        "train",
        "--out",
        dir.to_str().unwrap(),
        "--train-size",
        "32",
        "--test-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--stem",
        "imagenet",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
    ];
    let out = ferrite(&args);
    assert_refused(&out, "training diverged", &args);
    let msg = stderr(&out);
    assert!(
        msg.contains("--lr") && msg.contains("after 1 epoch"),
        "{msg}"
    );
    assert!(!msg.contains("multilabel_report"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run of two epochs stopped after the first, written by a pool of
/// `threads` worker threads (as `ferrite train --threads` would).
fn half_done_run(dir: &Path, threads: usize) {
    use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 64;
    data.test_size = 32;
    let mut config = TrainConfig::new(data, "resnet8", ferrite::train::LossSpec::plm());
    config.stem = Some("imagenet".into());
    config.epochs = 2;
    config.batch_size = 32;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| {
            let mut trainer = ferrite::train::Run::new(config, dir).unwrap();
            trainer.train_epoch(&mut ferrite::train::Quiet).unwrap();
        });
}

#[test]
fn resume_refuses_run_options_warns_about_another_thread_count_and_cleans_up() {
    let dir = scratch("resume");
    half_done_run(&dir, 1);
    // Left by writers killed mid-write: a dead process's file goes, a live
    // one's (this test's own process) stays.
    let dead = dir.join(".checkpoint.safetensors.tmp-4000000000-3");
    let live = dir.join(format!(".log.jsonl.tmp-{}-0", std::process::id()));
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::write(&live, b"in use").unwrap();

    let out_dir = dir.to_str().unwrap();
    let args = [
        "train",
        "--resume",
        "--out",
        out_dir,
        "--threads",
        "2",
        "--lr",
        "0.5",
        "--loss",
        "bce",
    ];
    // Options that would change the stored run are refused, by name,
    // before anything is touched.
    let before = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    assert_refused(&ferrite(&args), "--lr, --loss would have no effect", &args);
    assert_eq!(
        std::fs::read(dir.join("checkpoint.safetensors")).unwrap(),
        before
    );
    let args = ["train", "--resume", "--out", out_dir, "--threads", "2"];
    let out = ferrite(&args);
    let msg = stderr(&out);
    assert!(out.status.success(), "{msg}");
    assert!(
        msg.contains("written with 1 worker thread(s)") && msg.contains("--threads 1"),
        "{msg}"
    );
    assert!(!dead.exists(), "the stale temporary file is still there");
    assert!(live.exists(), "a live process's temporary file was removed");

    // Same thread count, no other option: no warning at all.
    let _ = std::fs::remove_dir_all(&dir);
    half_done_run(&dir, 2);
    let out = ferrite(&["train", "--resume", "--out", out_dir, "--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoints_beyond_their_epochs_or_with_bad_settings_are_refused() {
    let dir = scratch("epochs-beyond");
    let out = train(&dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ckpt = dir.join("checkpoint.safetensors");
    let (tensors, mut metadata) = ferrite::checkpoint::load_state_dict(&ckpt).unwrap();
    metadata.insert("ferrite.epoch".into(), "99".into());
    ferrite::checkpoint::save_state_dict(&ckpt, &tensors, &metadata).unwrap();
    let args = ["train", "--resume", "--out", dir.to_str().unwrap()];
    let out = ferrite(&args);
    assert_refused(&out, "checkpoint.safetensors", &args);
    assert!(
        stderr(&out).contains("epoch counter (99)"),
        "{}",
        stderr(&out)
    );
    let args = ["eval", "--checkpoint", ckpt.to_str().unwrap()];
    assert_refused(&ferrite(&args), "epoch counter (99)", &args);

    // A stored configuration goes through the same checks as options.
    metadata.insert("ferrite.epoch".into(), "1".into());
    let mut config: serde_json::Value = serde_json::from_str(&metadata["train.config"]).unwrap();
    config["optim"]["gamma"] = serde_json::json!(-1.0);
    metadata.insert("train.config".into(), config.to_string());
    ferrite::checkpoint::save_state_dict(&ckpt, &tensors, &metadata).unwrap();
    let args = ["train", "--resume", "--out", dir.to_str().unwrap()];
    let out = ferrite(&args);
    assert_refused(&out, "checkpoint.safetensors", &args);
    assert!(stderr(&out).contains("--lr-gamma"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_json_rows_carry_min_median_max_and_the_provenance() {
    let out = ferrite(&[
        "bench",
        "--quick",
        "--filter",
        "add_f32",
        "--peak-gflops",
        "100",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let commit = doc["provenance"]["git_commit"].as_str().unwrap();
    assert!(commit == "unknown" || commit.len() == 40, "{commit}");
    let rows = doc["kernels"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{doc}");
    for row in rows {
        let f = |k: &str| row[k].as_f64().unwrap();
        assert!(
            f("min_ms") <= f("median_ms") && f("median_ms") <= f("max_ms"),
            "{row}"
        );
    }
}

#[test]
fn bench_conv_layers_prints_every_pass_of_every_layer_as_json() {
    // ResNet-8's six distinct convolutions, three passes each, at batch 1
    // (the rows' times are not checked: this is not a timing test).
    let out = ferrite(&[
        "bench",
        "--conv-layers",
        "--filter",
        "resnet8_cifar",
        "--conv-batch",
        "1",
        "--peak-gflops",
        "100",
        "--quick",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6 * 3);
    assert_eq!(rows[0]["shape"], "1x3x32x32 -> 16 k3 s1 p1");
    let passes: Vec<&str> = rows
        .iter()
        .take(3)
        .map(|r| r["pass"].as_str().unwrap())
        .collect();
    assert_eq!(passes, ["fwd", "bwd_input", "bwd_weight"]);
    for r in rows {
        assert!(r["min_ms"].as_f64() <= r["median_ms"].as_f64(), "{r}");
        assert!(
            r["algorithm"].as_str().is_some_and(|a| !a.is_empty()),
            "{r}"
        );
        assert!(
            r["models"].as_str().unwrap().contains("resnet8_cifar×"),
            "{r}"
        );
    }
    let bad = ferrite(&["bench", "--conv-layers", "--filter", "no-such-layer"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("matched no model"),
        "{}",
        stderr(&bad)
    );
    let gpu = ferrite(&["bench", "--conv-layers", "--tiny"]);
    assert!(
        stderr(&gpu).contains("--tiny does not apply to --conv-layers"),
        "{}",
        stderr(&gpu)
    );
    // Every JSON output says which build and machine measured it.
    assert!(v["provenance"]["git_commit"].is_string(), "{v}");
}
