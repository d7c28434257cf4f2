//! The data loader: epochs visit every image once in a seeded order,
//! batches are identical whatever the number of threads, crops and flips
//! are exactly the padded-and-cut images computed here by hand, and pixels
//! are normalised per channel.

use ferrite::data::loader::{epoch_order, Batch, DataLoader, LoaderConfig};
use ferrite::data::multimnist::{generate_train, MultiMnistConfig};
use ferrite::data::{mnist, ImageDataset, Labels};
use std::collections::{HashMap, HashSet};

/// `n` single-label RGB images of 5×6, pixel bytes from a fixed formula,
/// labels `i % 4`.
fn rgb_dataset(n: usize) -> ImageDataset {
    ImageDataset {
        images: (0..n * 3 * 30)
            .map(|v| ((v * 37 + 11) % 256) as u8)
            .collect(),
        channels: 3,
        height: 5,
        width: 6,
        num_classes: 4,
        labels: Labels::Single((0..n as u32).map(|i| i % 4).collect()),
        name: "rgb".into(),
    }
}

fn collect(loader: &mut DataLoader, epoch: usize) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

/// Everything a batch holds, as plain values: x, targets, labels, indices.
type BatchValues = (Vec<f32>, Vec<f32>, Option<Vec<i64>>, Vec<usize>);

/// The values of each batch.
fn contents(batches: &[Batch]) -> Vec<BatchValues> {
    batches
        .iter()
        .map(|b| {
            (
                b.x.to_vec::<f32>().unwrap(),
                b.targets.to_vec::<f32>().unwrap(),
                b.labels.as_ref().map(|l| l.to_vec::<i64>().unwrap()),
                b.indices.clone(),
            )
        })
        .collect()
}

fn augmenting(seed: u64) -> LoaderConfig {
    LoaderConfig {
        crop_padding: 2,
        hflip: true,
        ..LoaderConfig::training(5, seed).normalized(&[0.5, 0.4, 0.3], &[0.2, 0.25, 0.3])
    }
}

#[test]
fn epochs_visit_every_image_once_in_seeded_orders() {
    let ds = rgb_dataset(23);
    let mut loader = DataLoader::new(&ds, augmenting(11)).unwrap();
    assert_eq!(loader.num_batches(), 5);
    assert_eq!(loader.epoch(0).len(), 5);
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let batches = collect(&mut loader, epoch);
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![5, 5, 5, 5, 3]
        );
        let order: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..23).collect::<Vec<_>>(), "each image once");
        assert_eq!(order, epoch_order(23, 11, epoch));
        for b in &batches {
            assert_eq!(b.x.shape(), &[b.len(), 3, 5, 6]);
            assert_eq!(b.targets.shape(), &[b.len(), 4]);
            let labels = b.labels.as_ref().unwrap();
            assert_eq!(labels.dtype(), ferrite::DType::I64);
            let labels = labels.to_vec::<i64>().unwrap();
            assert_eq!(
                labels,
                b.indices.iter().map(|&i| i as i64 % 4).collect::<Vec<_>>()
            );
            // One-hot targets of the labels.
            let t = b.targets.to_vec::<f32>().unwrap();
            for (row, &l) in t.chunks(4).zip(&labels) {
                let expected: Vec<f32> = (0..4).map(|c| (c == l) as u32 as f32).collect();
                assert_eq!(row, &expected[..]);
            }
        }
        orders.push(order);
    }
    assert_ne!(orders[0], orders[1], "epochs shuffle differently");
    assert_ne!(orders[1], orders[2]);
    let mut other_seed = DataLoader::new(&ds, augmenting(12)).unwrap();
    let other: Vec<usize> = collect(&mut other_seed, 0)
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_ne!(orders[0], other, "seeds shuffle differently");

    // drop_last drops the short batch.
    let mut dropping = DataLoader::new(
        &ds,
        LoaderConfig {
            drop_last: true,
            ..augmenting(11)
        },
    )
    .unwrap();
    assert_eq!(dropping.num_batches(), 4);
    let batches = collect(&mut dropping, 0);
    assert_eq!(batches.len(), 4);
    assert!(batches.iter().all(|b| b.len() == 5));
    assert_eq!(
        batches
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>(),
        epoch_order(23, 11, 0)[..20]
    );
}

#[test]
fn batches_do_not_depend_on_the_thread_count() {
    let ds = rgb_dataset(64);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut loader = DataLoader::new(&ds, augmenting(3)).unwrap();
            (0..3)
                .flat_map(|e| contents(&collect(&mut loader, e)))
                .collect::<Vec<_>>()
        })
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one, two);
    assert_eq!(one, run(4));
    // Augmentation depends on the epoch: the same image differs across epochs.
    let loader = DataLoader::new(&ds, augmenting(3)).unwrap();
    let first = loader.batch(&[7], 0).unwrap().x.to_vec::<f32>().unwrap();
    let again = loader.batch(&[7], 0).unwrap().x.to_vec::<f32>().unwrap();
    assert_eq!(first, again);
    let differs =
        (1..10).any(|e| loader.batch(&[7], e).unwrap().x.to_vec::<f32>().unwrap() != first);
    assert!(differs);
}

