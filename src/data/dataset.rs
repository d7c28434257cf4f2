//! The in-memory image dataset shared by every loader and the trainer.
//!
//! Images are kept as bytes (`n × channels × height × width`, each image in
//! CHW order), exactly as the files store them; the [`DataLoader`] turns
//! them into normalised `f32` tensors a batch at a time. Labels are either
//! one class per image or a multi-hot row per image.
//!
//! [`DataLoader`]: super::loader::DataLoader

use super::mnist::ImageSplit;
use crate::error::{Error, Result};

/// The labels of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    /// One class index per image (single-label classification).
    Single(Vec<u32>),
    /// A multi-hot row per image: `bits[i * num_classes + c]` is 1 when
    /// image `i` shows class `c`, else 0.
    Multi {
        /// Length of each row: the number of classes.
        num_classes: usize,
        /// `n × num_classes` flags, 0 or 1, row-major.
        bits: Vec<u8>,
    },
}

/// Images as bytes with their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDataset {
    /// `n × channels × height × width` pixel bytes, CHW within each image.
    pub images: Vec<u8>,
    /// Channels per image (1 for grey, 3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes; labels are in `0..num_classes`.
    pub num_classes: usize,
    /// One label or one multi-hot row per image.
    pub labels: Labels,
    /// A short name for messages and logs (e.g. `"mnist-train"`).
    pub name: String,
}

impl ImageDataset {
    /// Number of images (counted from the labels).
    pub fn len(&self) -> usize {
        match &self.labels {
            Labels::Single(l) => l.len(),
            Labels::Multi { num_classes, bits } => {
                bits.len().checked_div(*num_classes).unwrap_or(0)
            }
        }
    }

    /// True when the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for multi-hot labels.
    pub fn is_multi_label(&self) -> bool {
        matches!(self.labels, Labels::Multi { .. })
    }

