//! The generic trainer (`ferrite::train::Trainer`) on a derived CNN and a
//! small MNIST subset: validation metrics, the best checkpoint, early
//! stopping, exact resume, refusing to overwrite a run, errors from the
//! loss closure, and the JSONL log.

use ferrite::checkpoint::read_training;
use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::{mnist, ImageDataset};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::nn::{Bias, Conv2d, Linear, Module};
use ferrite::ops::{Conv2dParams, Pool2dParams};
use ferrite::optim::{Adam, AdamConfig, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::train::trainer::{
    Accuracy, Criterion, EarlyStopping, Metric, Monitor, Quiet, TrainOptimizer, Trainer,
    BEST_CHECKPOINT_FILE, CHECKPOINT_FILE, LOG_FILE,
};
use ferrite::{Error, Result, Tensor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// conv → ReLU → max-pool → linear: small enough for a few epochs in a
/// second, no batch norm (so that a zero learning rate changes nothing).
#[derive(Module)]
struct Net {
    conv: Conv2d,
    fc: Linear,
}

impl Net {
    fn new(seed: u64) -> Net {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = Conv2dParams::default().stride(2).padding(1);
        Net {
            conv: Conv2d::new(1, 4, 3, p, Bias::Yes, &mut rng).unwrap(),
            fc: Linear::new(4 * 7 * 7, 10, Bias::Yes, &mut rng).unwrap(),
        }
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self
            .conv
            .forward(x)?
            .relu()?
            .max_pool2d(Pool2dParams::new(2))?;
        self.fc.forward(&h.flatten(1, -1)?)
    }
}

/// 512 training and 256 validation images of MNIST.
fn data() -> &'static (ImageDataset, ImageDataset) {
    static DATA: OnceLock<(ImageDataset, ImageDataset)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
        let (train, test) = mnist::load(dir).unwrap();
        let train = ImageDataset::from_split(&train, "train").unwrap();
        let test = ImageDataset::from_split(&test, "test").unwrap();
        (
            train.subset(&(0..512).collect::<Vec<_>>()).unwrap(),
            test.subset(&(0..256).collect::<Vec<_>>()).unwrap(),
        )
    })
}

fn loaders() -> (DataLoader<'static>, DataLoader<'static>) {
    let (train, val) = data();
    let norm = |c: LoaderConfig| c.normalized(&[0.1307], &[0.3081]);
    (
        DataLoader::new(train, norm(LoaderConfig::training(64, 3))).unwrap(),
        DataLoader::new(val, norm(LoaderConfig::evaluation(128))).unwrap(),
    )
}

fn cross_entropy_loss(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let labels = batch
        .labels
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument {
            op: "loss",
            msg: "no labels".into(),
        })?;
    cross_entropy(logits, labels, &CrossEntropyOptions::default())
}

type Loss = fn(&Tensor, &Batch) -> Result<Tensor>;

/// A trainer of a fresh `Net` by Adam at `lr` (same initial weights every time).
fn adam_trainer(lr: f64) -> Trainer<Net, Loss> {
    let model = Net::new(0);
    let opt = Adam::new(
        vec![ParamGroup::new(model.parameters(), lr, 0.0)],
        AdamConfig::default(),
    )
    .unwrap();
    Trainer::new(model, opt, cross_entropy_loss as Loss).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn log_of(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every parameter and buffer, as bits.
fn bits(model: &Net) -> Vec<(String, Vec<u32>)> {
    model
        .state_dict()
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            )
        })
        .collect()
}

/// A metric that reports the next of a fixed list of values at each
/// validation, as `val.score`.
struct Scripted(Vec<f64>, usize);

impl Metric for Scripted {
    fn reset(&mut self) {}
    fn update(&mut self, _: &Tensor, _: &Batch) -> Result<()> {
        Ok(())
    }
    fn compute(&mut self) -> Result<Vec<(String, f64)>> {
        self.1 += 1;
        Ok(vec![("score".into(), self.0[self.1 - 1])])
    }
}

