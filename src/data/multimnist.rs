//! MultiMNIST-LT: a long-tailed multi-label dataset built from MNIST digits.
//!
//! Each image is a `grid × grid` array of `cell × cell` cells (by default
//! 2×2 cells of 28×28, a 56×56 image). It holds `k` digits, `k` uniform in
//! `min_digits..=max_digits`, placed in `k` distinct cells chosen
//! uniformly; the other cells stay black (0). Each digit's class is drawn
//! independently with
//!
//! ```text
//! P(c) ∝ IF^(-c/9),   c = 0..9
//! ```
//!
//! so digit 0 is the most frequent and digit 9 is `IF` times rarer; the
//! digit's picture is drawn uniformly among the source split's images of
//! that class (training images for the training set, test images for the
//! test sets). The label is the multi-hot set of the digits present.
//!
//! # Seed derivation
//!
//! Image `i` of a split is drawn from its own [`SplitMix64`] stream,
//! `SplitMix64::stream(seed, &[split, i])`, with `split` = 1 for
//! training, 2 for the test set and 3 for the balanced test set. Within a
//! stream the draws are, in order: `k` (`below(max - min + 1)`), the cells
//! (a partial Fisher–Yates shuffle of `0..grid²`, step `j` swapping in
//! `j + below(grid² - j)`), then for each chosen cell the class (one
//! `next_f64` against the cumulative probabilities) and the picture
//! (`below(count of that class)`, an index into that class's images in file
//! order). The same configuration and source therefore give the same bytes
//! on every machine, however many threads generate them.

use super::dataset::{ImageDataset, Labels};
use super::mnist::ImageSplit;
use super::rng::SplitMix64;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Number of digit classes.
pub const DIGITS: usize = 10;

/// Stream tag of the training set.
const TRAIN_STREAM: u64 = 1;
/// Stream tag of the (long-tailed) test set.
const TEST_STREAM: u64 = 2;
/// Stream tag of the balanced test set.
const BALANCED_TEST_STREAM: u64 = 3;

/// The most images a MultiMNIST-LT split may have (2^24, about 16.8
/// million; the reference protocol uses 60,000 and 10,000).
pub const MAX_SPLIT_IMAGES: usize = 1 << 24;

/// The most pixel bytes a MultiMNIST-LT split may have (16 GiB).
pub const MAX_SPLIT_BYTES: usize = 1 << 34;

/// Every parameter of MultiMNIST-LT.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiMnistConfig {
    /// Cells per side of the image.
    pub grid: usize,
    /// Side of a cell in pixels; must equal the source images' size.
    pub cell: usize,
    /// Fewest digits in an image (at least 1).
    pub min_digits: usize,
    /// Most digits in an image (at most `grid²`).
    pub max_digits: usize,
    /// Ratio between the probabilities of digit 0 and digit 9 (≥ 1).
    pub imbalance_factor: f64,
    /// Images in the training set.
    pub train_size: usize,
    /// Images in each test set.
    pub test_size: usize,
    /// Base seed of every stream (see the module documentation).
    pub seed: u64,
}

impl Default for MultiMnistConfig {
    /// The reference protocol: 2×2 cells of 28×28, 1–4 digits, IF = 100,
    /// 60,000 training and 10,000 test images, seed 0.
    fn default() -> Self {
        MultiMnistConfig {
            grid: 2,
            cell: 28,
            min_digits: 1,
            max_digits: 4,
            imbalance_factor: 100.0,
            train_size: 60_000,
            test_size: 10_000,
            seed: 0,
        }
    }
}