/// Every crop (offsets 0..=2·pad) of `image` (h×w, one channel) framed by
/// `pad` zeros, optionally mirrored left-right, computed the plain way.
fn variants(image: &[u8], h: usize, w: usize, pad: usize, flips: bool) -> HashSet<Vec<u8>> {
    let (ph, pw) = (h + 2 * pad, w + 2 * pad);
    let mut padded = vec![0u8; ph * pw];
    for y in 0..h {
        for x in 0..w {
            padded[(y + pad) * pw + x + pad] = image[y * w + x];
        }
    }
    let mut out = HashSet::new();
    for dy in 0..=2 * pad {
        for dx in 0..=2 * pad {
            let crop: Vec<u8> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (y, x)))
                .map(|(y, x)| padded[(y + dy) * pw + x + dx])
                .collect();
            if flips {
                let mirrored: Vec<u8> = crop
                    .chunks(w)
                    .flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>())
                    .collect();
                out.insert(mirrored);
            }
            out.insert(crop);
        }
    }
    out
}

/// The bytes behind a batch image normalised with mean 0, std 1.
fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().map(|v| (v * 255.0).round() as u8).collect()
}

#[test]
fn crops_and_flips_are_exact_padded_windows() {
    // A hand-made 3×4 image with distinct non-zero pixels, copied 50 times.
    let picture: Vec<u8> = (1..=12).map(|v| v * 20).collect();
    assert_eq!(&picture[..4], &[20, 40, 60, 80]);
    let ds = ImageDataset {
        images: picture.repeat(50),
        channels: 1,
        height: 3,
        width: 4,
        num_classes: 2,
        labels: Labels::Single(vec![1; 50]),
        name: "tiny".into(),
    };
    for (pad, hflip) in [(1, true), (1, false), (0, true), (2, false)] {
        let allowed = variants(&picture, 3, 4, pad, hflip);
        assert_eq!(
            allowed.len(),
            (2 * pad + 1).pow(2) * if hflip { 2 } else { 1 }
        );
        let config = LoaderConfig {
            crop_padding: pad,
            hflip,
            ..LoaderConfig::training(16, 9)
        };
        let mut loader = DataLoader::new(&ds, config).unwrap();
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for epoch in 0..12 {
            for batch in collect(&mut loader, epoch) {
                let x = batch.x.to_vec::<f32>().unwrap();
                for image in x.chunks(12) {
                    let bytes = bytes_of(image);
                    assert!(
                        allowed.contains(&bytes),
                        "pad {pad} flip {hflip}: {bytes:?}"
                    );
                    *seen.entry(bytes).or_default() += 1;
                }
            }
        }
        // 600 draws: every variant shows up (each has probability >= 1/25).
        assert_eq!(seen.len(), allowed.len(), "pad {pad} flip {hflip}");
    }
    // Explicit cases of the pad-1 window: offset (0, 0) shifts the image
    // down-right by one, and the flip of offset (1, 1) mirrors it.
    let shifted = vec![0, 0, 0, 0, 0, 20, 40, 60, 0, 100, 120, 140];
    let mirrored = vec![80, 60, 40, 20, 160, 140, 120, 100, 240, 220, 200, 180];
    let allowed = variants(&picture, 3, 4, 1, true);
    assert!(allowed.contains(&shifted) && allowed.contains(&mirrored));
    // Without augmentation the image comes back as it is.
    let mut eval = DataLoader::new(&ds, LoaderConfig::evaluation(50)).unwrap();
    let x = collect(&mut eval, 5)[0].x.to_vec::<f32>().unwrap();
    assert!(x.chunks(12).all(|image| bytes_of(image) == picture));
}