#[test]
fn a_derived_model_learns_with_a_closure_loss_and_validation_is_logged() {
    let dir = scratch("learns");
    let (mut train, mut val) = loaders();
    let mut trainer = adam_trainer(3e-3)
        .epochs(3)
        .metric(Accuracy::new())
        .output(&dir)
        .unwrap();
    let history = trainer.fit(&mut train, Some(&mut val), &mut Quiet).unwrap();
    assert_eq!(history.records.len(), 3);
    assert!(!history.stopped_early);
    let (first, last) = (&history.records[0], &history.records[2]);
    assert!(
        last.validation("loss").unwrap() < first.validation("loss").unwrap(),
        "{history:?}"
    );
    let accuracy = last.validation("accuracy").unwrap();
    assert!(accuracy > 0.6, "validation accuracy {accuracy}");
    // One log line per epoch, with the validation values under `val`.
    let log = log_of(&dir);
    assert_eq!(log.len(), 3);
    for (i, line) in log.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1);
        assert_eq!(
            line["val"]["accuracy"],
            history.records[i].validation("accuracy").unwrap()
        );
        assert!(line["train_loss"].as_f64().unwrap().is_finite());
        assert!(line["lr"].as_f64().unwrap() == 3e-3);
    }
    assert_eq!(read_training(dir.join(CHECKPOINT_FILE)).unwrap().epoch, 3);
    assert!(
        !dir.join(BEST_CHECKPOINT_FILE).exists(),
        "no best checkpoint asked for"
    );
    // Training is over: another epoch is refused, not silently run.
    let err = trainer
        .train_epoch(&mut train, None, &mut Quiet)
        .unwrap_err();
    assert!(err.to_string().contains("training is over"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_best_checkpoint_is_written_when_the_metric_improves_and_only_then() {
    let dir = scratch("best");
    let (mut train, mut val) = loaders();
    let scores = vec![0.5, 0.7, 0.6, 0.7, 0.9];
    let mut trainer = adam_trainer(1e-3)
        .epochs(5)
        .metric(Scripted(scores, 0))
        .best_checkpoint(Monitor::max("val.score"))
        .output(&dir)
        .unwrap();
    // Epoch at which each score was the best so far (0.7 again is no improvement).
    let expected_best_epoch = [1, 2, 2, 2, 5];
    for (i, expected) in expected_best_epoch.into_iter().enumerate() {
        let record = trainer
            .train_epoch(&mut train, Some(&mut val), &mut Quiet)
            .unwrap();
        assert_eq!(record.improved, expected == i + 1, "epoch {}", i + 1);
        let best = read_training(dir.join(BEST_CHECKPOINT_FILE)).unwrap();
        assert_eq!(best.epoch as usize, expected, "after epoch {}", i + 1);
    }
    assert_eq!(trainer.best(), Some((0.9, 5)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    let dir = scratch("early");
    let (mut train, mut val) = loaders();
    // A zero learning rate: the validation loss never changes, so only the
    // first epoch improves it.
    let model = Net::new(0);
    let before = bits(&model);
    let opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 0.0, 0.0)],
        SgdConfig::default(),
    )
    .unwrap();
    let mut trainer = Trainer::new(model, opt, cross_entropy_loss)
        .unwrap()
        .epochs(10)
        .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 2))
        .output(&dir)
        .unwrap();
    let history = trainer.fit(&mut train, Some(&mut val), &mut Quiet).unwrap();
    assert!(history.stopped_early);
    assert_eq!(history.records.len(), 3, "1 improving epoch + patience 2");
    assert!(history.records[2].stopped_early);
    assert_eq!(bits(trainer.model()), before);
    assert_eq!(log_of(&dir).len(), 3);
    drop(trainer);

    // Reopened, the stopped run stays stopped.
    let model = Net::new(0);
    let opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 0.0, 0.0)],
        SgdConfig::default(),
    )
    .unwrap();
    let mut resumed = Trainer::new(model, opt, cross_entropy_loss)
        .unwrap()
        .epochs(10)
        .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 2))
        .resume(&dir)
        .unwrap();
    assert!(resumed.stopped_early());
    let again = resumed.fit(&mut train, Some(&mut val), &mut Quiet).unwrap();
    assert!(again.records.is_empty() && again.stopped_early);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let configure = |t: Trainer<Net, Loss>| {
        t.epochs(3)
            .metric(Accuracy::new())
            .best_checkpoint(Monitor::max("val.accuracy"))
            .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 5))
    };
    let (mut train, mut val) = loaders();
    let straight_dir = scratch("straight");
    let mut straight = configure(adam_trainer(3e-3)).output(&straight_dir).unwrap();
    straight
        .fit(&mut train, Some(&mut val), &mut Quiet)
        .unwrap();

    let split_dir = scratch("split");
    let mut first = configure(adam_trainer(3e-3)).output(&split_dir).unwrap();
    first
        .train_epoch(&mut train, Some(&mut val), &mut Quiet)
        .unwrap();
    drop(first); // the process "dies" after epoch 1
    let mut resumed = configure(adam_trainer(3e-3)).resume(&split_dir).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    let history = resumed.fit(&mut train, Some(&mut val), &mut Quiet).unwrap();
    assert_eq!(history.records.len(), 2);

    assert_eq!(bits(straight.model()), bits(resumed.model()));
    assert_eq!(straight.best(), resumed.best());
    let strip = |dir: &Path| -> Vec<Value> {
        log_of(dir)
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                o.remove("train_seconds");
                // When and where each epoch ran.
                assert!(o.remove("provenance").unwrap()["git_commit"].is_string());
                o.remove("images_per_sec");
                v
            })
            .collect()
    };
    assert_eq!(strip(&straight_dir), strip(&split_dir));
    let best = |d: &Path| read_training(d.join(BEST_CHECKPOINT_FILE)).unwrap().epoch;
    assert_eq!(best(&straight_dir), best(&split_dir));
    let _ = std::fs::remove_dir_all(&straight_dir);
    let _ = std::fs::remove_dir_all(&split_dir);
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let dir = scratch("overwrite");
    let (mut train, _) = loaders();
    let mut trainer = adam_trainer(1e-3).output(&dir).unwrap();
    trainer.fit(&mut train, None, &mut Quiet).unwrap();
    let log = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    let err = adam_trainer(1e-3).output(&dir).err().expect("must refuse");
    assert!(err.to_string().contains("already holds a run"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join(LOG_FILE)).unwrap(), log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_of_the_loss_and_of_the_setup_are_errors_not_panics() {
    let (mut train, mut val) = loaders();
    // The closure fails on its third batch.
    let model = Net::new(0);
    let opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 0.1, 0.0)],
        SgdConfig::default(),
    )
    .unwrap();
    let mut calls = 0;
    let mut trainer = Trainer::new(model, opt, |logits: &Tensor, batch: &Batch| {
        calls += 1;
        if calls == 3 {
            return Err(Error::InvalidArgument {
                op: "my_loss",
                msg: "batch three is cursed".into(),
            });
        }
        cross_entropy_loss(logits, batch)
    })
    .unwrap();
    let err = trainer.fit(&mut train, None, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("batch three is cursed"), "{err}");

    // A loss that is not a scalar.
    let model = Net::new(0);
    // A boxed optimizer (chosen at run time) works as the optimizer itself.
    let opt: Box<dyn TrainOptimizer> = Box::new(
        Sgd::new(
            vec![ParamGroup::new(model.parameters(), 0.1, 0.0)],
            SgdConfig::default(),
        )
        .unwrap(),
    );
    let mut trainer =
        Trainer::new(model, opt, |logits: &Tensor, _: &Batch| Ok(logits.clone())).unwrap();
    let err = trainer.fit(&mut train, None, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("must be a scalar"), "{err}");

    // An optimizer built before the model was moved holds stale tensors.
    let mut model = Net::new(0);
    let opt = Sgd::new(
        vec![ParamGroup::new(model.parameters(), 0.1, 0.0)],
        SgdConfig::default(),
    )
    .unwrap();
    model.to_device(ferrite::Device::Cpu).unwrap();
    let err = Trainer::new(model, opt, cross_entropy_loss)
        .err()
        .expect("stale optimizer");
    assert!(
        err.to_string().contains("not parameters of the model"),
        "{err}"
    );

    // A monitored value that does not exist is named, with the ones that do.
    let dir = scratch("unknown-metric");
    let mut trainer = adam_trainer(1e-3)
        .best_checkpoint(Monitor::max("val.acuracy"))
        .output(&dir)
        .unwrap();
    let err = trainer
        .fit(&mut train, Some(&mut val), &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("val.acuracy") && err.contains("val.loss"),
        "{err}"
    );
    // A validation value without validation data, a best checkpoint without a folder.
    let mut trainer =
        adam_trainer(1e-3).early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 1));
    let err = trainer.fit(&mut train, None, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("no validation loader"), "{err}");
    let mut trainer = adam_trainer(1e-3).best_checkpoint(Monitor::min("train_loss"));
    let err = trainer.fit(&mut train, None, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("output folder"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cross-entropy that counts its batches: the count goes into every
/// record and into the checkpoint.
struct Counting(u64);

impl Criterion for Counting {
    fn loss(&mut self, output: &Tensor, batch: &Batch) -> Result<Tensor> {
        self.0 += 1;
        cross_entropy_loss(output, batch)
    }
    fn validation_loss(&mut self, _: &Tensor, _: &Batch) -> Result<Option<Tensor>> {
        Ok(None)
    }
    fn end_epoch(&mut self) -> Result<Map<String, Value>> {
        Ok([("batches".to_string(), Value::from(self.0))]
            .into_iter()
            .collect())
    }
    fn state(&self) -> Result<BTreeMap<String, String>> {
        Ok([("counting.batches".to_string(), self.0.to_string())].into())
    }
    fn load_state(&mut self, metadata: &BTreeMap<String, String>) -> Result<()> {
        let text = metadata
            .get("counting.batches")
            .ok_or_else(|| Error::InvalidArgument {
                op: "Counting",
                msg: "no count".into(),
            })?;
        self.0 = text.parse().map_err(|_| Error::InvalidArgument {
            op: "Counting",
            msg: format!("bad count {text:?}"),
        })?;
        Ok(())
    }
}

#[test]
fn a_criterion_adds_to_the_record_and_its_state_survives_a_resume() {
    let counting_trainer = || {
        let model = Net::new(0);
        let opt = Adam::new(
            vec![ParamGroup::new(model.parameters(), 1e-3, 0.0)],
            AdamConfig::default(),
        )
        .unwrap();
        Trainer::with_criterion(model, opt, Counting(0))
            .unwrap()
            .epochs(2)
            .metric(Accuracy::new())
    };
    let dir = scratch("criterion");
    let (mut train, mut val) = loaders();
    let mut first = counting_trainer().output(&dir).unwrap();
    let record = first
        .train_epoch(&mut train, Some(&mut val), &mut Quiet)
        .unwrap();
    assert_eq!(record.extra["batches"], 8, "512 images in batches of 64");
    // No validation loss from this criterion, only the metric.
    assert_eq!(record.validation("loss"), None);
    assert!(record.validation("accuracy").is_some());
    drop(first);
    let mut resumed = counting_trainer().resume(&dir).unwrap();
    assert_eq!(resumed.criterion().0, 8);
    resumed.fit(&mut train, Some(&mut val), &mut Quiet).unwrap();
    let log = log_of(&dir);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1]["batches"], 16);
    assert!(log[1]["val"].get("loss").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_validation_sets_each_get_every_metric_and_can_be_monitored() {
    let dir = scratch("sets");
    let (train_set, val_set) = data();
    let norm = |c: LoaderConfig| c.normalized(&[0.1307], &[0.3081]);
    let mut train = DataLoader::new(train_set, norm(LoaderConfig::training(64, 3))).unwrap();
    // The same images twice, the second time in another order and batch
    // size: every value must agree.
    let mut a = DataLoader::new(val_set, norm(LoaderConfig::evaluation(128))).unwrap();
    let half = val_set.subset(&(0..128).collect::<Vec<_>>()).unwrap();
    let mut b = DataLoader::new(&half, norm(LoaderConfig::evaluation(50))).unwrap();
    let mut trainer = adam_trainer(3e-3)
        .epochs(2)
        .metric(Accuracy::new())
        .best_checkpoint(Monitor::max("half.accuracy"))
        .output(&dir)
        .unwrap();
    let history = trainer
        .fit_sets(
            &mut train,
            &mut [("all", &mut a), ("half", &mut b)],
            &mut Quiet,
        )
        .unwrap();
    let last = history.records.last().unwrap();
    assert_eq!(last.validation.len(), 2);
    assert_eq!(
        last.validation("accuracy"),
        last.validation_of("all", "accuracy")
    );
    let half_accuracy = last.validation_of("half", "accuracy").unwrap();
    let log = log_of(&dir);
    assert_eq!(log[1]["half"]["accuracy"].as_f64(), Some(half_accuracy));
    assert!(log[1]["all"]["loss"].as_f64().unwrap().is_finite());
    assert_eq!(
        history.best.map(|(v, _)| v),
        Some(
            history
                .records
                .iter()
                .map(|r| r.validation_of("half", "accuracy").unwrap())
                .fold(f64::MIN, f64::max)
        )
    );
    // Names that cannot be told apart, or that clash with the record's own
    // fields, are refused before training.
    for sets in [["x", "x"], ["lr", "y"], ["a.b", "y"]] {
        let dir = scratch(&format!("sets-{}", sets[0]));
        let mut trainer = adam_trainer(3e-3).epochs(1).output(&dir).unwrap();
        let (mut a, mut b) = (loaders().1, loaders().1);
        let err = trainer
            .fit_sets(
                &mut train,
                &mut [(sets[0], &mut a), (sets[1], &mut b)],
                &mut Quiet,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("validation set"), "{sets:?}: {err}");
        assert_eq!(trainer.epochs_done(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