impl MultiMnistConfig {
    /// Checks every parameter, naming the first one that is invalid:
    /// sizes are bounded ([`MAX_SPLIT_IMAGES`] images and
    /// [`MAX_SPLIT_BYTES`] pixel bytes per split) before anything is
    /// allocated.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "MultiMnistConfig";
        let bad = |msg: String| Err(Error::invalid(OP, msg));
        if self.grid == 0 || self.cell == 0 {
            return bad(format!(
                "grid ({}) and cell ({}) must be positive",
                self.grid, self.cell
            ));
        }
        let (Some(cells), Some(pixels)) = (
            self.grid.checked_mul(self.grid),
            self.grid
                .checked_mul(self.cell)
                .and_then(|side| side.checked_mul(side)),
        ) else {
            return bad(format!(
                "grid {} of {}-pixel cells is too large",
                self.grid, self.cell
            ));
        };
        if self.min_digits == 0 || self.min_digits > self.max_digits || self.max_digits > cells {
            return bad(format!(
                "need 1 <= min_digits <= max_digits <= grid² = {cells}, got min_digits = {}, max_digits = {}",
                self.min_digits, self.max_digits
            ));
        }
        if !(self.imbalance_factor.is_finite() && self.imbalance_factor >= 1.0) {
            return bad(format!(
                "imbalance_factor must be a finite number >= 1, got {}",
                self.imbalance_factor
            ));
        }
        for (name, n) in [
            ("train_size", self.train_size),
            ("test_size", self.test_size),
        ] {
            if n == 0 || n > MAX_SPLIT_IMAGES {
                return bad(format!(
                    "{name} must be between 1 and {MAX_SPLIT_IMAGES} images, got {n}"
                ));
            }
            if pixels.checked_mul(n).is_none_or(|b| b > MAX_SPLIT_BYTES) {
                let side = self.grid * self.cell;
                return bad(format!(
                    "{name} = {n} images of {side}x{side} pixels exceed the {MAX_SPLIT_BYTES} bytes allowed per split"
                ));
            }
        }
        Ok(())
    }

    /// Side of the generated images: `grid × cell`.
    pub fn side(&self) -> usize {
        self.grid * self.cell
    }
}

