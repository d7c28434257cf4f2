//! Minibatches: seeded shuffling, parallel decoding and augmentation.
//!
//! A [`DataLoader`] walks an [`ImageDataset`] one epoch at a time. Each
//! epoch visits every image once, in an order shuffled from `(seed, epoch)`
//! (or in dataset order for evaluation), cut into batches of
//! `batch_size` (the last one shorter unless `drop_last`). A [`Batch`]
//! holds the images as a normalised `f32` tensor `[B, C, H, W]`, the
//! targets as `[B, num_classes]` (multi-hot, or one-hot for single labels),
//! the single labels themselves and the dataset indices.
//!
//! # Decoding and augmentation
//!
//! Pixel byte `p` of channel `c` becomes `(p / 255 - mean_c) / std_c`,
//! read from a 256-entry table per channel built once by
//! [`DataLoader::new`]. Optional augmentations, in torchvision's order:
//!
//! - random crop with zero padding `pad`: the image is framed by `pad`
//!   black pixels (byte 0) on each side and a window of the original size is
//!   cut at an offset `(dy, dx)` uniform in `0..=2·pad` each;
//! - random horizontal flip (off by default: flipped digits are not
//!   digits), with probability 1/2.
//!
//! Every random choice for image `i` in epoch `e` comes from its own stream
//! `SplitMix64::stream(seed, &[2, e, i])` (draws: `dy`, `dx` when
//! `pad > 0`, then the flip when enabled); the shuffle of epoch `e` uses
//! the stream `(seed, [1, e])`. Images are decoded in parallel (rayon), and
//! the batches are identical whatever the number of threads.
//!
//! # Memory
//!
//! Nothing is staged: each worker decodes its images straight into the
//! batch tensor's storage, through the lookup tables, and crop and flip are
//! index arithmetic, so workers need no scratch image. The epoch's order
//! buffer and the tables are reused for the loader's whole life. What is
//! allocated per batch is what the batch hands out: the storage of `x`
//! and `targets` (a [`Tensor`] owns its storage, and a batch may still be
//! alive — in an autograd graph, say — when the next one is built, so it
//! cannot be recycled), and the small `indices` and `labels` vectors.

use super::dataset::{ImageDataset, Labels};
use super::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Stream tag of the per-epoch shuffles.
const SHUFFLE_STREAM: u64 = 1;
/// Stream tag of the per-image augmentation choices.
const AUGMENT_STREAM: u64 = 2;

/// The visiting order of epoch `epoch`: `0..n` shuffled by the stream
/// `(seed, [1, epoch])` of [`SplitMix64`], so every epoch differs and runs
/// repeat.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = Vec::new();
    fill_epoch_order(&mut order, n, Some(seed), epoch);
    order
}

/// Refills `order` with `0..n`, shuffled for `epoch` when `seed` is given.
fn fill_epoch_order(order: &mut Vec<usize>, n: usize, seed: Option<u64>, epoch: usize) {
    order.clear();
    order.extend(0..n);
    if let Some(seed) = seed {
        SplitMix64::stream(seed, &[SHUFFLE_STREAM, epoch as u64]).shuffle(order);
    }
}

/// The batches of one epoch: [`epoch_order`] cut into chunks of
/// `batch_size` (the last may be shorter).
pub fn epoch_batches(n: usize, batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    epoch_order(n, seed, epoch)
        .chunks(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// The largest batch a [`DataLoader`] accepts (2^16 images).
pub const MAX_BATCH_SIZE: usize = 1 << 16;

/// How a [`DataLoader`] batches, normalises and augments.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (1 to [`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
    /// Shuffle the order every epoch (training); `false` keeps dataset order.
    pub shuffle: bool,
    /// Drop the last batch when it is shorter than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
    /// Per-channel mean on the `[0, 1]` pixel scale (one value: all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation on the `[0, 1]` scale (one value: all
    /// channels); must be positive.
    pub std: Vec<f32>,
    /// Random-crop zero padding in pixels; 0 disables the crop.
    pub crop_padding: usize,
    /// Random horizontal flips.
    pub hflip: bool,
}

impl LoaderConfig {
    /// Training defaults: shuffled, last batch kept, pixels scaled to
    /// `[0, 1]` (mean 0, std 1), no augmentation.
    pub fn training(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            seed,
            mean: vec![0.0],
            std: vec![1.0],
            crop_padding: 0,
            hflip: false,
        }
    }

    /// Evaluation: dataset order, every image, no augmentation.
    pub fn evaluation(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            ..Self::training(batch_size, 0)
        }
    }

    /// The same configuration with per-channel normalisation `mean`, `std`.
    pub fn normalized(mut self, mean: &[f32], std: &[f32]) -> Self {
        self.mean = mean.to_vec();
        self.std = std.to_vec();
        self
    }
}

