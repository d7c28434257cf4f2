//! MNIST and Fashion-MNIST from their four IDX files.

use super::dataset::ImageDataset;
use super::idx::read_idx;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// One split: `n` 28×28 grey images (bytes) and their labels 0–9.
#[derive(Clone, Debug)]
pub struct ImageSplit {
    /// `n × rows × cols` pixel bytes, row-major.
    pub images: Vec<u8>,
    /// One label (0–9) per image.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl ImageSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images `indices` as an `n × 1 × rows × cols` f32 tensor, scaled to
    /// [0, 1] and standardised with `mean`/`std`, and their labels as an
    /// `n × 1` i64 tensor (ready for `gather`). `mean` must be finite and
    /// `std` finite and positive.
    pub fn batch(&self, indices: &[usize], mean: f32, std: f32) -> Result<(Tensor, Tensor)> {
        const OP: &str = "ImageSplit::batch";
        if !(mean.is_finite() && std.is_finite() && std > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("need a finite mean and a positive finite std, got mean {mean}, std {std}"),
            ));
        }
        let px = self
            .rows
            .checked_mul(self.cols)
            .filter(|&px| px.checked_mul(self.len()) == Some(self.images.len()))
            .ok_or_else(|| {
                Error::bad_shape(
                    OP,
                    format!(
                        "{} pixel bytes do not hold {} images of {}x{}",
                        self.images.len(),
                        self.len(),
                        self.rows,
                        self.cols
                    ),
                )
            })?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::index_out_of_range(OP, bad, self.len()));
        }
        // At most `indices.len()` copies of the split's own images.
        let values = indices.len().saturating_mul(px);
        let mut x = Vec::new();
        x.try_reserve_exact(values)
            .map_err(|_| Error::invalid(OP, format!("cannot allocate {values} pixel values")))?;
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend(
                self.images[i * px..(i + 1) * px]
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - mean) / std),
            );
            y.push(self.labels[i] as i64);
        }
        Ok((
            Tensor::from_vec(x, &[indices.len(), 1, self.rows, self.cols])?,
            Tensor::from_vec(y, &[indices.len(), 1])?,
        ))
    }
}

/// Loads `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` from `dir`,
/// checking that images and labels agree and labels are digits.
///
/// ```
/// use ferrite::data::{mnist, ImageDataset};
/// // MNIST ships in the repository's data/mnist.
/// let (train, test) = mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))?;
/// assert_eq!((train.len(), test.len()), (60_000, 10_000));
/// let test = ImageDataset::from_split(&test, "mnist-test")?;
/// assert_eq!((test.channels, test.height, test.width, test.num_classes), (1, 28, 28, 10));
/// assert_eq!(test.positives_per_class().iter().sum::<usize>(), 10_000);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn load(dir: impl AsRef<Path>) -> Result<(ImageSplit, ImageSplit)> {
    let dir = dir.as_ref();
    Ok((load_split(dir, "train")?, load_split(dir, "t10k")?))
}

/// Loads a split pair like [`load`] and converts it to single-label
/// [`ImageDataset`]s named `"{name}-train"` and `"{name}-test"`.
pub fn load_dataset(dir: impl AsRef<Path>, name: &str) -> Result<(ImageDataset, ImageDataset)> {
    let (train, test) = load(dir)?;
    Ok((
        ImageDataset::from_split(&train, format!("{name}-train"))?,
        ImageDataset::from_split(&test, format!("{name}-test"))?,
    ))
}

fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() {
        gz
    } else {
        dir.join(stem)
    }
}

fn load_split(dir: &Path, split: &str) -> Result<ImageSplit> {
    let image_path = find(dir, &format!("{split}-images-idx3-ubyte"));
    let label_path = find(dir, &format!("{split}-labels-idx1-ubyte"));
    let images = read_idx(&image_path)?;
    let labels = read_idx(&label_path)?;
    let corrupt = |path: &Path, msg: String| Error::CorruptFile {
        path: path.display().to_string(),
        msg,
    };
    if images.shape.len() != 3 {
        return Err(corrupt(
            &image_path,
            format!(
                "expected 3 dimensions (n, rows, cols), found {:?}",
                images.shape
            ),
        ));
    }
    if labels.shape.len() != 1 || labels.shape[0] != images.shape[0] {
        return Err(corrupt(
            &label_path,
            format!(
                "{:?} labels for {} images in {}",
                labels.shape,
                images.shape[0],
                image_path.display()
            ),
        ));
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(corrupt(
            &label_path,
            format!("label {bad} is not a digit 0-9"),
        ));
    }
    Ok(ImageSplit {
        images: images.data,
        labels: labels.data,
        rows: images.shape[1],
        cols: images.shape[2],
    })
}
