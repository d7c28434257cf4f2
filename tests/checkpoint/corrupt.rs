//! Corrupt and truncated files are described errors, never panics; writes are atomic.

use super::helpers::{every_dtype, expect_corrupt, meta, mlp, TestDir};
use ferrite::checkpoint::{
    self, load_into_module, load_state_dict, save_module, save_state_dict, write_atomic, Strict,
};
use ferrite::{Error, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

// ----- corrupt and truncated files --------------------------------------------

/// A small valid file with several dtypes and metadata.
fn sample_file_bytes(dir: &TestDir) -> Vec<u8> {
    let path = dir.path("sample.safetensors");
    let tensors: Vec<(String, Tensor)> = every_dtype().into_iter().take(7).collect();
    save_state_dict(&path, &tensors, &meta(&[("format", "pt")])).unwrap();
    std::fs::read(&path).unwrap()
}

/// Writes `bytes` to `path` and loads it.
fn load_bytes(path: &Path, bytes: &[u8]) -> ferrite::Result<Vec<(String, Tensor)>> {
    std::fs::write(path, bytes).unwrap();
    load_state_dict(path).map(|(t, _)| t)
}

#[test]
fn every_truncation_is_a_corrupt_file_error() {
    let dir = TestDir::new("truncate");
    let good = sample_file_bytes(&dir);
    let path = dir.path("cut.safetensors");
    assert!(load_bytes(&path, &good).is_ok());
    for len in 0..good.len() {
        let msg = expect_corrupt(
            load_bytes(&path, &good[..len]),
            &path,
            &format!("truncated to {len}"),
        );
        if len < 8 {
            assert!(msg.contains("truncated"), "{len}: {msg}");
        }
    }
    // Trailing garbage is rejected as well.
    let mut longer = good.clone();
    longer.extend_from_slice(b"extra");
    expect_corrupt(load_bytes(&path, &longer), &path, "trailing bytes");
}

#[test]
fn random_byte_flips_never_panic() {
    let dir = TestDir::new("flips");
    let good = sample_file_bytes(&dir);
    let path = dir.path("flipped.safetensors");
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut ok, mut corrupt) = (0, 0);
    for round in 0..400 {
        let mut bytes = good.clone();
        let flips = rng.random_range(1..=3);
        for _ in 0..flips {
            // Mostly in the header, where the structure is.
            let at = if round % 4 == 3 {
                rng.random_range(0..bytes.len())
            } else {
                rng.random_range(0..8 + n)
            };
            bytes[at] ^= 1u8 << rng.random_range(0..8);
        }
        match load_bytes(&path, &bytes) {
            Ok(_) => ok += 1,
            Err(Error::CorruptFile { path: p, .. }) => {
                assert_eq!(p, path.display().to_string());
                corrupt += 1;
            }
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
    }
    assert!(
        corrupt > 200,
        "most header flips are detected: {corrupt} / 400"
    );
    assert!(ok > 0, "flips in tensor data still load: {ok}");

    // Whole-byte rewrites of the 8-byte length prefix and random overwrites.
    for round in 0..200 {
        let mut bytes = good.clone();
        let at = rng.random_range(0..bytes.len().min(64));
        bytes[at] = rng.random();
        if round % 2 == 0 {
            let k = rng.random_range(0..8);
            bytes[k] = 0xff;
        }
        match load_bytes(&path, &bytes) {
            Ok(_) | Err(Error::CorruptFile { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
    }
}

#[test]
fn specific_corruptions_are_described() {
    let dir = TestDir::new("corrupt");
    let path = dir.path("bad.safetensors");
    let with_header = |json: &str, data: &[u8]| {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b.extend_from_slice(data);
        b
    };
    // Header length larger than the file.
    let mut b = with_header("{}", &[]);
    b[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let msg = expect_corrupt(load_bytes(&path, &b), &path, "huge length");
    assert!(msg.contains("header length 1000000 is larger"), "{msg}");
    let mut b = with_header("{}", &[]);
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_corrupt(load_bytes(&path, &b), &path, "u64::MAX length");
    // Not JSON.
    let msg = expect_corrupt(
        load_bytes(&path, &with_header("{not json", &[])),
        &path,
        "bad json",
    );
    assert!(msg.contains("JSON"), "{msg}");
    // Offsets beyond the data.
    let msg = expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 4],
            ),
        ),
        &path,
        "offsets out of range",
    );
    assert!(!msg.is_empty());
    // Offsets that disagree with the shape.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "shape vs offsets",
    );
    // Shape whose element count overflows.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        &path,
        "overflowing shape",
    );
    // A dtype safetensors knows but ferrite cannot hold, named with the tensor.
    let msg = expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "I32",
    );
    assert!(msg.contains("`w`") && msg.contains("I32"), "{msg}");
    // A dtype nobody knows.
    expect_corrupt(
        load_bytes(
            &path,
            &with_header(
                r#"{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        &path,
        "Q9",
    );
    // Invalid UTF-8 in the header.
    let mut b = with_header(r#"{"a":{}}"#, &[]);
    b[10] = 0xff;
    expect_corrupt(load_bytes(&path, &b), &path, "utf-8");
    // A missing file is an I/O error naming it.
    let missing = dir.path("nope.safetensors");
    match load_state_dict(&missing) {
        Err(Error::Io { path: p, source }) => {
            assert_eq!(p, missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let e = load_into_module(&missing, &mlp(1), Strict::No).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}

// ----- atomic writes ---------------------------------------------------------

#[test]
fn failed_write_leaves_old_checkpoint_byte_identical_and_no_temp_file() {
    let dir = TestDir::new("atomic");
    let path = dir.path("model.safetensors");
    let old_model = mlp(1);
    save_module(&path, &old_model, &meta(&[("version", "old")])).unwrap();
    let old = std::fs::read(&path).unwrap();
    let new_model = mlp(2);

    // Fail at the start, inside the header, at the header/data boundary and
    // in the middle of the tensor data.
    for limit in [0u64, 5, 8, 40, old.len() as u64 / 2, old.len() as u64 - 1] {
        checkpoint::inject_write_fault_after(Some(limit));
        let e = save_module(&path, &new_model, &meta(&[("version", "new")])).unwrap_err();
        match &e {
            Error::Io { path: p, source } => {
                assert_eq!(p, &path.display().to_string());
                assert!(source.to_string().contains("injected"), "{source}");
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), old, "limit {limit}");
        assert_eq!(dir.listing(), vec!["model.safetensors"], "limit {limit}");
    }
    // The fault was one-shot: the next save replaces the file completely.
    save_module(&path, &new_model, &meta(&[("version", "new")])).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), old);
    let (_, m) = load_state_dict(&path).unwrap();
    assert_eq!(m["version"], "new");
    assert_eq!(dir.listing(), vec!["model.safetensors"]);

    // The same holds for an error raised by the producer of the bytes.
    let current = std::fs::read(&path).unwrap();
    let e = write_atomic(&path, |w| {
        w.write_all(b"partial garbage").unwrap();
        Err(Error::InvalidArgument {
            op: "producer",
            msg: "cannot produce the data".into(),
        })
    })
    .unwrap_err();
    assert!(e.to_string().contains("cannot produce the data"));
    assert_eq!(std::fs::read(&path).unwrap(), current);
    assert_eq!(dir.listing(), vec!["model.safetensors"]);

    // And for a panic in the producer (the temporary file is still removed).
    let caught = std::panic::catch_unwind(|| {
        let _ = write_atomic(&path, |w| {
            w.write_all(&[0u8; 4096]).unwrap();
            panic!("producer panicked");
        });
    });
    assert!(caught.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), current);
    assert_eq!(dir.listing(), vec!["model.safetensors"]);
}

#[test]
fn unwritable_targets_are_io_errors_naming_the_path() {
    let dir = TestDir::new("unwritable");
    let t = vec![("w".to_string(), Tensor::scalar(1.0f32))];
    let nowhere = dir.path("no/such/dir/x.safetensors");
    match save_state_dict(&nowhere, &t, &BTreeMap::new()) {
        Err(Error::Io { path, .. }) => assert_eq!(path, nowhere.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
    // The target is a directory: the rename fails, the temp file goes.
    std::fs::create_dir(dir.path("taken")).unwrap();
    let e = save_state_dict(dir.path("taken"), &t, &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert_eq!(dir.listing(), vec!["taken"]);
}
