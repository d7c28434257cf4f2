//! Partial Label Masking by hand: the training loop that `ferrite train
//! --loss plm` runs, written out with the library's pieces (MultiMNIST-LT,
//! the data loader, a small ResNet, BCE with logits, PLM, the metrics).
//!
//! Run: `cargo run --release --example plm_multimnist` (about a minute).

use ferrite::data::multimnist::{generate_test, generate_train, MultiMnistConfig};
use ferrite::data::{mnist, DataLoader, LoaderConfig};
use ferrite::loss::{bce_with_logits, Reduction};
use ferrite::metrics::multilabel_report;
use ferrite::nn::{self, resnet, Module, Visit};
use ferrite::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use ferrite::plm::{Plm, PlmConfig, RhatInit};
use ferrite::{no_grad, Result};
use rand::{rngs::StdRng, SeedableRng};

fn main() -> Result<()> {
    // Data: 8,000 training and 2,000 test images, digit 0 100× as frequent as 9.
    let (mnist_train, mnist_test) =
        mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))?;
    let cfg = MultiMnistConfig {
        train_size: 8_000,
        test_size: 2_000,
        ..MultiMnistConfig::default()
    };
    let (train, test) = (
        generate_train(&cfg, &mnist_train)?,
        generate_test(&cfg, &mnist_test)?,
    );
    let positives = train.positives_per_class();
    println!("training positives per class: {positives:?}");

    // Model: a ResNet-8 whose 7×7 stride-2 stem and max-pool shrink 56×56 to 14×14.
    let mut config = resnet::resnet_cifar(8, 1, 10)?;
    config.stem = resnet::Stem::ImageNet;
    let mut net = resnet::ResNet::new(&config, &mut StdRng::seed_from_u64(0))?;
    let groups = vec![ParamGroup::new(nn::parameters(&net), 1e-3, 0.0)];
    let mut opt = Adam::new(groups, AdamConfig::default())?;

    // PLM: r̂ starts at 1 (balanced), λ = 0.1 so it moves visibly in 4 epochs.
    let plm_config = PlmConfig {
        init: RhatInit::Balanced,
        lambda: 0.1,
        ..PlmConfig::default()
    };
    let mut plm = Plm::new(plm_config, &positives, train.len())?;

    let mut loader = DataLoader::new(&train, LoaderConfig::training(128, 0))?;
    for epoch in 0..4 {
        net.set_training(true);
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let logits = net.forward(&batch.x)?;
            let per_element = bce_with_logits(&logits, &batch.targets, None, Reduction::None)?;
            let loss = plm.masked_loss(&per_element, &batch.targets)?; // Σ g·l / (B·C)
            plm.observe(&logits.detach().sigmoid()?, &batch.targets)?; // histograms
            opt.step(&loss.backward()?)?;
        }
        let update = plm.end_epoch()?; // r̂ ← r̂·exp(λΔ), histograms reset
        let rhat: Vec<String> = update.rhat.iter().map(|r| format!("{r:.3}")).collect();
        println!("epoch {}: r̂ = [{}]", epoch + 1, rhat.join(", "));
    }

    // Evaluation: sigmoid scores on the test set, metrics at 0.5.
    net.set_training(false);
    let mut scores = Vec::new();
    let mut targets = Vec::new();
    for batch in DataLoader::new(&test, LoaderConfig::evaluation(256))?.epoch(0) {
        let batch = batch?;
        let logits = no_grad(|| net.forward(&batch.x))?;
        scores.extend(logits.sigmoid()?.to_vec::<f32>()?);
        targets.extend(batch.targets.to_vec::<f32>()?.iter().map(|&t| t as u8));
    }
    let report = multilabel_report(&scores, &targets, 10, 0.5)?;
    println!(
        "macro-F1 {:.3}, micro-F1 {:.3}, 0-1 accuracy {:.3}, mAP {:.3}",
        report.macro_f1, report.micro_f1, report.subset_accuracy, report.map
    );
    for (c, m) in report.per_class.iter().enumerate() {
        println!(
            "digit {c}: {:>5} training positives, precision {:.3}, recall {:.3}",
            positives[c], m.precision, m.recall
        );
    }
    Ok(())
}