/// The class probabilities `P(c) = IF^(-c/9) / Σ_j IF^(-j/9)`.
pub fn digit_probabilities(imbalance_factor: f64) -> Vec<f64> {
    let weights: Vec<f64> = (0..DIGITS)
        .map(|c| imbalance_factor.powf(-(c as f64) / (DIGITS - 1) as f64))
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// The training set: `train_size` images from the MNIST training split.
pub fn generate_train(cfg: &MultiMnistConfig, mnist_train: &ImageSplit) -> Result<ImageDataset> {
    cfg.validate()?;
    generate(
        cfg,
        mnist_train,
        cfg.train_size,
        cfg.imbalance_factor,
        TRAIN_STREAM,
        "multimnist-lt-train",
    )
}

/// The test set: `test_size` images from the MNIST test split, with the
/// same imbalance as the training set.
pub fn generate_test(cfg: &MultiMnistConfig, mnist_test: &ImageSplit) -> Result<ImageDataset> {
    cfg.validate()?;
    generate(
        cfg,
        mnist_test,
        cfg.test_size,
        cfg.imbalance_factor,
        TEST_STREAM,
        "multimnist-lt-test",
    )
}

/// A balanced test set: like [`generate_test`] with IF = 1 (every digit
/// equally likely), from its own stream.
pub fn generate_balanced_test(
    cfg: &MultiMnistConfig,
    mnist_test: &ImageSplit,
) -> Result<ImageDataset> {
    cfg.validate()?;
    generate(
        cfg,
        mnist_test,
        cfg.test_size,
        1.0,
        BALANCED_TEST_STREAM,
        "multimnist-balanced-test",
    )
}

/// The indices of each digit's images in `source`, in file order; checks
/// that the source fits the configuration.
fn images_by_class(cfg: &MultiMnistConfig, source: &ImageSplit) -> Result<Vec<Vec<usize>>> {
    const OP: &str = "multimnist";
    if source.rows != cfg.cell || source.cols != cfg.cell {
        return Err(Error::invalid(
            OP,
            format!(
                "source images are {}x{} but cells are {}x{}",
                source.rows, source.cols, cfg.cell, cfg.cell
            ),
        ));
    }
    let expected = cfg
        .cell
        .checked_mul(cfg.cell)
        .and_then(|px| px.checked_mul(source.len()));
    if expected != Some(source.images.len()) {
        return Err(Error::bad_shape(
            OP,
            format!(
                "source has {} pixel bytes for {} images of {}x{}",
                source.images.len(),
                source.len(),
                cfg.cell,
                cfg.cell
            ),
        ));
    }
    let mut by_class = vec![Vec::new(); DIGITS];
    for (i, &l) in source.labels.iter().enumerate() {
        by_class
            .get_mut(l as usize)
            .ok_or_else(|| {
                Error::invalid(OP, format!("source label {l} of image {i} is not a digit"))
            })?
            .push(i);
    }
    if let Some(d) = by_class.iter().position(Vec::is_empty) {
        return Err(Error::invalid(
            OP,
            format!("the source has no image of digit {d}"),
        ));
    }
    Ok(by_class)
}

fn generate(
    cfg: &MultiMnistConfig,
    source: &ImageSplit,
    n: usize,
    imbalance_factor: f64,
    stream: u64,
    name: &str,
) -> Result<ImageDataset> {
    let by_class = images_by_class(cfg, source)?;
    let mut cdf = digit_probabilities(imbalance_factor);
    for c in 1..DIGITS {
        cdf[c] += cdf[c - 1];
    }
    let side = cfg.side();
    let bytes = side
        .checked_mul(side)
        .and_then(|s| s.checked_mul(n))
        .ok_or_else(|| {
            Error::invalid(
                "multimnist",
                format!("{n} images of {side}x{side} are too large"),
            )
        })?;
    let mut images = zeroed_bytes(bytes)?;
    let mut bits = zeroed_bytes(n.saturating_mul(DIGITS))?;
    images
        .par_chunks_mut(side * side)
        .zip(bits.par_chunks_mut(DIGITS))
        .enumerate()
        .for_each_init(Vec::new, |cells, (i, (canvas, label))| {
            let mut rng = SplitMix64::stream(cfg.seed, &[stream, i as u64]);
            let k = cfg.min_digits + rng.below(cfg.max_digits - cfg.min_digits + 1);
            cells.clear();
            cells.extend(0..cfg.grid * cfg.grid);
            for j in 0..k {
                let pick = j + rng.below(cells.len() - j);
                cells.swap(j, pick);
            }
            for &cell in &cells[..k] {
                let u = rng.next_f64();
                let digit = cdf.iter().position(|&p| u < p).unwrap_or(DIGITS - 1);
                let members = &by_class[digit];
                let src = members[rng.below(members.len())];
                paste(cfg, source, src, cell, canvas);
                label[digit] = 1;
            }
        });
    let dataset = ImageDataset {
        images,
        channels: 1,
        height: side,
        width: side,
        num_classes: DIGITS,
        labels: Labels::Multi {
            num_classes: DIGITS,
            bits,
        },
        name: name.to_string(),
    };
    dataset.validate()?;
    Ok(dataset)
}

/// `n` zero bytes; failing to allocate them is an error, not an abort.
fn zeroed_bytes(n: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::invalid(
            "multimnist",
            format!("cannot allocate {n} bytes for the generated images"),
        )
    })?;
    v.resize(n, 0);
    Ok(v)
}

/// Copies source image `src` into cell `cell` (row-major over the grid) of
/// `canvas`.
fn paste(cfg: &MultiMnistConfig, source: &ImageSplit, src: usize, cell: usize, canvas: &mut [u8]) {
    let (c, side) = (cfg.cell, cfg.side());
    let (top, left) = ((cell / cfg.grid) * c, (cell % cfg.grid) * c);
    let picture = &source.images[src * c * c..(src + 1) * c * c];
    for (r, row) in picture.chunks_exact(c).enumerate() {
        let start = (top + r) * side + left;
        canvas[start..start + c].copy_from_slice(row);
    }
}
