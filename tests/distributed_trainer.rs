//! The data-parallel trainer on the in-process communicator (ranks as
//! threads): 2 ranks train what one process trains (batches cut into
//! per-rank slices, the last one uneven or empty), one rank is the serial
//! run bit for bit, only rank 0 writes, a 2-rank run resumes
//! bit-identically (and refuses another world size), and a rank that fails
//! makes the others fail with its name instead of hanging. PLM's side is in
//! `distributed_plm.rs`.
//!
//! The model has no batch norm: with per-rank statistics (DDP's default) a
//! data-parallel run is not the single-process computation.

mod ddp;

use ddp::{dataset, model, on_ranks, relative_error, scratch, sgd, BATCH, TRAIN, VAL, VAL_BATCH};
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::shard_range;
use ferrite::distributed::{Communicator, InProcess, SingleProcess};
use ferrite::loss::cross_entropy;
use ferrite::nn::{Module, Sequential};
use ferrite::train::config::{DataConfig, DatasetKind, TrainConfig};
use ferrite::train::run::{evaluate_checkpoint, Run};
use ferrite::train::trainer::{
    Accuracy, EarlyStopping, EpochRecord, Monitor, Quiet, Trainer, BEST_CHECKPOINT_FILE,
    CHECKPOINT_FILE, LOG_FILE,
};
use ferrite::{Device, Result, Tensor};
use serde_json::Value;
use std::path::Path;

type Loss = Box<dyn FnMut(&Tensor, &Batch) -> Result<Tensor>>;

fn cross_entropy_loss() -> Loss {
    Box::new(|logits: &Tensor, batch: &Batch| {
        cross_entropy(logits, batch.class_labels()?, &Default::default())
    })
}

/// A trainer of a model from `seed` (rank 0's is broadcast to the others):
/// SGD with momentum, clipping, accuracy, a best checkpoint and early
/// stopping, data-parallel with `comm`.
fn trainer(
    seed: u64,
    epochs: usize,
    loss: Loss,
    comm: Option<Box<dyn Communicator>>,
) -> Result<Trainer<Sequential, Loss>> {
    let model = model(seed)?;
    let optimizer = sgd(&model)?;
    let trainer = Trainer::with_criterion(model, optimizer, loss)?
        .epochs(epochs)
        .clip_grad_norm(Some(0.5))
        .metric(Accuracy::new())
        .best_checkpoint(Monitor::max("val.accuracy"))
        .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 5));
    match comm {
        Some(comm) => trainer.with_communicator(comm),
        None => Ok(trainer),
    }
}

fn params<M: Module>(model: &M) -> Vec<Vec<f32>> {
    model
        .parameters()
        .iter()
        .map(|p| p.to_vec::<f32>().unwrap())
        .collect()
}

/// A record without what depends on time and machine.
fn strip(record: &Value) -> Value {
    let mut v = record.clone();
    let o = v.as_object_mut().unwrap();
    for key in ["train_seconds", "images_per_sec", "provenance"] {
        o.remove(key);
    }
    v
}

fn stripped(records: &[EpochRecord]) -> Vec<Value> {
    records.iter().map(|r| strip(&r.to_json())).collect()
}

