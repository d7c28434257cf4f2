//! Reading and writing safetensors files.
//!
//! Layout of a file: 8 bytes (little-endian u64) giving the header length
//! `n`, then `n` bytes of JSON (`{"name": {"dtype": "F32", "shape": [..],
//! "data_offsets": [begin, end]}, ..., "__metadata__": {string: string}}`,
//! padded with spaces to a multiple of 8), then the tensor bytes,
//! little-endian, row-major, at the given offsets relative to the end of
//! the header. The `safetensors` crate validates headers on reading and
//! encodes them on writing; the tensor bytes are streamed here one tensor at
//! a time, so writing never holds a second copy of the whole model.

use super::atomic::write_atomic;
use super::StateDict;
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

/// The largest header safetensors readers accept (100 MB).
const MAX_HEADER: usize = 100_000_000;

/// The safetensors dtype that stores `dtype`.
pub(crate) fn to_safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::I64 => Dtype::I64,
        DType::U8 => Dtype::U8,
    }
}

/// The ferrite dtype for a safetensors dtype, if ferrite has one.
pub(crate) fn from_safetensors_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

/// Little-endian encoding of one element.
trait LeBytes: Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le_bytes!(f32, f64, bf16, f16, i64, u8);

/// Writes `values` little-endian, in chunks (one bounded buffer).
fn write_le<T: LeBytes>(w: &mut dyn Write, values: &[T]) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 14;
    let mut buf = Vec::with_capacity(CHUNK.min(values.len()) * T::SIZE);
    for chunk in values.chunks(CHUNK) {
        buf.clear();
        for &v in chunk {
            v.put(&mut buf);
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

fn read_le<T: LeBytes>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::get).collect()
}

/// Writes the elements of `t` in row-major order (downloading a device
/// tensor's elements, and copying a non-contiguous view, first).
fn write_tensor(w: &mut dyn Write, t: &Tensor) -> Result<std::io::Result<()>> {
    let c = t
        .detach()
        .to_device(crate::tensor::Device::Cpu)?
        .contiguous()?;
    let span = c.layout().offset()..c.layout().offset() + c.numel();
    let storage = c.cpu_storage("checkpoint save")?;
    Ok(crate::tensor::with_storage!(
        &*storage,
        |v: T| write_le::<T>(w, &v[span])
    ))
}

fn corrupt(path: &str, msg: impl Into<String>) -> Error {
    Error::CorruptFile {
        path: path.to_string(),
        msg: msg.into(),
    }
}

/// The header JSON as the safetensors libraries write it (compact,
/// `__metadata__` first, then the tensors in data order), padded with spaces
/// to a multiple of 8 bytes. The metadata keys are sorted, so that the same
/// contents always give the same bytes (the libraries write them in hash
/// order).
fn encode_header(
    infos: &[(String, TensorInfo)],
    metadata: &BTreeMap<String, String>,
) -> serde_json::Result<Vec<u8>> {
    let mut h = Vec::from(&b"{"[..]);
    if !metadata.is_empty() {
        h.extend_from_slice(b"\"__metadata__\":");
        serde_json::to_writer(&mut h, metadata)?;
    }
    for (i, (name, info)) in infos.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            h.push(b',');
        }
        serde_json::to_writer(&mut h, name)?;
        h.push(b':');
        serde_json::to_writer(&mut h, info)?;
    }
    h.push(b'}');
    h.resize(h.len().next_multiple_of(8), b' ');
    Ok(h)
}

