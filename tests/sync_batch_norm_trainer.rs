//! Synchronised batch norm through the trainer, the configured run and the
//! command line: a 2-rank run with `sync_batch_norm` trains what one
//! process trains (its ResNet has batch norm in training mode) and records
//! the option; the option is refused without a data-parallel job, and a
//! global batch smaller than the world stops every rank with a message.

mod ddp;

use ddp::{dataset, model, on_ranks, sgd, BATCH, TRAIN};
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::distributed::Communicator;
use ferrite::loss::cross_entropy;
use ferrite::nn::Module;
use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::run::{Quiet, Run};
use ferrite::train::trainer::Trainer;
use ferrite::{Device, Result, Tensor};
use std::path::Path;

/// A small MultiMNIST-LT run of ResNet-8 (batch norm in every block):
/// 64 training images in global batches of 32, BCE, one epoch.
fn config(sync: bool) -> TrainConfig {
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 64;
    data.test_size = 32;
    let mut config = TrainConfig::new(data, "resnet8", "bce".parse().unwrap());
    config.stem = Some("imagenet".into());
    (config.epochs, config.batch_size, config.seed) = (1, 32, 3);
    config.sync_batch_norm = sync;
    config
}

fn params<M: Module>(model: &M) -> Vec<Vec<f64>> {
    let ps = model.parameters();
    ps.iter().map(|p| p.to_f64_vec().unwrap()).collect()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-syncbn-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Largest |a − b| over the largest |b|, per tensor; the worst tensor.
fn relative_error(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = x
                .iter()
                .zip(y)
                .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
            diff / scale.max(1e-12)
        })
        .fold(0.0, f64::max)
}

#[test]
fn a_two_rank_run_with_synchronised_batch_norm_trains_what_one_process_trains() {
    let base = scratch("run");
    let serial = {
        let mut run = Run::new(config(false), base.join("serial")).unwrap();
        run.run(&mut Quiet).unwrap();
        params(run.model())
    };
    let runs = on_ranks(2, |comm| {
        let dir = base.join(format!("rank{}", comm.rank()));
        let mut run = Run::new_with(config(true), &dir, Device::Cpu, Some(comm))?;
        assert!(run.trainer().is_batch_norm_synchronised());
        run.run(&mut Quiet)?;
        Ok(params(run.model()))
    });
    let runs: Vec<_> = runs.into_iter().collect::<Result<_>>().unwrap();
    assert!(runs[0] == runs[1], "the ranks differ");
    let err = relative_error(&runs[0], &serial);
    eprintln!("2 ranks with synchronised batch norm vs one process: {err:e}");
    assert!(err <= 1e-4, "parameters after one epoch: {err:e}");
    let saved = std::fs::read_to_string(base.join("rank0/config.json")).unwrap();
    assert!(saved.contains("\"sync_batch_norm\": true"), "{saved}");
    let plain = std::fs::read_to_string(base.join("serial/config.json")).unwrap();
    assert!(!plain.contains("sync_batch_norm"), "{plain}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn the_option_needs_a_data_parallel_job() {
    let dir = scratch("alone");
    let mut run = Run::new(config(true), &dir).unwrap();
    let err = run.run(&mut Quiet).unwrap_err().to_string();
    assert!(err.contains("--distributed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let model = model(0).unwrap();
    let optimizer = sgd(&model).unwrap();
    let loss = |logits: &Tensor, batch: &Batch| {
        cross_entropy(logits, batch.class_labels()?, &Default::default())
    };
    let trainer = Trainer::new(model, optimizer, loss).unwrap();
    let err = trainer.sync_batch_norm().err().unwrap().to_string();
    assert!(err.contains("with_communicator"), "{err}");
}

#[test]
fn a_global_batch_smaller_than_the_world_stops_every_rank_with_a_message() {
    // 97 images in batches of 32: the last batch has one image for 2 ranks.
    let train_set = dataset(TRAIN, 1, false);
    let errors = on_ranks(2, |comm: Box<dyn Communicator>| {
        let model = model(0)?;
        let optimizer = sgd(&model)?;
        let loss = |logits: &Tensor, batch: &Batch| {
            cross_entropy(logits, batch.class_labels()?, &Default::default())
        };
        let mut trainer = Trainer::new(model, optimizer, loss)?
            .epochs(1)
            .with_communicator(comm)?
            .sync_batch_norm()?;
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
        trainer.fit(&mut train, None, &mut Quiet).map(|_| ())
    });
    for e in errors {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("synchronised batch norm"), "{e}");
    }
}

#[cfg(feature = "cli")]
#[test]
fn the_command_line_refuses_the_option_without_distributed() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["train", "--sync-batch-norm", "--out"])
        .arg(scratch("cli"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sync-batch-norm") && err.contains("--distributed"),
        "{err}"
    );
}