fn log_of(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(|l| strip(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// What a training leaves: parameters and the stripped records.
#[derive(Debug, PartialEq)]
struct Outcome {
    params: Vec<Vec<f32>>,
    records: Vec<Value>,
}

/// Trains `epochs` epochs (writing into `dir` when given) and returns the
/// outcome.
fn fit(
    seed: u64,
    epochs: usize,
    comm: Option<Box<dyn Communicator>>,
    dir: Option<&Path>,
) -> Result<Outcome> {
    let (train_set, val_set) = (dataset(TRAIN, 1, false), dataset(VAL, 2, false));
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
    let mut val = DataLoader::new(&val_set, LoaderConfig::evaluation(VAL_BATCH))?;
    let mut trainer = trainer(seed, epochs, cross_entropy_loss(), comm)?;
    if let Some(dir) = dir {
        trainer = trainer.output(dir)?;
    }
    let history = trainer.fit(&mut train, Some(&mut val), &mut Quiet)?;
    Ok(Outcome {
        params: params(trainer.model()),
        records: stripped(&history.records),
    })
}

/// Every number in `a` within `tol` (relative) of the one at its place in
/// `b`; every other value equal.
fn assert_close(a: &Value, b: &Value, tol: f64, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= tol * y.abs().max(1e-12),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                assert_close(v, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_close(p, q, tol, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn shards_tile_every_batch_in_rank_order() {
    for len in 0..20 {
        for world in 1..6 {
            let mut next = 0;
            for rank in 0..world {
                let r = shard_range(len, rank, world);
                assert_eq!(r.start, next, "len {len} world {world} rank {rank}");
                assert!(r.len() == len / world || r.len() == len / world + 1);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
    assert_eq!(shard_range(5, 0, 2), 0..3);
    assert_eq!(shard_range(5, 1, 2), 3..5);
    assert_eq!(shard_range(1, 1, 2), 1..1);
}

#[test]
fn two_ranks_train_what_one_process_trains_and_only_rank_0_writes() {
    let base = scratch("two-ranks");
    let serial = fit(0, 3, None, Some(&base.join("serial"))).unwrap();
    // Rank 1 starts from other weights (rank 0's are broadcast) and is
    // given its own folder, which must stay untouched.
    let runs: Vec<Outcome> = on_ranks(2, |comm| {
        let rank = comm.rank();
        let dir = base.join(format!("rank{rank}"));
        fit(rank as u64 * 11, 3, Some(comm), Some(&dir))
    })
    .into_iter()
    .collect::<Result<_>>()
    .unwrap();
    assert_eq!(runs[0], runs[1], "the ranks differ");
    let err = relative_error(&runs[0].params, &serial.params);
    assert!(err <= 1e-4, "parameters after 3 epochs: {err:e}");
    assert_eq!(runs[0].records.len(), 3);
    for (i, (a, b)) in runs[0].records.iter().zip(&serial.records).enumerate() {
        assert_close(a, b, 1e-4, &format!("epoch {}", i + 1));
    }
    // Rank 0 wrote the log, the checkpoint and the best checkpoint; rank 1
    // wrote nothing at all.
    let rank0 = base.join("rank0");
    for file in [LOG_FILE, CHECKPOINT_FILE, BEST_CHECKPOINT_FILE] {
        assert!(rank0.join(file).exists(), "{file} missing");
    }
    assert_eq!(log_of(&rank0), runs[0].records);
    // The records say the work ran as a job of 2 ranks.
    let log = std::fs::read_to_string(rank0.join(LOG_FILE)).unwrap();
    for line in log.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["provenance"]["ranks"], 2, "{line}");
    }
    assert!(!base.join("rank1").exists(), "rank 1 wrote files");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn one_rank_with_a_communicator_is_the_serial_run_bit_for_bit() {
    let base = scratch("one-rank");
    let serial = fit(0, 3, None, Some(&base.join("serial"))).unwrap();
    let in_process = on_ranks(1, |comm| {
        fit(0, 3, Some(comm), Some(&base.join("in-process")))
    });
    let in_process = in_process.into_iter().next().unwrap().unwrap();
    assert_eq!(in_process, serial);
    let single = fit(
        0,
        3,
        Some(Box::new(SingleProcess::new())),
        Some(&base.join("single")),
    );
    let single = single.unwrap();
    assert_eq!(single, serial);
    assert_eq!(
        log_of(&base.join("in-process")),
        log_of(&base.join("serial"))
    );
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_two_rank_checkpoint_resumes_bit_identically_with_two_ranks_only() {
    let base = scratch("resume");
    let (straight, split) = (base.join("straight"), base.join("split"));
    let uninterrupted: Vec<Outcome> = on_ranks(2, |comm| fit(0, 3, Some(comm), Some(&straight)))
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    // The job "dies" after epoch 1.
    let first: Vec<()> = on_ranks(2, |comm| {
        let (train_set, val_set) = (dataset(TRAIN, 1, false), dataset(VAL, 2, false));
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
        let mut val = DataLoader::new(&val_set, LoaderConfig::evaluation(VAL_BATCH))?;
        let mut trainer = trainer(0, 3, cross_entropy_loss(), Some(comm))?.output(&split)?;
        trainer.train_epoch(&mut train, Some(&mut val), &mut Quiet)?;
        Ok(())
    })
    .into_iter()
    .collect::<Result<_>>()
    .unwrap();
    assert_eq!(first.len(), 2);
    // One process may not continue a 2-rank run.
    let err = trainer(0, 3, cross_entropy_loss(), None)
        .unwrap()
        .resume(&split)
        .err()
        .expect("a 1-process resume of a 2-rank checkpoint is refused")
        .to_string();
    assert!(err.contains("2 rank(s)"), "{err}");
    let resumed: Vec<Vec<Vec<f32>>> = on_ranks(2, |comm| {
        let (train_set, val_set) = (dataset(TRAIN, 1, false), dataset(VAL, 2, false));
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
        let mut val = DataLoader::new(&val_set, LoaderConfig::evaluation(VAL_BATCH))?;
        let rank = comm.rank();
        let mut trainer =
            trainer(rank as u64 + 3, 3, cross_entropy_loss(), Some(comm))?.resume(&split)?;
        assert_eq!(trainer.epochs_done(), 1);
        trainer.fit(&mut train, Some(&mut val), &mut Quiet)?;
        Ok(params(trainer.model()))
    })
    .into_iter()
    .collect::<Result<_>>()
    .unwrap();
    assert!(
        resumed[0] == uninterrupted[0].params,
        "rank 0 resumed differently"
    );
    assert!(
        resumed[1] == uninterrupted[1].params,
        "rank 1 resumed differently"
    );
    assert_eq!(log_of(&split), log_of(&straight));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_error_on_one_rank_fails_the_other_with_its_name() {
    let results = on_ranks(2, |comm| {
        let rank = comm.rank();
        let mut calls = 0;
        let loss: Loss = Box::new(move |logits: &Tensor, batch: &Batch| {
            calls += 1;
            if rank == 1 && calls == 2 {
                return Err(ferrite::Error::invalid(
                    "test loss",
                    "rank 1 fails on purpose",
                ));
            }
            cross_entropy(logits, batch.class_labels()?, &Default::default())
        });
        let (train_set, val_set) = (dataset(TRAIN, 1, false), dataset(VAL, 2, false));
        let mut train = DataLoader::new(&train_set, LoaderConfig::training(BATCH, 5))?;
        let mut val = DataLoader::new(&val_set, LoaderConfig::evaluation(VAL_BATCH))?;
        let dir = scratch(&format!("error-rank{rank}"));
        let mut trainer = trainer(0, 2, loss, Some(comm))?.output(&dir)?;
        trainer
            .train_epoch(&mut train, Some(&mut val), &mut Quiet)
            .map(|_| ())
    });
    let own = results[1].as_ref().unwrap_err().to_string();
    assert!(own.contains("fails on purpose"), "{own}");
    // Rank 0 learns why: rank 1 aborted the job with its error.
    let other = results[0].as_ref().unwrap_err().to_string();
    assert!(
        other.contains("rank 1 aborted") && other.contains("fails on purpose"),
        "{other}"
    );
    let _ = std::fs::remove_dir_all(scratch("error-rank0"));
}

/// A configured run (`Run::new_with`, ResNet-8 with PLM on MultiMNIST-LT)
/// as 2 ranks: the ranks end identical with the same report, rank 0 alone
/// writes the folder, and the sharded final evaluation is what one
/// process computes from rank 0's checkpoint. (ResNet-8 has batch norm,
/// per rank here, so the run is not the single-process run.)
#[test]
fn a_two_rank_run_trains_identical_ranks_and_rank_0_writes_the_folder() {
    let base = scratch("run");
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 64;
    data.test_size = 33;
    let mut config = TrainConfig::new(data, "resnet8", "plm".parse().unwrap());
    config.stem = Some("imagenet".into());
    (config.epochs, config.batch_size, config.seed) = (1, 32, 7);
    let runs = on_ranks(2, |comm| {
        let dir = base.join(format!("rank{}", comm.rank()));
        let mut run = Run::new_with(config.clone(), &dir, Device::Cpu, Some(comm))?;
        let summary = run.run(&mut Quiet)?;
        let rhat = run.objective().plm().unwrap().rhat().to_vec();
        Ok((summary.summary, params(run.model()), rhat))
    });
    let runs: Vec<_> = runs.into_iter().collect::<Result<_>>().unwrap();
    assert!(runs[0] == runs[1], "the ranks differ");
    let rank0 = base.join("rank0");
    for file in ["config.json", LOG_FILE, CHECKPOINT_FILE, "report.md"] {
        assert!(rank0.join(file).exists(), "{file} missing");
    }
    assert!(!base.join("rank1").exists(), "rank 1 wrote files");
    let again = evaluate_checkpoint(rank0.join(CHECKPOINT_FILE), None, Device::Cpu).unwrap();
    for ((name, a), (_, b)) in runs[0].0.iter().zip(&again.summary) {
        assert!(
            (a - b).abs() <= 1e-5,
            "{name}: {a} sharded, {b} in one process"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// `compare_with` over 2 ranks: both train every run of the comparison
/// and return the same summaries; rank 0 alone writes the runs and the
/// comparison.
#[test]
fn a_two_rank_comparison_is_written_by_rank_0_alone() {
    use ferrite::train::compare::{compare_with, JobRank, Variant};
    use std::sync::Mutex;
    let base = scratch("compare");
    let mut data = DataConfig::new(DatasetKind::MultiMnistLt);
    data.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    data.train_size = 64;
    data.test_size = 33;
    let mut config = TrainConfig::new(data, "resnet8", "bce".parse().unwrap());
    config.stem = Some("imagenet".into());
    (config.epochs, config.batch_size) = (1, 32);
    let variants: Vec<Variant> = ["bce", "plm"].iter().map(|v| v.parse().unwrap()).collect();
    // One group of 2 ranks per run: rank r takes the r-th communicator of
    // each, in run order.
    let groups: Vec<_> = (0..variants.len())
        .map(|_| InProcess::group(2).unwrap())
        .collect();
    let queues: Vec<Mutex<Vec<InProcess>>> = (0..2).map(|_| Mutex::new(Vec::new())).collect();
    for group in groups.into_iter().rev() {
        for (r, comm) in group.into_iter().enumerate() {
            queues[r].lock().unwrap().push(comm);
        }
    }
    let results = on_ranks(2, |comm| {
        let rank = comm.rank();
        let make = || -> Box<dyn Communicator> {
            Box::new(queues[rank].lock().unwrap().pop().expect("one per run"))
        };
        let dir = base.join(format!("rank{rank}"));
        let job = JobRank {
            rank,
            communicator: &make,
        };
        let runs = compare_with(
            &config,
            &variants,
            &[3],
            &dir,
            Device::Cpu,
            &mut |_| Box::new(Quiet),
            Some(job),
        )?;
        Ok(runs
            .iter()
            .map(|(_, r)| r[0].summary.clone())
            .collect::<Vec<_>>())
    });
    let results: Vec<_> = results.into_iter().collect::<Result<_>>().unwrap();
    assert_eq!(results[0], results[1], "the ranks' summaries differ");
    let rank0 = base.join("rank0");
    for file in [
        "compare.md",
        "compare.json",
        "bce/seed3/report.json",
        "plm/seed3/report.json",
    ] {
        assert!(rank0.join(file).exists(), "{file} missing");
    }
    assert!(!base.join("rank1").exists(), "rank 1 wrote files");
    let _ = std::fs::remove_dir_all(&base);
}
