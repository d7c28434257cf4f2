//! Training with `ferrite::train::Trainer`, the way a PyTorch Lightning or
//! Keras user expects: a derived CNN, a loss closure, Adam with a cosine
//! schedule, validation accuracy each epoch, the best checkpoint, early
//! stopping and a JSONL log, on any device.
//!
//! Run: `cargo run --release --example trainer [-- EPOCHS [TRAIN_IMAGES]]`
//! (on a GPU: `TRAINER_DEVICE=cuda cargo run --release --features cuda
//! --example trainer`). Run it again with `RESUME=1` after stopping it to
//! continue from its checkpoint.

use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::{mnist, ImageDataset};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Linear, Module};
use ferrite::ops::{Conv2dParams, Pool2dParams};
use ferrite::optim::{Adam, AdamConfig, CosineAnnealing, ParamGroup};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::train::trainer::{Accuracy, EarlyStopping, Monitor, Observer, Trainer};
use ferrite::{Device, Result, Tensor};
use serde_json::Value;

/// conv → batch norm → ReLU → max-pool, twice, then a linear classifier.
#[derive(Module)]
struct Cnn {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    fc: Linear,
}

impl Cnn {
    fn new(rng: &mut StdRng) -> Result<Self> {
        let same = Conv2dParams::default().padding(1);
        Ok(Cnn {
            conv1: Conv2d::new(1, 16, 3, same, Bias::No, rng)?,
            bn1: BatchNorm2d::new(16)?,
            conv2: Conv2d::new(16, 32, 3, same, Bias::No, rng)?,
            bn2: BatchNorm2d::new(32)?,
            fc: Linear::new(32 * 7 * 7, 10, Bias::Yes, rng)?,
        })
    }
}

impl Module for Cnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pool = Pool2dParams::new(2);
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let h = h.max_pool2d(pool)?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?.relu()?;
        self.fc.forward(&h.max_pool2d(pool)?.flatten(1, -1)?)
    }
}

/// Prints one line per epoch and the trainer's notes.
struct Print;

impl Observer for Print {
    fn epoch_finished(&mut self, record: &Value) {
        println!(
            "epoch {}: train loss {:.4}, val loss {:.4}, val accuracy {:.2} %, {:.0} img/s",
            record["epoch"],
            record["train_loss"].as_f64().unwrap_or(f64::NAN),
            record["val"]["loss"].as_f64().unwrap_or(f64::NAN),
            100.0 * record["val"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            record["images_per_sec"].as_f64().unwrap_or(0.0),
        );
    }
    fn warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn info(&mut self, message: &str) {
        println!("  {message}");
    }
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs = args.first().copied().unwrap_or(3);
    let device: Device = std::env::var("TRAINER_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()?;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
    let (train, test) = mnist::load(dir)?;
    let (train, test) = (
        ImageDataset::from_split(&train, "train")?,
        ImageDataset::from_split(&test, "test")?,
    );
    let n = args.get(1).copied().unwrap_or(train.len()).min(train.len());
    let train = train.subset(&(0..n).collect::<Vec<_>>())?;
    let val = test.subset(&(0..2000.min(test.len())).collect::<Vec<_>>())?;

    let mut model = Cnn::new(&mut StdRng::seed_from_u64(0))?;
    model.to_device(device)?; // before the optimizer takes the parameters
    let optimizer = Adam::new(
        vec![ParamGroup::new(model.parameters(), 2e-3, 0.0)],
        AdamConfig::default(),
    )?;
    let loss = |logits: &Tensor, batch: &Batch| {
        cross_entropy(
            logits,
            batch.class_labels()?,
            &CrossEntropyOptions::default(),
        )
    };
    let trainer = Trainer::new(model, optimizer, loss)?
        .epochs(epochs)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        })
        .metric(Accuracy::new())
        .best_checkpoint(Monitor::max("val.accuracy"))
        .early_stopping(EarlyStopping::new(
            Monitor::min("val.loss").min_delta(1e-4),
            2,
        ));
    let out = std::env::temp_dir().join("ferrite-example-trainer");
    let mut trainer = if std::env::var_os("RESUME").is_some() {
        trainer.resume(&out)?
    } else {
        // A new run: remove the previous one (the trainer never overwrites a run).
        let _ = std::fs::remove_dir_all(&out);
        trainer.output(&out)?
    };

    let norm = |c: LoaderConfig| c.normalized(&[0.1307], &[0.3081]);
    let mut train_loader = DataLoader::new(&train, norm(LoaderConfig::training(128, 0)))?;
    let mut val_loader = DataLoader::new(&val, norm(LoaderConfig::evaluation(500)))?;
    let history = trainer.fit(&mut train_loader, Some(&mut val_loader), &mut Print)?;
    if let Some((accuracy, epoch)) = history.best {
        println!(
            "best validation accuracy {:.2} % at epoch {epoch}{}",
            100.0 * accuracy,
            if history.stopped_early {
                " (stopped early)"
            } else {
                ""
            }
        );
    }
    println!(
        "wrote {0}/log.jsonl, {0}/checkpoint.safetensors, {0}/best.safetensors",
        out.display()
    );
    Ok(())
}
