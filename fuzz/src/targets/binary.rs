//! Targets for the binary readers: IDX (raw and gzip), MNIST folders,
//! CIFAR-10/100 files, safetensors state dicts, training checkpoints and
//! resuming a run from one.

use super::{Scratch, Target, Verdict};
use crate::input::{Input, Part};
use crate::mutate::Kind;
use crate::tiny;
use ferrite::checkpoint::{
    apply_state_dict, load_state_dict, read_training, save_state_dict, Strict,
};
use ferrite::data::cifar::{read_cifar100_file, read_cifar10_file, Cifar100Label};
use ferrite::data::idx::{parse_idx, read_idx, IdxArray};
use ferrite::data::{mnist, ImageDataset};
use ferrite::train::datasets::channel_stats;
use ferrite::train::Run;
use std::io::Read;
use std::time::Duration;

const FAST: Duration = Duration::from_secs(5);
const SAFETENSORS_TOKENS: &[&str] = &[
    "\"F32\"",
    "\"F64\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I64\"",
    "\"I32\"",
    "\"U8\"",
    "\"BOOL\"",
    "\"dtype\"",
    "\"shape\"",
    "\"data_offsets\"",
    "\"__metadata__\"",
    "[]",
    "[0]",
    "[0,4294967296,4294967296]",
    "\"training\"",
    "\"sgd\"",
    "\"adam\"",
];

/// Raw IDX files ([`read_idx`]).
pub const IDX: Target = Target {
    name: "idx",
    about: "IDX files, raw (data::idx::read_idx)",
    parts: &[Part {
        file: "data-idx3-ubyte",
        kind: Kind::Binary,
    }],
    dictionary: &[],
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("data-idx3-ubyte", &input[0]);
        Verdict::of(read_idx(path), |a| check_idx(&a, parse_idx(&input[0]).ok()))
    },
};

/// Gzipped IDX files ([`read_idx`] on a `.gz` name).
pub const IDX_GZ: Target = Target {
    name: "idx-gz",
    about: "IDX files, gzipped (data::idx::read_idx on *.gz)",
    parts: &[Part {
        file: "data-idx3-ubyte.gz",
        kind: Kind::Gzip,
    }],
    dictionary: &[],
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("data-idx3-ubyte.gz", &input[0]);
        // What a correct reader returns: the IDX array in the payload of
        // all members, if the file is nothing but complete gzip members.
        let expected = gzip_members(&input[0]).map(|payload| parse_idx(&payload));
        match (read_idx(path), expected) {
            (Ok(_), None) => Verdict::Invalid(
                "idx-gz: bytes that are not whole gzip members accepted",
                "the file is not a sequence of complete gzip members (trailing or cut bytes)"
                    .into(),
            ),
            (Ok(a), Some(e)) => match e {
                Ok(e) if e == a => check_idx(&a, Some(e)),
                _ => Verdict::Invalid(
                    "idx-gz: data differs from the payload of all members",
                    format!("read shape {:?}", a.shape),
                ),
            },
            (Err(err), Some(Ok(_))) => Verdict::Invalid(
                "idx-gz: valid multi-member stream rejected",
                err.to_string(),
            ),
            (Err(err), _) => Verdict::Rejected(err.to_string()),
        }
    },
};

/// The payload of `raw` if it consists of one or more complete gzip
/// members and nothing else.
fn gzip_members(mut raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut member = flate2::bufread::GzDecoder::new(raw);
        (&mut member).take(1 << 26).read_to_end(&mut out).ok()?;
        raw = member.into_inner();
    }
    Some(out)
}

fn check_idx(a: &IdxArray, direct: Option<IdxArray>) -> Verdict {
    let numel = a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if a.shape.is_empty() || numel != Some(a.data.len()) {
        return Verdict::Invalid(
            "idx: data length differs from the shape",
            format!("shape {:?}, {} bytes", a.shape, a.data.len()),
        );
    }
    if direct.as_ref() != Some(a) {
        return Verdict::Invalid("idx: file and in-memory parse disagree", String::new());
    }
    Verdict::Accepted
}

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A whole MNIST / Fashion-MNIST folder ([`mnist::load_dataset`]).
pub const MNIST: Target = Target {
    name: "mnist",
    about: "MNIST / Fashion-MNIST folders of four IDX files (data::mnist::load_dataset)",
    parts: &[
        Part {
            file: MNIST_FILES[0],
            kind: Kind::Binary,
        },
        Part {
            file: MNIST_FILES[1],
            kind: Kind::Binary,
        },
        Part {
            file: MNIST_FILES[2],
            kind: Kind::Binary,
        },
        Part {
            file: MNIST_FILES[3],
            kind: Kind::Binary,
        },
    ],
    dictionary: &[],
    timeout: FAST,
    slow: false,
    run: |s, input| {
        for (name, bytes) in MNIST_FILES.iter().zip(input) {
            s.write(&format!("mnist/{name}"), bytes);
        }
        Verdict::of(
            mnist::load_dataset(s.dir().join("mnist"), "mnist"),
            |(a, b)| match check_dataset(&a, 10) {
                Verdict::Accepted => check_dataset(&b, 10),
                v => v,
            },
        )
    },
};

