//! Sizes read from files and options are bounded before anything is
//! allocated, allocation failure of large buffers is an error (not an
//! abort), counters near `u64::MAX` are errors (not panics or wraparound),
//! and gzipped IDX files are read member by member.
//!
//! This test binary runs under an allocator that refuses, per thread, any
//! single allocation above a limit the test sets, so that "allocation
//! failure is an `Err`" is checked for real.

use ferrite::checkpoint::{load_state_dict, read_training};
use ferrite::data::idx::{parse_idx, parse_idx_gz, read_idx};
use ferrite::data::loader::{DataLoader, LoaderConfig, MAX_BATCH_SIZE};
use ferrite::data::longtail::long_tail_indices;
use ferrite::data::mnist::ImageSplit;
use ferrite::data::multimnist::{generate_train, MultiMnistConfig, MAX_SPLIT_IMAGES};
use ferrite::data::ImageDataset;
use ferrite::plm::{normalize, Histograms, Plm, PlmConfig, MAX_BINS};
use ferrite::{DType, Error, Tensor};
use flate2::{write::GzEncoder, Compression};
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The system allocator, refusing single allocations above the calling
/// thread's limit.
struct Limited;

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's limit; none while it panics, so that a failing
/// test reports its panic (with a backtrace) instead of failing again.
fn limit() -> usize {
    if std::thread::panicking() {
        return usize::MAX;
    }
    LIMIT.try_with(Cell::get).unwrap_or(usize::MAX)
}

unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > limit() {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > limit() {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// Runs `f` with single allocations on this thread limited to `bytes`.
fn with_alloc_limit<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    LIMIT.with(|l| l.set(bytes));
    let out = f();
    LIMIT.with(|l| l.set(usize::MAX));
    out
}

/// A file the test wrote into the system's temporary folder, removed
/// when dropped (its name carries the process id).
struct TempFile(PathBuf);

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_file(name: &str, bytes: &[u8]) -> TempFile {
    let name = format!("ferrite-bounded-{}-{name}", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    TempFile(path)
}

fn message(r: Result<impl std::fmt::Debug, Error>) -> String {
    r.expect_err("expected an error").to_string()
}

// ----- PLM: sizes ------------------------------------------------------------

/// A PLM state with counts in every histogram, as JSON.
fn plm_state() -> Value {
    let mut plm = Plm::new(PlmConfig::default(), &[3, 1], 8).unwrap();
    let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]).unwrap();
    let p = Tensor::from_vec(vec![0.9f32, 0.2, 0.4, f32::NAN, 0.7, 0.1], &[3, 2]).unwrap();
    plm.sample_mask(&y).unwrap();
    plm.observe(&p, &y).unwrap();
    serde_json::from_str(&plm.state_json().unwrap()).unwrap()
}

fn load(state: &Value) -> ferrite::Result<Plm> {
    Plm::from_state_json(&state.to_string())
}

#[test]
fn plm_bin_counts_from_states_and_options_are_bounded() {
    let good = plm_state();
    assert!(load(&good).is_ok());
    for n_bins in [1u64 << 40, (MAX_BINS + 1) as u64, u64::MAX] {
        let mut bad = good.clone();
        bad["config"]["bins"] = n_bins.into();
        let err = with_alloc_limit(1 << 20, || message(load(&bad)));
        assert!(err.contains("bins"), "{n_bins}: {err}");
    }
    let cfg = PlmConfig {
        n_bins: 1 << 40,
        ..PlmConfig::default()
    };
    let err = with_alloc_limit(1 << 20, || message(Plm::new(cfg, &[1, 2], 4)));
    assert!(err.contains("bins must be between 2 and 65536"), "{err}");
    // n_bins × C is checked too: overflowing, or beyond the cell bound.
    assert!(message(Histograms::new(usize::MAX, 2)).contains("exceed"));
    let err = with_alloc_limit(1 << 20, || message(Histograms::new(MAX_BINS, 1 << 20)));
    assert!(err.contains("histogram cells"), "{err}");
    let cfg = PlmConfig {
        n_bins: MAX_BINS,
        ..PlmConfig::default()
    };
    let positives = vec![1usize; 1 << 10];
    assert!(message(Plm::new(cfg, &positives, 4)).contains("histogram cells"));
}