#[test]
fn pixels_are_normalised_per_channel() {
    // One 3-channel 1×2 image.
    let ds = ImageDataset {
        images: vec![255, 0, 0, 51, 51, 102],
        channels: 3,
        height: 1,
        width: 2,
        num_classes: 1,
        labels: Labels::Single(vec![0]),
        name: "one".into(),
    };
    let config = LoaderConfig::evaluation(1).normalized(&[0.5, 0.25, 0.0], &[0.5, 0.25, 2.0]);
    let mut loader = DataLoader::new(&ds, config).unwrap();
    let x = collect(&mut loader, 0)[0].x.to_vec::<f32>().unwrap();
    // (255/255 - .5)/.5 = 1, (0 - .5)/.5 = -1; (0 - .25)/.25 = -1,
    // (.2 - .25)/.25 = -.2; .2/2 = .1, .4/2 = .2.
    let expected = [1.0, -1.0, -1.0, -0.2, 0.1, 0.2];
    for (g, e) in x.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "{x:?}");
    }
    // Zero padding is black before normalisation: (0 - mean) / std.
    let padded = DataLoader::new(
        &ds,
        LoaderConfig {
            crop_padding: 1,
            ..LoaderConfig::training(1, 0).normalized(&[0.5], &[0.5])
        },
    )
    .unwrap();
    let mut values = HashSet::new();
    for e in 0..40 {
        for v in padded.batch(&[0], e).unwrap().x.to_vec::<f32>().unwrap() {
            values.insert(v.to_bits());
        }
    }
    assert!(values.contains(&(-1.0f32).to_bits()));

    // MNIST through the loader equals ImageSplit::batch, image for image.
    let (train, _) = mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let ds = ImageDataset::from_split(&train, "mnist-train").unwrap();
    let config = LoaderConfig::evaluation(64).normalized(&[0.1307], &[0.3081]);
    let mut loader = DataLoader::new(&ds, config).unwrap();
    assert_eq!(loader.num_batches(), 938);
    let first = loader.epoch(0).next().unwrap().unwrap();
    let (x, y) = train
        .batch(&(0..64).collect::<Vec<_>>(), 0.1307, 0.3081)
        .unwrap();
    assert_eq!(first.x.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert_eq!(
        first.labels.unwrap().to_vec::<i64>().unwrap(),
        y.to_vec::<i64>().unwrap()
    );
    assert_eq!(first.indices, (0..64).collect::<Vec<_>>());
}

#[test]
fn multi_label_batches_carry_multi_hot_targets() {
    let (train, _) = mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")).unwrap();
    let cfg = MultiMnistConfig {
        train_size: 40,
        ..MultiMnistConfig::default()
    };
    let ds = generate_train(&cfg, &train).unwrap();
    let Labels::Multi { bits, .. } = &ds.labels else {
        panic!()
    };
    let mut loader = DataLoader::new(&ds, LoaderConfig::training(16, 1)).unwrap();
    let batches = collect(&mut loader, 0);
    assert_eq!(batches.len(), 3);
    for b in &batches {
        assert!(b.labels.is_none());
        assert_eq!(b.x.shape(), &[b.len(), 1, 56, 56]);
        let t = b.targets.to_vec::<f32>().unwrap();
        for (row, &i) in t.chunks(10).zip(&b.indices) {
            let expected: Vec<f32> = bits[i * 10..(i + 1) * 10]
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(row, &expected[..]);
        }
    }
}

#[test]
fn bad_configurations_are_errors() {
    let ds = rgb_dataset(4);
    let err = |config: LoaderConfig| DataLoader::new(&ds, config).unwrap_err().to_string();
    assert!(err(LoaderConfig::training(0, 0)).contains("batch_size"));
    let two_means = err(LoaderConfig::training(2, 0).normalized(&[0.1, 0.2], &[1.0]));
    assert!(
        two_means.contains("mean has 2 values") && two_means.contains("3 channel"),
        "{two_means}"
    );
    assert!(err(LoaderConfig::training(2, 0).normalized(&[0.1], &[0.0])).contains("std 0"));
    assert!(err(LoaderConfig::training(2, 0).normalized(&[0.1], &[f32::NAN])).contains("std NaN"));
    assert!(
        err(LoaderConfig::training(2, 0).normalized(&[f32::INFINITY], &[1.0])).contains("mean inf")
    );
    assert!(err(LoaderConfig {
        crop_padding: 6,
        ..LoaderConfig::training(2, 0)
    })
    .contains("crop padding 6 exceeds the 5x6 image"));
    let mut broken = rgb_dataset(4);
    broken.images.truncate(50);
    assert!(DataLoader::new(&broken, LoaderConfig::training(2, 0)).is_err());
    let loader = DataLoader::new(&ds, LoaderConfig::training(2, 0)).unwrap();
    assert!(loader.batch(&[1, 4], 0).is_err());
    // A batch larger than the dataset: one short batch, or none with drop_last.
    let mut big = DataLoader::new(&ds, LoaderConfig::evaluation(10)).unwrap();
    assert_eq!(collect(&mut big, 0).len(), 1);
    let dropping = LoaderConfig {
        drop_last: true,
        ..LoaderConfig::evaluation(10)
    };
    let mut none = DataLoader::new(&ds, dropping).unwrap();
    assert_eq!(none.num_batches(), 0);
    assert!(none.epoch(0).next().is_none());
}
