//! Helpers shared by the checkpoint-loading tests (`checkpoint_lenient.rs`,
//! `checkpoint_options.rs`): the PyTorch-written fixtures of
//! `tests/fixtures/gen_checkpoint_lenient.py` and the network they fit.
#![allow(dead_code)]

use ferrite::checkpoint::LoadReport;
use ferrite::nn::resnet::{BlockKind, ResNet, ResNetConfig, ShortcutKind, Stem};
use ferrite::nn::{self, Module};
use ferrite::{DType, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

pub const F16_FILE: &str = "checkpoint_resnet_f16.safetensors";
pub const DP_FILE: &str = "checkpoint_resnet_dataparallel.safetensors";
pub const NO_NBT_FILE: &str = "checkpoint_resnet_no_nbt.safetensors";

/// The generator's network: 56 state-dict tensors, 9 of them batch norm's
/// `num_batches_tracked`, the other 47 floating.
pub const TENSORS: usize = 56;
pub const COUNTERS: usize = 9;
pub const FLOATS: usize = TENSORS - COUNTERS;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn config() -> ResNetConfig {
    ResNetConfig {
        block: BlockKind::Basic,
        layers: vec![1, 1, 1],
        widths: vec![8, 16, 32],
        stem: Stem::Cifar,
        shortcut: ShortcutKind::Projection,
        in_channels: 3,
        num_classes: 10,
    }
}

pub fn small_resnet(seed: u64) -> ResNet {
    ResNet::new(&config(), &mut StdRng::seed_from_u64(seed)).unwrap()
}

pub fn snapshot(m: &dyn Module) -> Vec<(String, Vec<u64>)> {
    nn::state_dict(m)
        .into_iter()
        .map(|(n, t)| {
            let bits = match t.dtype() {
                DType::F32 => t
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits() as u64)
                    .collect(),
                DType::I64 => t
                    .to_vec::<i64>()
                    .unwrap()
                    .iter()
                    .map(|&v| v as u64)
                    .collect(),
                d => panic!("unexpected dtype {d:?}"),
            };
            (n, bits)
        })
        .collect()
}

pub fn strict_error(r: ferrite::Result<LoadReport>) -> String {
    let e = r.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    e.to_string()
}

/// Messages name the file, whose directory depends on the checkout: the
/// rest of the message must stay under 1 KB.
pub fn assert_short(msg: &str) {
    let dir = fixture("").display().to_string();
    let body = msg.replace(&dir, "");
    assert!(body.len() < 1024, "{} bytes: {msg}", body.len());
}

pub fn assert_contains(msg: &str, needles: &[&str]) {
    for needle in needles {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
}