/// One minibatch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Normalised images, `f32 [B, C, H, W]`.
    pub x: Tensor,
    /// Targets, `f32 [B, num_classes]`: multi-hot rows, or one-hot rows of
    /// single labels.
    pub targets: Tensor,
    /// The class of each image, `i64 [B]`, for single-label datasets: what
    /// [`cross_entropy`](crate::loss::cross_entropy) and
    /// [`accuracy`](crate::metrics::accuracy) take.
    pub labels: Option<Tensor>,
    /// Dataset index of each image.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True for a batch without images.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The class labels ([`Batch::labels`]), or an error saying that the
    /// dataset has sets of labels (multi-label data has `targets` only).
    pub fn class_labels(&self) -> Result<&Tensor> {
        self.labels.as_ref().ok_or_else(|| {
            Error::invalid(
                "Batch::class_labels",
                "the dataset is multi-label: use the batch's multi-hot targets",
            )
        })
    }
}

/// Batches of an [`ImageDataset`], epoch by epoch (see the module
/// documentation).
///
/// ```
/// use ferrite::data::loader::{DataLoader, LoaderConfig};
/// use ferrite::data::{ImageDataset, Labels};
/// // Six 2×2 grey images of three classes.
/// let ds = ImageDataset {
///     images: (0..24).collect(),
///     channels: 1, height: 2, width: 2, num_classes: 3,
///     labels: Labels::Single(vec![0, 1, 2, 0, 1, 2]),
///     name: "toy".into(),
/// };
/// let mut loader = DataLoader::new(&ds, LoaderConfig::training(4, 0))?;
/// for batch in loader.epoch(0) {
///     let batch = batch?;
///     assert_eq!(batch.x.shape()[1..], [1, 2, 2]); // f32 [B, C, H, W]
///     let labels = batch.labels.unwrap(); // i64 [B], for cross_entropy
///     assert_eq!(labels.shape(), [batch.indices.len()]);
/// }
/// # Ok::<(), ferrite::Error>(())
/// ```
#[derive(Debug)]
pub struct DataLoader<'a> {
    dataset: &'a ImageDataset,
    config: LoaderConfig,
    /// `channels × 256` normalised values of every pixel byte.
    tables: Vec<f32>,
    /// The current epoch's order, reused across epochs.
    order: Vec<usize>,
}

