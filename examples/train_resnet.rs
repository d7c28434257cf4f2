//! The README's ResNet training, run on random CIFAR-shaped images (CIFAR
//! itself is not shipped): it shows the API, not accuracy. A CIFAR
//! ResNet-20 with SGD + Nesterov momentum, weight decay and a cosine
//! schedule, trained by `train::Trainer` with cross-entropy on the
//! loader's labels and validation accuracy every epoch.
//!
//! Run: `cargo run --release --example train_resnet`

use ferrite::data::loader::{Batch, DataLoader, LoaderConfig};
use ferrite::data::{ImageDataset, Labels};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::nn::resnet::{resnet20, ResNet};
use ferrite::nn::Module;
use ferrite::optim::{CosineAnnealing, ParamGroup, Sgd, SgdConfig};
use ferrite::rand::{rngs::StdRng, Rng, SeedableRng};
use ferrite::train::trainer::{Accuracy, EarlyStopping, Monitor, Observer};
use ferrite::train::Trainer;
use ferrite::{Result, Tensor};
use serde_json::Value;

/// `n` random 3×32×32 images with labels 0..10.
fn random_cifar(n: usize, seed: u64) -> ImageDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    ImageDataset {
        images: (0..n * 3 * 32 * 32).map(|_| rng.random()).collect(),
        channels: 3,
        height: 32,
        width: 32,
        num_classes: 10,
        labels: Labels::Single((0..n as u32).map(|i| i % 10).collect()),
        name: "random".into(),
    }
}

/// Prints one line per epoch.
struct Print;

impl Observer for Print {
    fn epoch_finished(&mut self, record: &Value) {
        let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        println!(
            "epoch {}: lr {:.4}, train loss {:.4}, val accuracy {:.3}",
            record["epoch"],
            number(&record["lr"]),
            number(&record["train_loss"]),
            number(&record["val"]["accuracy"])
        );
    }
}

fn main() -> Result<()> {
    let epochs = 3;
    let mut rng = StdRng::seed_from_u64(0);
    let net = ResNet::new(&resnet20(3, 10), &mut rng)?; // CIFAR ResNet-20
    let params = ParamGroup::new(net.parameters(), 0.1, 5e-4); // lr, weight decay
    let sgd = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    let loss = |logits: &Tensor, batch: &Batch| {
        cross_entropy(
            logits,
            batch.class_labels()?,
            &CrossEntropyOptions::default(),
        )
    };
    let out = std::env::temp_dir().join("ferrite-example-resnet20");
    let _ = std::fs::remove_dir_all(&out); // the trainer never overwrites a run
    let mut trainer = Trainer::new(net, Sgd::new(vec![params], sgd)?, loss)?
        .epochs(epochs)
        .schedule(CosineAnnealing {
            t_max: epochs,
            eta_min: 0.0,
        })
        .metric(Accuracy::new())
        .best_checkpoint(Monitor::max("val.accuracy")) // best.safetensors
        .early_stopping(EarlyStopping::new(Monitor::min("val.loss"), 5))
        .output(&out)?; // or .resume(&out)?
    let (train_set, val_set) = (random_cifar(64, 1), random_cifar(32, 2));
    let mut train = DataLoader::new(&train_set, LoaderConfig::training(16, 0))?;
    let mut val = DataLoader::new(&val_set, LoaderConfig::evaluation(32))?;
    let history = trainer.fit(&mut train, Some(&mut val), &mut Print)?;
    println!(
        "best validation accuracy {:?}; files in {}",
        history.best,
        out.display()
    );
    Ok(())
}