/// Uses a loaded dataset as the trainer does and checks its invariants.
fn check_dataset(d: &ImageDataset, classes: usize) -> Verdict {
    if let Err(e) = d.validate() {
        return Verdict::Invalid("dataset: loaded but invalid", e.to_string());
    }
    let bytes = d.image_size().ok().and_then(|s| s.checked_mul(d.len()));
    if d.num_classes != classes || bytes != Some(d.images.len()) {
        return Verdict::Invalid(
            "dataset: sizes inconsistent",
            format!("{} classes, {} bytes", d.num_classes, d.images.len()),
        );
    }
    let _ = channel_stats(d);
    let _ = d.positives_per_class();
    Verdict::Accepted
}

/// One CIFAR-10 binary file ([`read_cifar10_file`]).
pub const CIFAR10: Target = Target {
    name: "cifar10",
    about: "CIFAR-10 binary batches (data::cifar::read_cifar10_file)",
    parts: &[Part {
        file: "data_batch_1.bin",
        kind: Kind::Binary,
    }],
    dictionary: &[],
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("data_batch_1.bin", &input[0]);
        Verdict::of(read_cifar10_file(path), |d| check_dataset(&d, 10))
    },
};

/// One CIFAR-100 binary file, fine and coarse labels ([`read_cifar100_file`]).
pub const CIFAR100: Target = Target {
    name: "cifar100",
    about: "CIFAR-100 binary files, fine and coarse labels (data::cifar::read_cifar100_file)",
    parts: &[Part {
        file: "train.bin",
        kind: Kind::Binary,
    }],
    dictionary: &[],
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("train.bin", &input[0]);
        let coarse = read_cifar100_file(&path, Cifar100Label::Coarse);
        Verdict::of(read_cifar100_file(&path, Cifar100Label::Fine), |d| {
            match (check_dataset(&d, 100), coarse) {
                (Verdict::Accepted, Ok(c)) => check_dataset(&c, 20),
                (Verdict::Accepted, Err(e)) => {
                    Verdict::Invalid("cifar100: fine labels read, coarse rejected", e.to_string())
                }
                (v, _) => v,
            }
        })
    },
};

/// Safetensors state dicts ([`load_state_dict`]), written back and applied
/// to a small module.
pub const SAFETENSORS: Target = Target {
    name: "safetensors",
    about: "safetensors state dicts (checkpoint::load_state_dict, apply_state_dict)",
    parts: &[Part {
        file: "model.safetensors",
        kind: Kind::Safetensors,
    }],
    dictionary: SAFETENSORS_TOKENS,
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("model.safetensors", &input[0]);
        Verdict::of(load_state_dict(path), |(tensors, meta)| {
            // Whatever is accepted is written back the same way and reads
            // back to the same bytes.
            let again = s.dir().join("again.safetensors");
            let first = save_state_dict(&again, &tensors, &meta)
                .map(|_| std::fs::read(&again).unwrap_or_default());
            let second = load_state_dict(&again).and_then(|(t, m)| {
                save_state_dict(&again, &t, &m)?;
                Ok(std::fs::read(&again).unwrap_or_default())
            });
            let _ = tiny::with_small_module(|m| apply_state_dict(m, &tensors, Strict::No));
            match (first, second) {
                (Ok(a), Ok(b)) if a == b => Verdict::Accepted,
                (Err(e), _) | (_, Err(e)) => Verdict::Invalid(
                    "safetensors: accepted but cannot be written back",
                    e.to_string(),
                ),
                _ => Verdict::Invalid("safetensors: written back differently twice", String::new()),
            }
        })
    },
};

/// Training checkpoints ([`read_training`]).
pub const CHECKPOINT: Target = Target {
    name: "checkpoint",
    about: "training checkpoints (checkpoint::read_training)",
    parts: &[Part {
        file: "checkpoint.safetensors",
        kind: Kind::Safetensors,
    }],
    dictionary: SAFETENSORS_TOKENS,
    timeout: FAST,
    slow: false,
    run: |s, input| {
        let path = s.write("checkpoint.safetensors", &input[0]);
        Verdict::of(read_training(path), |_| Verdict::Accepted)
    },
};

/// Resuming a run ([`Run::resume`]) from a checkpoint and log; the
/// stored data folder is the tiny MNIST of [`tiny::data_dir`].
pub const RESUME: Target = Target {
    name: "resume",
    about: "resuming a run from its checkpoint and log (train::Run::resume)",
    parts: &[
        Part {
            file: "checkpoint.safetensors",
            kind: Kind::Safetensors,
        },
        Part {
            file: "log.jsonl",
            kind: Kind::Text,
        },
    ],
    dictionary: SAFETENSORS_TOKENS,
    timeout: Duration::from_secs(60),
    slow: true,
    run: run_resume,
};

fn run_resume(s: &Scratch, input: &Input) -> Verdict {
    if let Err(e) = tiny::ensure_data_dir() {
        panic!("cannot write the tiny MNIST folder: {e}");
    }
    s.write("run/checkpoint.safetensors", &input[0]);
    s.write("run/log.jsonl", &input[1]);
    Verdict::of(Run::resume(s.dir().join("run")), |t| {
        let config = t.config();
        if let Err(e) = config.validate() {
            return Verdict::Invalid("resume: stored config invalid", e.to_string());
        }
        if t.epochs_done() > config.epochs {
            return Verdict::Invalid(
                "resume: epoch counter beyond the configured epochs",
                format!("{} of {} epochs", t.epochs_done(), config.epochs),
            );
        }
        Verdict::Accepted
    })
}
