//! The seed corpus: small valid inputs for every target, written by
//! ferrite itself (`ferrite-fuzz seeds` rewrites `corpus/`).

use crate::input::{self, Input};
use crate::mutate::gzip;
use crate::targets::{self, Target};
use crate::tiny::{self, idx};
use ferrite::checkpoint::{save_module, save_state_dict, save_training, OptimizerState};
use ferrite::optim::{Adam, AdamConfig, ParamGroup, Sgd, SgdConfig};
use ferrite::plm::{Plm, PlmConfig};
use ferrite::tensor::Tensor;
use ferrite::train::config::{DataConfig, DatasetKind, OptimizerKind, ScheduleKind, TrainConfig};
use ferrite::train::{LossSpec, Quiet, Run};
use std::collections::BTreeMap;
use std::path::Path;

/// A named seed of one target.
pub type Seed = (&'static str, &'static str, Input);

fn one(target: &'static str, name: &'static str, bytes: impl Into<Vec<u8>>) -> Seed {
    (target, name, vec![bytes.into()])
}

/// Every seed, as `(target, name, input)`. `work` is a scratch folder for
/// the training runs whose checkpoints and reports become seeds.
pub fn all(work: &Path) -> ferrite::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    let images = idx(
        &[3, 4, 4],
        &(0..48).map(|i| (i * 5) as u8).collect::<Vec<_>>(),
    );
    let labels = idx(&[3], &[1, 7, 9]);
    seeds.push(one("idx", "images", images.clone()));
    seeds.push(one("idx", "labels", labels.clone()));
    seeds.push(one("idx-gz", "images", gzip(&images)));
    seeds.push(one("idx-gz", "labels", gzip(&labels)));
    let small = |n: u32, side: u32| {
        let px = (n * side * side) as usize;
        (
            idx(
                &[n, side, side],
                &(0..px).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>(),
            ),
            idx(&[n], &(0..n as u8).map(|i| i % 10).collect::<Vec<_>>()),
        )
    };
    let (train_x, train_y) = small(4, 6);
    let (test_x, test_y) = small(2, 6);
    seeds.push(("mnist", "tiny", vec![train_x, train_y, test_x, test_y]));
    let record = |labels: &[u8]| {
        let mut r = labels.to_vec();
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    seeds.push(one(
        "cifar10",
        "two-records",
        [record(&[3]), record(&[9])].concat(),
    ));
    seeds.push(one(
        "cifar100",
        "two-records",
        [record(&[19, 99]), record(&[0, 5])].concat(),
    ));

    let sd_path = work.join("small.safetensors");
    tiny::with_small_module(|m| save_module(&sd_path, m, &BTreeMap::new()))?;
    seeds.push(one("safetensors", "conv-bn", read(&sd_path)));
    let mixed = vec![
        (
            "a".to_string(),
            Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2])?,
        ),
        ("b".to_string(), Tensor::from_vec(vec![7i64, -1], &[2])?),
        ("c".to_string(), Tensor::from_vec(vec![0.5f64], &[1, 1, 1])?),
        ("d".to_string(), Tensor::from_vec(vec![1u8, 2, 3], &[3])?),
        (
            "empty".to_string(),
            Tensor::from_vec(Vec::<f32>::new(), &[0, 3, 3])?,
        ),
    ];
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_state_dict(&sd_path, &mixed, &meta)?;
    seeds.push(one("safetensors", "mixed-dtypes", read(&sd_path)));

    // Training checkpoints of the small module (SGD with momentum, Adam).
    let ck_path = work.join("small-checkpoint.safetensors");
    let params = tiny::with_small_module(|m| ferrite::nn::parameters(m));
    let group = || vec![ParamGroup::new(params.clone(), 0.1, 0.0)];
    let sgd = Sgd::new(
        group(),
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    )?;
    let adam = Adam::new(group(), AdamConfig::default())?;
    let extra = BTreeMap::from([("user.note".to_string(), "seed".to_string())]);
    for (name, state) in [
        ("small-sgd", OptimizerState::from_sgd(&sgd)?),
        ("small-adam", OptimizerState::from_adam(&adam)?),
    ] {
        tiny::with_small_module(|m| save_training(&ck_path, m, &state, 3, &extra))?;
        seeds.push(one("checkpoint", name, read(&ck_path)));
    }

    // Training runs on the tiny MNIST folder: checkpoints, logs, reports.
    tiny::ensure_data_dir().map_err(|source| ferrite::Error::Io {
        path: tiny::DATA_DIR.into(),
        source,
    })?;
    let mut data = DataConfig::new(DatasetKind::Mnist);
    data.dir = tiny::data_dir();
    let mut bce = TrainConfig::new(data.clone(), "resnet8", LossSpec::bce());
    bce.epochs = 2;
    bce.batch_size = 10;
    let mut plm_data = DataConfig::new(DatasetKind::MultiMnistLt);
    plm_data.dir = tiny::data_dir();
    plm_data.train_size = 12;
    plm_data.test_size = 6;
    let mut plm = TrainConfig::new(plm_data, "resnet8", LossSpec::plm());
    plm.epochs = 2;
    plm.batch_size = 6;
    plm.optim.kind = OptimizerKind::Sgd;
    plm.optim.schedule = ScheduleKind::MultiStep;
    plm.optim.milestones = vec![1];
    if let Some(p) = &mut plm.loss.plm {
        p.bins = 5;
    }
    for (name, config) in [("mnist-bce", &bce), ("multimnist-plm-sgd", &plm)] {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut trainer = Run::new(config.clone(), &dir)?;
        trainer.train_epoch(&mut Quiet)?;
        let ckpt = read(&dir.join("checkpoint.safetensors"));
        let log = read(&dir.join("log.jsonl"));
        seeds.push(("resume", name, vec![ckpt, log]));
        seeds.push(one("config", name, read(&dir.join("config.json"))));
        trainer.run(&mut Quiet)?;
        seeds.push(one("report", name, read(&dir.join("report.json"))));
        if let Some(p) = trainer.objective().plm() {
            seeds.push(one("plm-state", "after-two-epochs", p.state_json()?));
        }
    }
    let fresh = Plm::new(
        PlmConfig {
            n_bins: 4,
            ..PlmConfig::default()
        },
        &[3, 2, 1],
        6,
    )?;
    seeds.push(one("plm-state", "fresh", fresh.state_json()?));

    for (name, spec) in [
        ("bce", "bce"),
        ("focal-default", "focal"),
        ("focal", "focal(gamma=2,alpha=0.25)"),
        ("focal-no-alpha", "focal(gamma=1, alpha=none)"),
        ("asl", "asl(gamma_pos=0,gamma_neg=4,clip=0.05)"),
        ("plm-asl", "plm(lambda=0.05,bins=20)+asl(gamma_neg=2)"),
        ("plm-cb-focal", "plm+cb(beta=0.99)+focal(gamma=1)"),
        ("cb-ce", "cb+ce"),
    ] {
        seeds.push(one("loss-spec", name, spec));
    }
    for (name, spec) in [
        ("bce", "bce"),
        ("plm-balanced", "plm(lambda=0,init=balanced)"),
        (
            "plm-settings",
            "plm(bins=20,divergence=gt-pred,standardize=false)",
        ),
        ("focal", "focal(gamma=1,alpha=0.5)"),
        ("cb", "cb(beta=0.99)"),
    ] {
        seeds.push(one("variant", name, spec));
    }
    Ok(seeds)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Rewrites `corpus/` (the folder of each target is replaced).
pub fn write_corpus(corpus: &Path, work: &Path) -> ferrite::Result<usize> {
    std::fs::create_dir_all(work).map_err(|source| ferrite::Error::Io {
        path: work.display().to_string(),
        source,
    })?;
    let seeds = all(work)?;
    for t in targets::all() {
        let _ = std::fs::remove_dir_all(corpus.join(t.name));
    }
    for (target, name, input) in &seeds {
        let t: &Target = targets::by_name(target).expect("a known target");
        input::save(&corpus.join(target).join(name), t.parts, input).map_err(|source| {
            ferrite::Error::Io {
                path: corpus.display().to_string(),
                source,
            }
        })?;
    }
    Ok(seeds.len())
}
