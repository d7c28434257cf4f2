//! A first model, the way a PyTorch user would write it: a derived CNN,
//! ferrite's data loader, cross-entropy on the loader's labels, Adam,
//! accuracy each epoch, a checkpoint saved and loaded back, on any device.
//!
//! Run: `cargo run --release --example first_model [-- EPOCHS [TRAIN_IMAGES]]`
//! (on a GPU: `FIRST_MODEL_DEVICE=cuda cargo run --release --features cuda
//! --example first_model`).

use ferrite::checkpoint::Strict;
use ferrite::checkpoint::{load_into_module, save_module};
use ferrite::data::loader::{DataLoader, LoaderConfig};
use ferrite::data::{mnist, ImageDataset};
use ferrite::loss::{cross_entropy, CrossEntropyOptions};
use ferrite::metrics::accuracy;
use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Linear, Module, Visit};
use ferrite::ops::{Conv2dParams, Pool2dParams};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::rand::{rngs::StdRng, SeedableRng};
use ferrite::{no_grad, Device, Result, Tensor};

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
        let h = self
            .bn1
            .forward(&self.conv1.forward(x)?)?
            .relu()?
            .max_pool2d(pool)?;
        let h = self
            .bn2
            .forward(&self.conv2.forward(&h)?)?
            .relu()?
            .max_pool2d(pool)?;
        self.fc.forward(&h.flatten(1, -1)?)
    }
}

/// Mean accuracy of `model` over `data`, in evaluation mode.
fn evaluate(model: &mut Cnn, data: &ImageDataset, device: Device) -> Result<f64> {
    model.set_training(false);
    let config = LoaderConfig::evaluation(500).normalized(&[0.1307], &[0.3081]);
    let (mut correct, mut seen) = (0.0, 0usize);
    for batch in DataLoader::new(data, config)?.epoch(0) {
        let batch = batch?;
        let labels = batch
            .labels
            .as_ref()
            .expect("MNIST has one label per image");
        let logits = no_grad(|| model.forward(&batch.x.to_device(device)?))?;
        correct += accuracy(&logits, &labels.to_device(device)?)? * batch.len() as f64;
        seen += batch.len();
    }
    model.set_training(true);
    Ok(correct / seen as f64)
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs = args.first().copied().unwrap_or(2);
    let device: Device = std::env::var("FIRST_MODEL_DEVICE")
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

    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Cnn::new(&mut rng)?;
    model.to_device(device)?; // before the optimizer takes the parameters
    let mut opt = Adam::new(
        vec![ParamGroup::new(model.parameters(), 2e-3, 0.0)],
        AdamConfig::default(),
    )?;
    let config = LoaderConfig::training(128, 0).normalized(&[0.1307], &[0.3081]);
    let mut loader = DataLoader::new(&train, config)?;
    for epoch in 0..epochs {
        let mut last_loss = Tensor::scalar(0f32);
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let labels = batch
                .labels
                .as_ref()
                .expect("MNIST has one label per image");
            let logits = model.forward(&batch.x.to_device(device)?)?;
            let loss = cross_entropy(
                &logits,
                &labels.to_device(device)?,
                &CrossEntropyOptions::default(),
            )?;
            opt.step(&loss.backward()?)?;
            last_loss = loss.detach();
        }
        let acc = evaluate(&mut model, &test, device)?;
        println!(
            "epoch {}: last batch loss {:.4}, test accuracy {:.2} %",
            epoch + 1,
            last_loss.item::<f32>()?,
            100.0 * acc
        );
    }

    // Save, load into a fresh model on the CPU, and check it scores the same.
    let path = std::env::temp_dir().join(format!("first_model-{}.safetensors", std::process::id()));
    save_module(&path, &model, &Default::default())?;
    let mut restored = Cnn::new(&mut StdRng::seed_from_u64(1))?;
    let report = load_into_module(&path, &restored, Strict::Yes)?;
    println!("reloaded: {report}");
    let (before, after) = (
        evaluate(&mut model, &test, device)?,
        evaluate(&mut restored, &test, Device::Cpu)?,
    );
    println!(
        "test accuracy {:.2} % on {device}, {:.2} % reloaded on the CPU",
        100.0 * before,
        100.0 * after
    );
    std::fs::remove_file(&path).ok();
    Ok(())
}
