//! Small valid objects the targets and the seed corpus share: a tiny MNIST
//! folder (20 training and 10 test images) and a two-layer module.

use ferrite::nn::{BatchNorm2d, Bias, Conv2d, Module, Sequential};
use ferrite::ops::Conv2dParams;
use rand::{rngs::StdRng, SeedableRng};
use std::path::{Path, PathBuf};

/// Where the resume target's checkpoints find their data: a fixed path,
/// stored in the committed seed checkpoints, recreated when missing.
pub const DATA_DIR: &str = "/tmp/ferrite-fuzz/tiny-mnist";

/// The folder [`DATA_DIR`].
pub fn data_dir() -> PathBuf {
    PathBuf::from(DATA_DIR)
}

/// An IDX file of unsigned bytes with `shape` and `data`.
pub fn idx(shape: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, shape.len() as u8];
    for d in shape {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `n` 28×28 images whose stripes depend on the label `i % 10`, and their labels.
fn digits(n: usize) -> (Vec<u8>, Vec<u8>) {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = (0..n * 784)
        .map(|p| {
            let (i, px) = (p / 784, p % 784);
            if (px / 28 + px % 28 + i) % (labels[i] as usize + 2) == 0 {
                255
            } else {
                (px % 7) as u8
            }
        })
        .collect();
    (images, labels)
}

/// The four files of the tiny MNIST folder, by name.
pub fn mnist_files() -> Vec<(&'static str, Vec<u8>)> {
    let (train_x, train_y) = digits(20);
    let (test_x, test_y) = digits(10);
    vec![
        ("train-images-idx3-ubyte", idx(&[20, 28, 28], &train_x)),
        ("train-labels-idx1-ubyte", idx(&[20], &train_y)),
        ("t10k-images-idx3-ubyte", idx(&[10, 28, 28], &test_x)),
        ("t10k-labels-idx1-ubyte", idx(&[10], &test_y)),
    ]
}

/// Writes the tiny MNIST folder to [`DATA_DIR`] unless it is there
/// (each file through a temporary name, so concurrent writers are safe).
pub fn ensure_data_dir() -> std::io::Result<()> {
    let dir = data_dir();
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in mnist_files() {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
            write_via_temp(&path, &bytes)?;
        }
    }
    Ok(())
}

fn write_via_temp(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A conv (1 → 2 channels, 3×3, with bias) and a batch norm: the module
/// the safetensors target applies state dicts to.
pub fn small_module() -> Sequential {
    let mut rng = StdRng::seed_from_u64(0);
    Sequential::new()
        .with(
            Conv2d::new(1, 2, 3, Conv2dParams::default(), Bias::Yes, &mut rng)
                .expect("a valid convolution"),
        )
        .with(BatchNorm2d::new(2).expect("a valid batch norm"))
}

thread_local! {
    static MODULE: Sequential = small_module();
}

/// Calls `f` with this thread's [`small_module`].
pub fn with_small_module<T>(f: impl FnOnce(&dyn Module) -> T) -> T {
    MODULE.with(|m| f(m))
}