/// Writes `tensors` (PyTorch `state_dict` names) and `metadata` (the
/// file's `__metadata__`) to `path` as a safetensors file, atomically (see
/// [`write_atomic`](super::write_atomic)).
///
/// Each dtype maps to the safetensors dtype of the same name (`F32`, `F64`,
/// `BF16`, `F16`, `I64`, `U8`); non-contiguous views are written in
/// row-major order. Tensors are laid out as the `safetensors` libraries do
/// (by decreasing alignment, then by name), so every tensor starts at an
/// offset aligned to its element size, and the same contents always give
/// the same bytes. Names must be distinct and must not be `__metadata__`.
///
/// ```
/// use ferrite::checkpoint::{load_state_dict, save_state_dict};
/// use ferrite::Tensor;
/// use std::collections::BTreeMap;
/// let path = std::env::temp_dir().join(format!("ferrite-doc-sd-{}.safetensors", std::process::id()));
/// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
/// let meta = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
/// save_state_dict(&path, &[("fc.weight".to_string(), w)], &meta)?;
/// let (tensors, metadata) = load_state_dict(&path)?;
/// std::fs::remove_file(&path).ok();
/// assert_eq!(tensors[0].0, "fc.weight");
/// assert_eq!(tensors[0].1.to_vec::<f32>()?, [1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(metadata["epoch"], "3");
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn save_state_dict(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let invalid = |msg: String| Error::invalid("save_state_dict", format!("{shown}: {msg}"));

    let mut seen = HashSet::new();
    for (name, _) in tensors {
        if name == "__metadata__" {
            return Err(invalid(
                "`__metadata__` is reserved and cannot name a tensor".into(),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(invalid(format!("tensor name `{name}` appears twice")));
        }
    }

    // Order and offsets as the safetensors libraries write them.
    let mut order: Vec<(&str, &Tensor, Dtype)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t, to_safetensors_dtype(t.dtype())))
        .collect();
    order.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0usize;
    for &(name, t, dtype) in &order {
        let end = t
            .numel()
            .checked_mul(t.dtype().size_in_bytes())
            .and_then(|b| b.checked_add(offset))
            .ok_or_else(|| invalid(format!("tensor `{name}` is too large")))?;
        infos.push((
            name.to_string(),
            TensorInfo {
                dtype,
                shape: t.shape().to_vec(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let header = encode_header(&infos, metadata).map_err(|e| invalid(format!("header: {e}")))?;
    if header.len() > MAX_HEADER {
        return Err(invalid(format!(
            "header of {} bytes exceeds the {MAX_HEADER} bytes safetensors readers accept",
            header.len()
        )));
    }
    // The safetensors crate checks the offsets and sizes once more.
    Metadata::new(None, infos).map_err(|e| invalid(format!("header: {e}")))?;

    write_atomic(path, |w| {
        let io = |e: std::io::Error| Error::Io {
            path: shown.clone(),
            source: std::io::Error::new(e.kind(), format!("writing checkpoint data: {e}")),
        };
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        for &(_, t, _) in &order {
            write_tensor(w, t)?.map_err(io)?;
        }
        Ok(())
    })
}

/// Reads every tensor of the safetensors file at `path`, in file order,
/// with the file's `__metadata__` (empty when it has none).
///
/// Errors: [`Error::Io`] when the file cannot be read, and
/// [`Error::CorruptFile`] naming the file and the problem for anything that
/// is not a well-formed safetensors file (truncated, header length beyond
/// the end of the file, invalid JSON, offsets out of range or overlapping,
/// trailing bytes) or holds a dtype that ferrite has no type for (e.g.
/// `I32`, `BOOL`). No byte content makes it panic.
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<(StateDict, BTreeMap<String, String>)> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes = crate::data::read::read_file(path)?;
    parse(&bytes, &shown)
}

/// Parses the bytes of a safetensors file; `path` is used in errors.
pub(crate) fn parse(bytes: &[u8], path: &str) -> Result<(StateDict, BTreeMap<String, String>)> {
    let len = bytes.len();
    let Some(prefix) = bytes.get(..8) else {
        return Err(corrupt(
            path,
            format!("truncated safetensors file: {len} bytes, less than the 8-byte header length"),
        ));
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(prefix);
    let n = u64::from_le_bytes(n);
    if n > (len - 8) as u64 {
        return Err(corrupt(
            path,
            format!(
                "corrupt safetensors header: header length {n} is larger than the {} bytes \
                 after it (truncated or not a safetensors file)",
                len - 8
            ),
        ));
    }
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        corrupt(
            path,
            format!("corrupt safetensors file ({len} bytes, header {n} bytes): {e}"),
        )
    })?;
    let data = bytes.get(8 + n..).unwrap_or_default();

    let mut out = Vec::new();
    for name in meta.offset_keys() {
        let Some(info) = meta.info(&name) else {
            return Err(corrupt(path, format!("tensor `{name}` has no entry")));
        };
        let Some(dtype) = from_safetensors_dtype(info.dtype) else {
            return Err(corrupt(
                path,
                format!(
                    "tensor `{name}` has dtype {}, which ferrite cannot hold \
                     (supported: F32, F64, BF16, F16, I64, U8)",
                    info.dtype
                ),
            ));
        };
        let (begin, end) = info.data_offsets;
        let raw = data.get(begin..end).ok_or_else(|| {
            corrupt(
                path,
                format!("tensor `{name}`: data offsets [{begin}, {end}) out of range"),
            )
        })?;
        // Strides are products of the dimensions, so the non-zero ones must
        // multiply without overflow even when another one is 0.
        let numel = checked_numel("load_state_dict", &info.shape).map_err(|_| {
            corrupt(
                path,
                format!(
                    "tensor `{name}`: shape {:?} is too large (its non-zero dimensions \
                     multiply past the addressable element count)",
                    info.shape
                ),
            )
        })?;
        if numel.checked_mul(dtype.size_in_bytes()) != Some(raw.len()) {
            return Err(corrupt(
                path,
                format!(
                    "tensor `{name}`: {} bytes do not hold shape {:?} of {dtype:?}",
                    raw.len(),
                    info.shape
                ),
            ));
        }
        let t = match dtype {
            DType::F32 => Tensor::from_vec(read_le::<f32>(raw), &info.shape),
            DType::F64 => Tensor::from_vec(read_le::<f64>(raw), &info.shape),
            DType::BF16 => Tensor::from_vec(read_le::<bf16>(raw), &info.shape),
            DType::F16 => Tensor::from_vec(read_le::<f16>(raw), &info.shape),
            DType::I64 => Tensor::from_vec(read_le::<i64>(raw), &info.shape),
            DType::U8 => Tensor::from_vec(raw.to_vec(), &info.shape),
        }
        .map_err(|e| corrupt(path, format!("tensor `{name}`: {e}")))?;
        out.push((name, t));
    }
    let metadata = meta
        .metadata()
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((out, metadata))
}
