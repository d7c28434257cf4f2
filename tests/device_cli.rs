#![cfg(feature = "cli")]
//! `ferrite train/eval --device` end to end: a run on the device (the
//! emulated GPU in CI: `FERRITE_CUDA_EMULATE=1 cargo test --release
//! --features cuda-emulator --test device_cli`) matches the same run on
//! the CPU, and a device that cannot be used is a clear error.

mod device;

use device::devices;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrite(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrite"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the ferrite binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-devcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A run small enough for the emulated GPU: 2 batches of PLM over BCE.
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
    "--loss",
    "plm",
];

fn train(out: &Path, device: &str) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--device", device];
    args.extend_from_slice(TINY);
    // The kernels' race check has its own tests; here it would only slow
    // the run down.
    ferrite(&args, &[("FERRITE_EMULATOR_RACE_CHECK", "0")])
}

fn log_line(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().expect("one epoch logged")).unwrap()
}

fn number(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn training_on_the_device_matches_the_cpu_run() {
    for device in devices() {
        let (cpu_dir, dev_dir) = (scratch("cpu"), scratch("dev"));
        let cpu = train(&cpu_dir, "cpu");
        let dev = train(&dev_dir, &device.to_string());
        for out in [&cpu, &dev] {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(String::from_utf8_lossy(&dev.stdout).contains(&format!("on {device}")));
        let (c, d) = (log_line(&cpu_dir), log_line(&dev_dir));
        // Same data, same initial weights, bit-identical PLM masks: the
        // losses differ by summation order only.
        let (lc, ld) = (number(&c["train_loss"]), number(&d["train_loss"]));
        assert!(
            (lc - ld).abs() <= 1e-4 * lc.abs(),
            "train loss: cpu {lc}, {device} {ld}"
        );
        for (rc, rd) in c["plm"]["rhat"]
            .as_array()
            .unwrap()
            .iter()
            .zip(d["plm"]["rhat"].as_array().unwrap())
        {
            let (rc, rd) = (number(rc), number(rd));
            assert!(
                (rc - rd).abs() <= 1e-6 * rc.abs(),
                "rhat: cpu {rc}, {device} {rd}"
            );
        }
        let (hc, hd) = (&c["plm"]["hist_pos_pred"], &d["plm"]["hist_pos_pred"]);
        assert_eq!(hc, hd, "the prediction histograms differ");

        // The device's checkpoint evaluates on the CPU and on the device.
        let ckpt = dev_dir.join("checkpoint.safetensors");
        let mut reports = Vec::new();
        for on in ["cpu".to_string(), device.to_string()] {
            let out = ferrite(
                &[
                    "eval",
                    "--checkpoint",
                    ckpt.to_str().unwrap(),
                    "--device",
                    &on,
                ],
                &[("FERRITE_EMULATOR_RACE_CHECK", "0")],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            reports.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        assert!(reports[0].contains("macro"), "{}", reports[0]);
        let _ = std::fs::remove_dir_all(&cpu_dir);
        let _ = std::fs::remove_dir_all(&dev_dir);
    }
}

#[test]
fn an_unusable_device_is_a_clear_error_that_names_the_emulator() {
    let dir = scratch("nodevice");
    // No emulation requested: without a GPU (or without CUDA support in
    // this build) the device cannot be opened.
    let out = ferrite(
        &[
            "train",
            "--out",
            dir.to_str().unwrap(),
            "--device",
            "cuda:7",
        ],
        &[("FERRITE_CUDA_EMULATE", "0")],
    );
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("cuda-emulator") && msg.contains("FERRITE_CUDA_EMULATE=1"),
        "{msg}"
    );
    assert!(
        !dir.join("config.json").exists(),
        "nothing is written for an unusable device"
    );

    let out = ferrite(
        &["train", "--out", dir.to_str().unwrap(), "--device", "gpu"],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cpu, cuda or cuda:N"));
}
