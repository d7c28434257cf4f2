//! Shared helpers: the MNIST location, MNIST loaded once, and a tiny multi-label dataset.

use ferrite::data::mnist::{self, ImageSplit};
use ferrite::data::{ImageDataset, Labels};
use std::sync::OnceLock;

pub(super) const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// MNIST, loaded once for all the tests of this file.
pub(super) fn mnist_splits() -> &'static (ImageSplit, ImageSplit) {
    static SPLITS: OnceLock<(ImageSplit, ImageSplit)> = OnceLock::new();
    SPLITS.get_or_init(|| mnist::load(MNIST).unwrap())
}

pub(super) fn tiny_multi() -> ImageDataset {
    ImageDataset {
        images: (0..3 * 2 * 2 * 2).map(|v| v as u8).collect(),
        channels: 2,
        height: 2,
        width: 2,
        num_classes: 3,
        labels: Labels::Multi {
            num_classes: 3,
            bits: vec![1, 0, 1, 0, 0, 0, 1, 1, 1],
        },
        name: "tiny".into(),
    }
}