#[test]
fn failing_to_allocate_histograms_is_an_error() {
    // 2^16 bins x 16 classes: 8 MiB per histogram, over a 1 MiB limit.
    let err = with_alloc_limit(1 << 20, || message(Histograms::new(MAX_BINS, 16)));
    assert!(err.contains("cannot allocate"), "{err}");
    assert!(Histograms::new(MAX_BINS, 16).is_ok());
}

// ----- PLM: counters near u64::MAX -----------------------------------------

#[test]
fn exhausted_plm_counters_are_errors() {
    let y = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 2]).unwrap();
    let mut state = plm_state();
    state["batches"] = u64::MAX.into();
    let mut plm = load(&state).unwrap();
    let err = message(plm.sample_mask(&y));
    assert!(err.contains("mask counter"), "{err}");
    assert_eq!(plm.batches_drawn(), u64::MAX);

    let mut state = plm_state();
    state["epochs"] = u64::MAX.into();
    let mut plm = load(&state).unwrap();
    let before = plm.state_json().unwrap();
    let err = message(plm.end_epoch());
    assert!(err.contains("epoch counter"), "{err}");
    assert_eq!(plm.state_json().unwrap(), before);
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn histogram_counts_near_u64_max_are_errors_not_wraparound() {
    // Raise class 0's positive labels (and the discarded count with them,
    // as if those labels had NaN predictions) until all labels together
    // are u64::MAX - 1.
    let mut state = plm_state();
    let h = &state["histograms"];
    let labels: u64 =
        counts(&h["pos_labels"]).iter().sum::<u64>() + counts(&h["neg_labels"]).iter().sum::<u64>();
    let extra = u64::MAX - 1 - labels;
    let pos0 = h["pos_labels"][0].as_u64().unwrap() + extra;
    let discarded = h["discarded"].as_u64().unwrap() + extra;
    state["histograms"]["pos_labels"][0] = pos0.into();
    state["histograms"]["discarded"] = discarded.into();
    let mut plm = load(&state).unwrap();
    let before = plm.histograms().clone();
    // One more element fits; a batch of two does not, and counts nothing.
    let p1 = Tensor::from_vec(vec![0.5f32, 0.5], &[1, 2]).unwrap();
    let y1 = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 2]).unwrap();
    let err = message(plm.observe(&p1, &y1));
    assert!(err.contains("u64::MAX"), "{err}");
    assert_eq!(plm.histograms(), &before);
    // The end-of-epoch update normalises such counts without overflow.
    plm.end_epoch().unwrap();

    // Counts that sum past u64::MAX, or that disagree with each other, are
    // refused when the state is read.
    let mut bad = state.clone();
    bad["histograms"]["neg_labels"][1] = u64::MAX.into();
    assert!(message(load(&bad)).contains("exceed u64::MAX"));
    let mut bad = plm_state();
    bad["histograms"]["pos_pred"][0] = 1000.into();
    assert!(message(load(&bad)).contains("binned positive predictions"));
    let mut bad = plm_state();
    bad["histograms"]["discarded"] = 0.into();
    assert!(message(load(&bad)).contains("discarded"));
    assert_eq!(normalize(&[u64::MAX, u64::MAX]), Some(vec![0.5, 0.5]));
    assert_eq!(normalize(&[0, 0]), None);
}

// ----- safetensors: empty tensors with absurd dimensions --------------------

fn safetensors_bytes(shape: &[u64]) -> Vec<u8> {
    let header = json!({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}});
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out
}