impl<'a> DataLoader<'a> {
    /// A loader over `dataset`; checks the dataset and the configuration
    /// (batch size in `1..=`[`MAX_BATCH_SIZE`], one or `channels` finite
    /// means and positive standard deviations, crop padding no larger than
    /// the image).
    pub fn new(dataset: &'a ImageDataset, config: LoaderConfig) -> Result<Self> {
        const OP: &str = "DataLoader::new";
        dataset.validate()?;
        if config.batch_size == 0 || config.batch_size > MAX_BATCH_SIZE {
            return Err(Error::invalid(
                OP,
                format!(
                    "batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                    config.batch_size
                ),
            ));
        }
        let channels = dataset.channels;
        for (what, values) in [("mean", &config.mean), ("std", &config.std)] {
            if values.len() != 1 && values.len() != channels {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{what} has {} values; dataset '{}' has {channels} channel(s) (give 1 or {channels})",
                        values.len(),
                        dataset.name
                    ),
                ));
            }
        }
        if let Some(m) = config.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid(OP, format!("mean {m} is not finite")));
        }
        if let Some(s) = config.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid(
                OP,
                format!("std {s} is not a positive finite number"),
            ));
        }
        if config.crop_padding > dataset.height.min(dataset.width) {
            return Err(Error::invalid(
                OP,
                format!(
                    "crop padding {} exceeds the {}x{} image",
                    config.crop_padding, dataset.height, dataset.width
                ),
            ));
        }
        let pick = |values: &[f32], c: usize| values[if values.len() == 1 { 0 } else { c }];
        let tables = (0..channels)
            .flat_map(|c| {
                let (mean, std) = (pick(&config.mean, c), pick(&config.std, c));
                (0..=255u8).map(move |p| (p as f32 / 255.0 - mean) / std)
            })
            .collect();
        Ok(DataLoader {
            dataset,
            config,
            tables,
            order: Vec::new(),
        })
    }

    /// The dataset being loaded.
    pub fn dataset(&self) -> &'a ImageDataset {
        self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch: `n / batch_size`, rounded up unless `drop_last`.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// An iterator over the batches of epoch `epoch`.
    pub fn epoch(&mut self, epoch: usize) -> Epoch<'_, 'a> {
        let seed = self.config.shuffle.then_some(self.config.seed);
        fill_epoch_order(&mut self.order, self.dataset.len(), seed, epoch);
        Epoch {
            loader: self,
            epoch,
            next: 0,
        }
    }

    /// The dataset indices of batch `k` of the current epoch (the one the
    /// last [`DataLoader::epoch`] call prepared), `None` past the last.
    pub(super) fn batch_indices(&self, k: usize) -> Option<&[usize]> {
        if k >= self.num_batches() {
            return None;
        }
        let b = self.config.batch_size;
        let start = k * b;
        let end = (start + b).min(self.order.len());
        Some(&self.order[start..end])
    }

    /// The batch of the images `indices` (in that order), augmented as in
    /// epoch `epoch`.
    pub fn batch(&self, indices: &[usize], epoch: usize) -> Result<Batch> {
        let ds = self.dataset;
        let n = ds.len();
        const OP: &str = "DataLoader::batch";
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::index_out_of_range(OP, bad, n));
        }
        let (b, size, classes) = (indices.len(), ds.image_size()?, ds.num_classes);
        let mut x = zeroed(OP, b.checked_mul(size))?;
        x.par_chunks_mut(size)
            .zip(indices.par_iter())
            .with_min_len(4)
            .for_each(|(out, &i)| self.decode(i, epoch, out));
        let mut targets = zeroed(OP, b.checked_mul(classes))?;
        for (row, &i) in targets.chunks_exact_mut(classes).zip(indices) {
            ds.target_row(i, row)?;
        }
        let labels = match &ds.labels {
            Labels::Single(l) => {
                let classes: Vec<i64> = indices.iter().map(|&i| i64::from(l[i])).collect();
                Some(Tensor::from_vec(classes, &[b])?)
            }
            Labels::Multi { .. } => None,
        };
        Ok(Batch {
            x: Tensor::from_vec(x, &[b, ds.channels, ds.height, ds.width])?,
            targets: Tensor::from_vec(targets, &[b, classes])?,
            labels,
            indices: indices.to_vec(),
        })
    }

    /// Writes image `index`, normalised and augmented for `epoch`, into
    /// `out` (CHW).
    fn decode(&self, index: usize, epoch: usize, out: &mut [f32]) {
        let ds = self.dataset;
        let (h, w) = (ds.height, ds.width);
        let image = &ds.images[index * out.len()..(index + 1) * out.len()];
        let pad = self.config.crop_padding;
        let mut rng = SplitMix64::stream(
            self.config.seed,
            &[AUGMENT_STREAM, epoch as u64, index as u64],
        );
        // Offsets of the crop window inside the padded image, then the flip.
        let (dy, dx) = if pad > 0 {
            (rng.below(2 * pad + 1), rng.below(2 * pad + 1))
        } else {
            (0, 0)
        };
        let flip = self.config.hflip && rng.next_bool();
        for (c, (plane, src)) in out
            .chunks_exact_mut(h * w)
            .zip(image.chunks_exact(h * w))
            .enumerate()
        {
            let table = &self.tables[c * 256..(c + 1) * 256];
            if pad == 0 && !flip {
                for (o, &p) in plane.iter_mut().zip(src) {
                    *o = table[p as usize];
                }
                continue;
            }
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                // Output (y, x) shows padded pixel (y + dy, x' + dx), where
                // x' = w-1-x when flipped: source pixel (y + dy - pad, ...).
                let sy = (y + dy).checked_sub(pad).filter(|&sy| sy < h);
                for (x, o) in row.iter_mut().enumerate() {
                    let xc = if flip { w - 1 - x } else { x };
                    let sx = (xc + dx).checked_sub(pad).filter(|&sx| sx < w);
                    let byte = match (sy, sx) {
                        (Some(sy), Some(sx)) => src[sy * w + sx],
                        _ => 0,
                    };
                    *o = table[byte as usize];
                }
            }
        }
    }
}

/// `n` zeros, or an error when `n` overflowed (`None`) or cannot be
/// allocated.
fn zeroed(op: &'static str, n: Option<usize>) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    let n = n.ok_or_else(|| Error::invalid(op, "the batch is too large to address"))?;
    v.try_reserve_exact(n)
        .map_err(|_| Error::invalid(op, format!("cannot allocate a batch of {n} values")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// The batches of one epoch, in order; see [`DataLoader::epoch`].
#[derive(Debug)]
pub struct Epoch<'l, 'a> {
    loader: &'l DataLoader<'a>,
    epoch: usize,
    next: usize,
}

impl<'l, 'a> Epoch<'l, 'a> {
    /// The loader, with this epoch's order in place.
    pub(super) fn loader(self) -> &'l DataLoader<'a> {
        self.loader
    }
}

impl Iterator for Epoch<'_, '_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let loader = self.loader;
        let indices = loader.batch_indices(self.next)?;
        self.next += 1;
        Some(loader.batch(indices, self.epoch))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.loader.num_batches().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch<'_, '_> {}
