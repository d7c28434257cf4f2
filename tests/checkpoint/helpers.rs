//! Shared helpers: a scratch directory, bit-exact comparisons, sample state dicts and modules.

use ferrite::nn::{self, Bias, Linear, Module, ReLU, Sequential};
use ferrite::{DType, Error, Tensor};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ----- helpers ----------------------------------------------------------

/// A fresh, empty directory for one test (removed when dropped).
pub(super) struct TestDir(PathBuf);

impl TestDir {
    pub(super) fn new(name: &str) -> TestDir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("checkpoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
    pub(super) fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    /// File names in the directory, sorted.
    pub(super) fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The exact bits of every element (any dtype), for bitwise comparisons.
pub(super) fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F32 => t
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F64 => t
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
        DType::BF16 => t
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits() as u64)
            .collect(),
        DType::F16 => t
            .to_vec::<f16>()
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
        DType::U8 => t
            .to_vec::<u8>()
            .unwrap()
            .iter()
            .map(|&v| v as u64)
            .collect(),
    }
}

pub(super) fn assert_same_tensor(name: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype(), "{name}: dtype");
    assert_eq!(a.shape(), b.shape(), "{name}: shape");
    assert_eq!(bits(a), bits(b), "{name}: values");
}

pub(super) fn assert_same_dict(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let a: BTreeMap<&str, &Tensor> = a.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let b: BTreeMap<&str, &Tensor> = b.iter().map(|(n, t)| (n.as_str(), t)).collect();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "names"
    );
    for (name, ta) in &a {
        assert_same_tensor(name, ta, b[name]);
    }
}

/// The state dict of a module as owned copies (not sharing storage).
pub(super) fn snapshot(m: &dyn Module) -> Vec<(String, Tensor)> {
    nn::state_dict(m)
        .into_iter()
        .map(|(n, t)| (n, t.detach().contiguous_copy().unwrap()))
        .collect()
}

pub(super) fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One tensor of every dtype, with awkward values and shapes.
pub(super) fn every_dtype() -> Vec<(String, Tensor)> {
    let f32s = vec![
        0.0f32,
        -0.0,
        1.5,
        f32::MIN_POSITIVE / 4.0, // subnormal
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234), // NaN with a payload
        -3.25,
        7.0,
        1e-30,
        2.0,
    ];
    let f64s: Vec<f64> = vec![
        std::f64::consts::PI,
        -0.0,
        f64::MIN_POSITIVE / 8.0,
        f64::NAN,
        1e300,
        -1.0,
    ];
    let t = |v: Result<Tensor, Error>| v.unwrap();
    vec![
        ("f32.matrix".into(), t(Tensor::from_vec(f32s, &[3, 4]))),
        ("f64.vector".into(), t(Tensor::from_vec(f64s, &[6]))),
        (
            "bf16.cube".into(),
            t(Tensor::from_vec(
                (0..24)
                    .map(|i| bf16::from_f32(i as f32 * 0.37 - 4.0))
                    .collect(),
                &[2, 3, 4],
            )),
        ),
        (
            "f16.row".into(),
            t(Tensor::from_vec(
                vec![
                    f16::from_f32(65504.0),
                    f16::from_f32(-0.000061),
                    f16::INFINITY,
                    f16::from_f32(0.1),
                ],
                &[1, 4],
            )),
        ),
        ("i64.scalar".into(), Tensor::scalar(i64::MIN)),
        (
            "i64.vector".into(),
            t(Tensor::from_vec(vec![i64::MAX, -1, 0, 42], &[4])),
        ),
        (
            "u8.mask".into(),
            t(Tensor::from_vec(vec![0u8, 1, 255, 128, 7], &[5, 1])),
        ),
        ("f32.scalar".into(), Tensor::scalar(-2.5f32)),
        ("f32.empty".into(), t(Tensor::zeros(&[0], DType::F32))),
        ("f64.empty".into(), t(Tensor::zeros(&[2, 0, 3], DType::F64))),
        ("u8.empty".into(), t(Tensor::zeros(&[0, 5], DType::U8))),
        (
            "bn.num_batches_tracked".into(),
            Tensor::scalar(3i64), // as PyTorch keeps it
        ),
    ]
}

pub(super) fn mlp(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .with(Linear::new(3, 4, Bias::Yes, &mut rng).unwrap())
        .with(ReLU)
        .with(Linear::new(4, 2, Bias::Yes, &mut rng).unwrap())
}

pub(super) fn expect_corrupt(
    result: ferrite::Result<impl std::fmt::Debug>,
    path: &Path,
    what: &str,
) -> String {
    match result {
        Err(Error::CorruptFile { path: p, msg }) => {
            assert_eq!(p, path.display().to_string(), "{what}");
            let e = Error::CorruptFile {
                path: p.clone(),
                msg: msg.clone(),
            };
            assert!(e.to_string().starts_with(&p), "{what}: {e}");
            msg
        }
        other => panic!("{what}: expected CorruptFile, got {other:?}"),
    }
}