#[test]
fn empty_tensor_with_overflowing_dimensions_is_a_corrupt_file() {
    let path = write_file(
        "absurd.safetensors",
        &safetensors_bytes(&[0, 1 << 32, 1 << 32]),
    );
    for err in [
        message(load_state_dict(&path)),
        message(read_training(&path)),
    ] {
        assert!(err.contains("absurd.safetensors"), "{err}");
        assert!(err.contains("tensor `w`"), "{err}");
        assert!(err.contains("too large"), "{err}");
    }
    // An empty tensor with sane dimensions still loads.
    let path = write_file("empty.safetensors", &safetensors_bytes(&[0, 3, 4]));
    let (tensors, _) = load_state_dict(&path).unwrap();
    assert_eq!(tensors[0].1.shape(), &[0, 3, 4]);
    // The same shapes through the tensor constructors.
    assert!(Tensor::from_vec(Vec::<f32>::new(), &[0, 1 << 32, 1 << 32]).is_err());
    assert!(Tensor::zeros(&[1 << 40, 0, 1 << 40], DType::F32).is_err());
    assert_eq!(
        Tensor::zeros(&[0, 1 << 20, 1 << 20], DType::F32)
            .unwrap()
            .numel(),
        0
    );
}

// ----- MultiMNIST, loader ------------------------------------------------------

/// A tiny source split: one 28x28 image of each digit.
fn digits() -> ImageSplit {
    ImageSplit {
        images: (0..10 * 784).map(|i| (i % 251) as u8).collect(),
        labels: (0..10).collect(),
        rows: 28,
        cols: 28,
    }
}

#[test]
fn multimnist_sizes_are_bounded_before_allocating() {
    let source = digits();
    let base = MultiMnistConfig {
        train_size: 4,
        test_size: 4,
        ..MultiMnistConfig::default()
    };
    assert_eq!(generate_train(&base, &source).unwrap().len(), 4);
    for (cfg, needle) in [
        (
            MultiMnistConfig {
                train_size: 1 << 40,
                ..base.clone()
            },
            "train_size must be between 1 and",
        ),
        (
            MultiMnistConfig {
                test_size: MAX_SPLIT_IMAGES + 1,
                ..base.clone()
            },
            "test_size must be between 1 and",
        ),
        (
            MultiMnistConfig {
                grid: 64,
                max_digits: 4,
                train_size: MAX_SPLIT_IMAGES,
                ..base.clone()
            },
            "bytes allowed per split",
        ),
        (
            MultiMnistConfig {
                grid: 1,
                cell: 1 << 33,
                min_digits: 1,
                max_digits: 1,
                ..base.clone()
            },
            "too large",
        ),
    ] {
        let err = with_alloc_limit(1 << 20, || message(generate_train(&cfg, &source)));
        assert!(err.contains(needle), "{cfg:?}: {err}");
    }
    // A valid size whose buffer cannot be allocated is an error too.
    let big = MultiMnistConfig {
        train_size: 1000,
        ..base
    };
    let err = with_alloc_limit(1 << 20, || message(generate_train(&big, &source)));
    assert!(err.contains("cannot allocate"), "{err}");
}

#[test]
fn loader_batch_size_is_bounded() {
    let ds = ImageDataset::from_split(&digits(), "digits").unwrap();
    for b in [0, MAX_BATCH_SIZE + 1, usize::MAX] {
        let err = message(DataLoader::new(&ds, LoaderConfig::training(b, 0)));
        assert!(
            err.contains("batch_size must be between 1 and"),
            "{b}: {err}"
        );
    }
    assert!(DataLoader::new(&ds, LoaderConfig::training(MAX_BATCH_SIZE, 0)).is_ok());
}