    /// Bytes per image: `channels × height × width`; an error naming the
    /// dataset when the product overflows.
    pub fn image_size(&self) -> Result<usize> {
        self.channels
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(self.width))
            .ok_or_else(|| {
                Error::bad_shape(
                    "ImageDataset::image_size",
                    format!(
                        "dataset '{}': images of {}x{}x{} are too large",
                        self.name, self.channels, self.height, self.width
                    ),
                )
            })
    }

    /// The bytes of image `i` (CHW), or `None` when `i` is out of range (or
    /// the image size overflows).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.image_size().ok()?;
        let start = i.checked_mul(size)?;
        self.images.get(start..start.checked_add(size)?)
    }

    /// For each class, the number of images that show it (for single
    /// labels: the class sizes). Labels outside `0..num_classes` are not
    /// counted; [`Self::validate`] reports them.
    pub fn positives_per_class(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        match &self.labels {
            Labels::Single(labels) => {
                for &l in labels {
                    if let Some(c) = counts.get_mut(l as usize) {
                        *c += 1;
                    }
                }
            }
            Labels::Multi { num_classes, bits } if *num_classes > 0 => {
                for row in bits.chunks_exact(*num_classes) {
                    for (count, &b) in counts.iter_mut().zip(row) {
                        *count += (b != 0) as usize;
                    }
                }
            }
            Labels::Multi { .. } => {}
        }
        counts
    }

    /// Writes the target row of image `i` into `out` (length
    /// `num_classes`): its multi-hot row, or the one-hot encoding of its
    /// single label.
    pub fn target_row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        const OP: &str = "ImageDataset::target_row";
        if out.len() != self.num_classes {
            return Err(Error::invalid(
                OP,
                format!(
                    "output row has {} entries, dataset '{}' has {} classes",
                    out.len(),
                    self.name,
                    self.num_classes
                ),
            ));
        }
        let out_of_range = || Error::index_out_of_range(OP, i, self.len());
        match &self.labels {
            Labels::Single(labels) => {
                let label = *labels.get(i).ok_or_else(out_of_range)? as usize;
                if label >= self.num_classes {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "label {label} of image {i} is outside 0..{}",
                            self.num_classes
                        ),
                    ));
                }
                out.fill(0.0);
                out[label] = 1.0;
            }
            Labels::Multi { num_classes, bits } => {
                let row = i
                    .checked_mul(*num_classes)
                    .and_then(|start| bits.get(start..start.checked_add(*num_classes)?))
                    .ok_or_else(out_of_range)?;
                if row.len() != out.len() {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "labels have {num_classes} classes, dataset '{}' declares {}",
                            self.name, self.num_classes
                        ),
                    ));
                }
                for (o, &b) in out.iter_mut().zip(row) {
                    *o = b as f32;
                }
            }
        }
        Ok(())
    }

    /// A new dataset with the images `indices`, in that order (repeats
    /// allowed). The name gets a `"-subset"` suffix.
    ///
    /// ```
    /// use ferrite::data::{mnist, ImageDataset};
    /// let (_, test) = mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))?;
    /// let test = ImageDataset::from_split(&test, "mnist-test")?;
    /// let first = test.subset(&[0, 1, 2])?;
    /// assert_eq!(first.len(), 3);
    /// assert_eq!(first.image(0), test.image(0));
    /// # Ok::<(), ferrite::Error>(())
    /// ```
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        const OP: &str = "ImageDataset::subset";
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::index_out_of_range(OP, bad, n));
        }
        let size = self.image_size()?;
        if n.checked_mul(size)
            .is_none_or(|bytes| self.images.len() < bytes)
        {
            return Err(self.size_error(OP));
        }
        if let Labels::Multi { num_classes, bits } = &self.labels {
            if n.checked_mul(*num_classes).is_none_or(|b| bits.len() < b) {
                return Err(self.size_error(OP));
            }
        }
        let mut images = Vec::new();
        let bytes = indices.len().saturating_mul(size);
        images.try_reserve_exact(bytes).map_err(|_| {
            Error::invalid(
                OP,
                format!("cannot allocate {bytes} bytes for {} images", indices.len()),
            )
        })?;
        for &i in indices {
            images.extend_from_slice(&self.images[i * size..(i + 1) * size]);
        }
        let labels = match &self.labels {
            Labels::Single(l) => Labels::Single(indices.iter().map(|&i| l[i]).collect()),
            Labels::Multi { num_classes, bits } => {
                let c = *num_classes;
                let mut out = Vec::with_capacity(indices.len() * c);
                for &i in indices {
                    out.extend_from_slice(&bits[i * c..(i + 1) * c]);
                }
                Labels::Multi {
                    num_classes: c,
                    bits: out,
                }
            }
        };
        Ok(ImageDataset {
            images,
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            labels,
            name: format!("{}-subset", self.name),
        })
    }

    /// Checks that the fields agree: positive image sizes and class count,
    /// `images.len() == len() × channels × height × width`, single labels
    /// below `num_classes`, multi-hot rows of `num_classes` entries that are
    /// all 0 or 1.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "ImageDataset::validate";
        let name = &self.name;
        if self.channels == 0 || self.height == 0 || self.width == 0 {
            return Err(Error::bad_shape(
                OP,
                format!(
                    "dataset '{name}' has an empty image shape {}x{}x{}",
                    self.channels, self.height, self.width
                ),
            ));
        }
        if self.num_classes == 0 {
            return Err(Error::invalid(
                OP,
                format!("dataset '{name}' has 0 classes"),
            ));
        }
        match &self.labels {
            Labels::Single(labels) => {
                if let Some((i, l)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= self.num_classes)
                {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "dataset '{name}': label {l} of image {i} is outside 0..{}",
                            self.num_classes
                        ),
                    ));
                }
            }
            Labels::Multi { num_classes, bits } => {
                if *num_classes != self.num_classes {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "dataset '{name}': multi-hot rows have {num_classes} classes, the dataset declares {}",
                            self.num_classes
                        ),
                    ));
                }
                if bits.len() % num_classes != 0 {
                    return Err(Error::bad_shape(
                        OP,
                        format!(
                            "dataset '{name}': {} label bits are not whole rows of {num_classes}",
                            bits.len()
                        ),
                    ));
                }
                if let Some(p) = bits.iter().position(|&b| b > 1) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "dataset '{name}': label bit {} of image {} is {}, not 0 or 1",
                            p % num_classes,
                            p / num_classes,
                            bits[p]
                        ),
                    ));
                }
            }
        }
        let expected = self
            .len()
            .checked_mul(self.image_size()?)
            .ok_or_else(|| Error::bad_shape(OP, format!("dataset '{name}' is too large")))?;
        if self.images.len() != expected {
            return Err(self.size_error(OP));
        }
        Ok(())
    }

    pub(crate) fn size_error(&self, op: &'static str) -> Error {
        Error::bad_shape(
            op,
            format!(
                "dataset '{}': {} image bytes for {} images of {}x{}x{}",
                self.name,
                self.images.len(),
                self.len(),
                self.channels,
                self.height,
                self.width
            ),
        )
    }

    /// A single-label, one-channel dataset from an MNIST or Fashion-MNIST
    /// split (10 classes), checked with [`Self::validate`].
    pub fn from_split(split: &ImageSplit, name: impl Into<String>) -> Result<Self> {
        let dataset = ImageDataset {
            images: split.images.clone(),
            channels: 1,
            height: split.rows,
            width: split.cols,
            num_classes: 10,
            labels: Labels::Single(split.labels.iter().map(|&l| l as u32).collect()),
            name: name.into(),
        };
        dataset.validate()?;
        Ok(dataset)
    }
}
