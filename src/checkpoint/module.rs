//! Saving a [`Module`]'s state dict and loading one into it by name.

use super::format::{load_state_dict, save_state_dict};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{self, Module};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

/// A name present in both the module and the checkpoint whose shape or
/// dtype differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// State-dict name of the tensor.
    pub name: String,
    /// Shape of the module's tensor.
    pub module_shape: Vec<usize>,
    /// Dtype of the module's tensor.
    pub module_dtype: DType,
    /// Shape of the checkpoint's tensor.
    pub checkpoint_shape: Vec<usize>,
    /// Dtype of the checkpoint's tensor.
    pub checkpoint_dtype: DType,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (module {:?} {:?}, checkpoint {:?} {:?})",
            self.name,
            self.module_shape,
            self.module_dtype,
            self.checkpoint_shape,
            self.checkpoint_dtype
        )
    }
}

/// What a load did: the names it loaded and the ones it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module tensors that received the checkpoint's values (module order).
    pub loaded: Vec<String>,
    /// Module tensors the checkpoint does not have (module order).
    pub missing: Vec<String>,
    /// Checkpoint tensors the module does not have (checkpoint order).
    pub unexpected: Vec<String>,
    /// Names in both whose shape or dtype differs (not loaded).
    pub mismatched: Vec<Mismatch>,
}

impl LoadReport {
    /// True when every module tensor was loaded and nothing was left over.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// The problems, one clause each: `missing keys: [..]; unexpected keys:
    /// [..]; shape/dtype mismatches: name (module .., checkpoint ..)`.
    pub fn problems(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {:?}", self.missing));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys: {:?}", self.unexpected));
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self.mismatched.iter().map(|m| m.to_string()).collect();
            parts.push(format!("shape/dtype mismatches: {}", m.join(", ")));
        }
        parts.join("; ")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensor(s)", self.loaded.len())?;
        if !self.is_exact() {
            write!(f, "; {}", self.problems())?;
        }
        Ok(())
    }
}

/// Writes the state dict of `module` (parameters and buffers, PyTorch
/// names) to `path`; see [`save_state_dict`].
pub fn save_module(
    path: impl AsRef<Path>,
    module: &dyn Module,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_state_dict(path, &nn::state_dict(module), metadata)
}

/// Matches `tensors` against the module's state dict. Returns the report
/// and the `(destination, source)` pairs to copy.
pub(crate) fn plan<'a>(
    op: &'static str,
    module: &dyn Module,
    tensors: &'a [(String, Tensor)],
) -> Result<(LoadReport, Vec<(Tensor, &'a Tensor)>)> {
    let mut by_name: HashMap<&str, &Tensor> = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        if by_name.insert(name, t).is_some() {
            return Err(Error::invalid(
                op,
                format!("tensor name `{name}` appears twice"),
            ));
        }
    }
    let own = nn::state_dict(module);
    let mut report = LoadReport::default();
    let mut copies = Vec::new();
    let mut known = std::collections::HashSet::new();
    for (name, dst) in own {
        known.insert(name.clone());
        let Some(&src) = by_name.get(name.as_str()) else {
            report.missing.push(name);
            continue;
        };
        if src.shape() != dst.shape() || src.dtype() != dst.dtype() {
            report.mismatched.push(Mismatch {
                name,
                module_shape: dst.shape().to_vec(),
                module_dtype: dst.dtype(),
                checkpoint_shape: src.shape().to_vec(),
                checkpoint_dtype: src.dtype(),
            });
            continue;
        }
        if !dst.is_contiguous() {
            return Err(Error::invalid(
                op,
                format!("module tensor `{name}` is a non-contiguous view and cannot be assigned"),
            ));
        }
        report.loaded.push(name);
        copies.push((dst, src));
    }
    report.unexpected = tensors
        .iter()
        .filter(|(n, _)| !known.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    Ok((report, copies))
}

/// Copies the checked pairs, each source first moved to its destination's
/// device (a checkpoint read from a file loads into a model on a GPU).
/// Every upload is made before anything is written, so a failed upload
/// (out of device memory) leaves the module unchanged.
pub(crate) fn apply(copies: &[(Tensor, &Tensor)]) -> Result<()> {
    no_grad(|| {
        let sources = copies
            .iter()
            .map(|(dst, src)| src.to_device(dst.device()))
            .collect::<Result<Vec<_>>>()?;
        for ((dst, _), src) in copies.iter().zip(&sources) {
            dst.assign(src)?;
        }
        Ok(())
    })
}

/// Copies `tensors` into the module's parameters and buffers by name (the
/// module's existing tensors are overwritten in place, so optimizers that
/// hold them see the new values), on whichever device each module tensor
/// lives (sources are uploaded or downloaded as needed).
///
/// Every name, shape and dtype is checked before anything is written. With
/// `strict`, any missing key, unexpected key or mismatched shape/dtype is an
/// [`Error::InvalidArgument`] that lists them by name (with both shapes) and
/// nothing is changed. Without `strict`, the tensors whose name, shape and
/// dtype match are loaded and the rest is reported in the [`LoadReport`]
/// (unlike PyTorch, which raises on a shape mismatch even when not strict).
/// Dtypes are never converted.
pub fn apply_state_dict(
    module: &dyn Module,
    tensors: &[(String, Tensor)],
    strict: bool,
) -> Result<LoadReport> {
    load_checked("apply_state_dict", None, module, tensors, strict)
}

fn load_checked(
    op: &'static str,
    path: Option<&str>,
    module: &dyn Module,
    tensors: &[(String, Tensor)],
    strict: bool,
) -> Result<LoadReport> {
    let (report, copies) = plan(op, module, tensors)?;
    if strict && !report.is_exact() {
        let at = path.map(|p| format!("{p}: ")).unwrap_or_default();
        return Err(Error::invalid(
            op,
            format!(
                "{at}state dict does not match the module, nothing was loaded: {}",
                report.problems()
            ),
        ));
    }
    apply(&copies)?;
    Ok(report)
}

/// Loads the safetensors file at `path` into `module` by name; see
/// [`apply_state_dict`] for `strict` and [`load_state_dict`] for the file
/// errors. Errors name the file.
pub fn load_into_module(
    path: impl AsRef<Path>,
    module: &dyn Module,
    strict: bool,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let (tensors, _) = load_state_dict(path)?;
    load_checked(
        "load_into_module",
        Some(&path.display().to_string()),
        module,
        &tensors,
        strict,
    )
}