#[test]
fn long_tail_quotas_are_checked_before_reserving() {
    let labels = [0u32, 1, 0, 1, 0];
    let err = with_alloc_limit(1 << 20, || {
        message(long_tail_indices(&labels, 2, 1.0, Some(usize::MAX), 0))
    });
    assert!(err.contains("quota"), "{err}");
    assert_eq!(
        long_tail_indices(&labels, 2, 1.0, Some(2), 0)
            .unwrap()
            .len(),
        4
    );
}

// ----- IDX: allocation, gzip members, trailing garbage ------------------------

/// IDX bytes of `n` images of 2x3.
fn idx_images(n: u8) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, n, 0, 0, 0, 2, 0, 0, 0, 3];
    b.extend((0..6 * n as usize).map(|i| i as u8));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn multi_member_gzip_files_load_whole() {
    let raw = idx_images(5);
    let want = parse_idx(&raw).unwrap();
    // `cat a.gz b.gz c.gz`, split inside the header and inside the data,
    // with an empty member in the middle.
    let mut cat = gzip(&raw[..6]);
    cat.extend(gzip(&raw[6..20]));
    cat.extend(gzip(&[]));
    cat.extend(gzip(&raw[20..]));
    assert_eq!(parse_idx_gz(&cat).unwrap(), want);
    let path = write_file("multi-images-idx3-ubyte.gz", &cat);
    assert_eq!(read_idx(&path).unwrap(), want);
    // One member still loads, of course.
    assert_eq!(parse_idx_gz(&gzip(&raw)).unwrap(), want);
}

#[test]
fn gzip_trailing_garbage_is_refused() {
    let raw = idx_images(2);
    for tail in [
        &b"garbage"[..],
        &[0, 0, 0, 0][..],
        &[0x1f][..],
        &[0x1f, 0x8b, 8][..],
    ] {
        let mut bytes = gzip(&raw);
        bytes.extend_from_slice(tail);
        let path = write_file("tail-images-idx3-ubyte.gz", &bytes);
        let err = message(read_idx(&path));
        assert!(err.contains("tail-images-idx3-ubyte.gz"), "{tail:?}: {err}");
        assert!(err.contains("gzip"), "{tail:?}: {err}");
        if tail[0] != 0x1f {
            assert!(
                err.contains("trailing garbage after gzip member 1"),
                "{err}"
            );
        }
    }
    // More data than the header announces, in a further member.
    let mut bytes = gzip(&raw);
    bytes.extend(gzip(&[7]));
    assert!(parse_idx_gz(&bytes)
        .unwrap_err()
        .contains("truncated or padded"));
    // Not gzip at all, and empty.
    assert!(parse_idx_gz(&raw).unwrap_err().contains("not a gzip file"));
    assert!(parse_idx_gz(&[]).unwrap_err().contains("no gzip member"));
}

#[test]
fn idx_headers_cannot_make_the_reader_allocate() {
    // The header announces 2^31 x 2^31 bytes; the file holds 12. Nothing
    // near that size is allocated (1 MiB limit), raw or gzipped.
    let mut lying = vec![0, 0, 8, 2, 0x80, 0, 0, 0, 0x80, 0, 0, 0];
    lying.extend([1, 2, 3, 4]);
    let err = with_alloc_limit(1 << 20, || parse_idx_gz(&gzip(&lying)).unwrap_err());
    assert!(err.contains("found 4"), "{err}");
    let err = with_alloc_limit(1 << 20, || parse_idx(&lying).unwrap_err());
    assert!(err.contains("found 4"), "{err}");
    // Sizes whose non-zero values overflow are refused even when another
    // size is 0 (an empty array).
    let empty_absurd = [
        0, 0, 8, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(parse_idx(&empty_absurd).unwrap_err().contains("overflow"));
    // A real file too large for the memory limit is an error, not an abort.
    let path = write_file("big-images-idx3-ubyte", &idx_images(250));
    let err = with_alloc_limit(1024, || message(read_idx(&path)));
    assert!(err.contains("big-images-idx3-ubyte"), "{err}");
    assert!(err.contains("cannot allocate"), "{err}");
}
