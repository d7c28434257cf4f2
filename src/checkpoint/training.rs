//! Training checkpoints: model, optimizer state, epoch and user metadata in
//! one safetensors file, so that a run can stop and resume bit-identically.
//!
//! Layout (tensor names follow PyTorch's `{"model": ..., "optimizer": ...}`
//! checkpoint dicts, flattened):
//!
//! | key | content |
//! |---|---|
//! | `model.<state_dict name>` | every parameter and buffer of the model |
//! | `optimizer.state.<i>.momentum_buffer` | SGD momentum of parameter `i` |
//! | `optimizer.state.<i>.exp_avg`, `.exp_avg_sq` | Adam moments of parameter `i` |
//! | `optimizer.state.<i>.step` | Adam step count of parameter `i` (I64, 0-d) |
//!
//! `i` is the parameter's position in the optimizer's groups, counted across
//! groups (PyTorch's numbering). A parameter without state (no gradient
//! yet, or SGD without momentum) has no key. The file's metadata holds
//! `ferrite.checkpoint = "training"`, `ferrite.checkpoint_version = "1"`,
//! `ferrite.epoch`, `ferrite.optimizer` (`"sgd"` or `"adam"`),
//! `ferrite.optimizer.steps`, `ferrite.optimizer.num_params`, and the
//! caller's own entries (any key not starting with `ferrite.`).

use super::format::{load_state_dict, save_state_dict};
use super::module::{apply, plan};
use super::options::LoadOptions;
use crate::error::{Error, Result};
use crate::nn::{self, Module};
use crate::optim::{Adam, Optimizer, Sgd};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

const RESERVED: &str = "ferrite.";
const KIND: &str = "ferrite.checkpoint";
const VERSION: &str = "ferrite.checkpoint_version";
const EPOCH: &str = "ferrite.epoch";
const OPTIMIZER: &str = "ferrite.optimizer";
const STEPS: &str = "ferrite.optimizer.steps";
const NUM_PARAMS: &str = "ferrite.optimizer.num_params";
const MODEL_PREFIX: &str = "model.";
const STATE_PREFIX: &str = "optimizer.state.";
/// Most parameter tensors a training checkpoint's optimizer may have.
const MAX_PARAMS: usize = 1 << 20;

/// A snapshot of an optimizer's per-parameter state, in the optimizer's
/// parameter order (across groups).
#[derive(Clone, Debug)]
pub enum OptimizerState {
    /// [`Sgd`]: one momentum buffer per parameter (`None` before its first
    /// update, or always without momentum) and the step count.
    Sgd {
        /// Momentum buffer of each parameter, shaped like the parameter.
        buffers: Vec<Option<Tensor>>,
        /// Number of optimizer steps taken.
        steps: u64,
    },
    /// [`Adam`] / AdamW: first and second moments and the per-parameter
    /// step count (`None` before the parameter's first update), and the
    /// optimizer's step count.
    Adam {
        /// Per parameter: `(exp_avg, exp_avg_sq, step)`, the first and
        /// second moments (shaped like the parameter) and its update count.
        moments: Vec<Option<(Tensor, Tensor, u64)>>,
        /// Number of optimizer steps taken.
        steps: u64,
    },
}

/// A copy with its own storage, so that a snapshot does not change when
/// training goes on (optimizers update their state in place).
fn snapshot(t: &Tensor) -> Result<Tensor> {
    t.detach().contiguous_copy()
}

/// A copy of `t` with its own storage on the device of `param` (state read
/// from a file or saved on another device is restored next to its
/// parameter).
fn snapshot_for(t: &Tensor, param: &Tensor) -> Result<Tensor> {
    if t.device() == param.device() {
        snapshot(t)
    } else {
        t.detach().to_device(param.device())
    }
}

fn restore_error(msg: String) -> Error {
    Error::invalid("OptimizerState::restore", msg)
}

/// Checks `state` against `params` (shape and dtype).
fn check_state_tensor(what: &str, i: usize, p: &Tensor, s: &Tensor) -> Result<()> {
    if s.shape() != p.shape() || s.dtype() != p.dtype() {
        return Err(restore_error(format!(
            "{what} of parameter {i} is {:?} {:?}, the parameter is {:?} {:?}",
            s.shape(),
            s.dtype(),
            p.shape(),
            p.dtype()
        )));
    }
    Ok(())
}

fn flat_params(opt: &dyn Optimizer) -> Vec<Tensor> {
    opt.groups()
        .iter()
        .flat_map(|g| g.params.iter().cloned())
        .collect()
}

impl OptimizerState {
    /// `"sgd"` or `"adam"`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerState::Sgd { .. } => "sgd",
            OptimizerState::Adam { .. } => "adam",
        }
    }

    /// The optimizer's step count.
    pub fn steps(&self) -> u64 {
        match self {
            OptimizerState::Sgd { steps, .. } | OptimizerState::Adam { steps, .. } => *steps,
        }
    }

    /// Number of parameters the state covers.
    pub fn num_params(&self) -> usize {
        match self {
            OptimizerState::Sgd { buffers, .. } => buffers.len(),
            OptimizerState::Adam { moments, .. } => moments.len(),
        }
    }

    /// A snapshot (copied) of `opt`'s momentum buffers and step count.
    pub fn from_sgd(opt: &Sgd) -> Result<Self> {
        let buffers = opt
            .momentum_buffers()
            .iter()
            .map(|b| b.as_ref().map(snapshot).transpose())
            .collect::<Result<_>>()?;
        Ok(OptimizerState::Sgd {
            buffers,
            steps: opt.steps(),
        })
    }

    /// A snapshot (copied) of `opt`'s moments and step counts.
    pub fn from_adam(opt: &Adam) -> Result<Self> {
        let moments = opt
            .moments()
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|(m, v, k)| Ok((snapshot(m)?, snapshot(v)?, *k)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(OptimizerState::Adam {
            moments,
            steps: opt.steps(),
        })
    }

    /// Restores this state (copied) into `opt`; checks the kind, the
    /// parameter count and each tensor's shape and dtype first, and changes
    /// nothing on error.
    pub fn restore_sgd(&self, opt: &mut Sgd) -> Result<()> {
        let OptimizerState::Sgd { buffers, steps } = self else {
            return Err(restore_error(format!(
                "the state is {} state, the optimizer is SGD",
                self.kind()
            )));
        };
        let params = flat_params(opt);
        if params.len() != buffers.len() {
            return Err(restore_error(format!(
                "state for {} parameters, the optimizer has {}",
                buffers.len(),
                params.len()
            )));
        }
        let mut copies = Vec::with_capacity(buffers.len());
        for (i, (b, p)) in buffers.iter().zip(&params).enumerate() {
            if let Some(b) = b {
                check_state_tensor("momentum buffer", i, p, b)?;
            }
            copies.push(b.as_ref().map(|b| snapshot_for(b, p)).transpose()?);
        }
        opt.load_state(copies, *steps)
    }

    /// Restores this state (copied) into `opt`; checks the kind, the
    /// parameter count and each tensor's shape and dtype first, and changes
    /// nothing on error.
    pub fn restore_adam(&self, opt: &mut Adam) -> Result<()> {
        let OptimizerState::Adam { moments, steps } = self else {
            return Err(restore_error(format!(
                "the state is {} state, the optimizer is Adam",
                self.kind()
            )));
        };
        let params = flat_params(opt);
        if params.len() != moments.len() {
            return Err(restore_error(format!(
                "state for {} parameters, the optimizer has {}",
                moments.len(),
                params.len()
            )));
        }
        let mut copies = Vec::with_capacity(moments.len());
        for (i, (s, p)) in moments.iter().zip(&params).enumerate() {
            copies.push(match s {
                Some((m, v, k)) => {
                    check_state_tensor("exp_avg", i, p, m)?;
                    check_state_tensor("exp_avg_sq", i, p, v)?;
                    Some((snapshot_for(m, p)?, snapshot_for(v, p)?, *k))
                }
                None => None,
            });
        }
        opt.load_state(copies, *steps)
    }

    /// The `optimizer.state.<i>.<field>` tensors of this state.
    fn to_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        match self {
            OptimizerState::Sgd { buffers, .. } => {
                for (i, b) in buffers.iter().enumerate() {
                    if let Some(b) = b {
                        out.push((format!("{STATE_PREFIX}{i}.momentum_buffer"), b.clone()));
                    }
                }
            }
            OptimizerState::Adam { moments, .. } => {
                for (i, s) in moments.iter().enumerate() {
                    if let Some((m, v, k)) = s {
                        out.push((format!("{STATE_PREFIX}{i}.exp_avg"), m.clone()));
                        out.push((format!("{STATE_PREFIX}{i}.exp_avg_sq"), v.clone()));
                        let k = i64::try_from(*k).unwrap_or(i64::MAX);
                        out.push((format!("{STATE_PREFIX}{i}.step"), Tensor::scalar(k)));
                    }
                }
            }
        }
        out
    }
}

/// Optimizers whose state a training checkpoint can hold.
pub trait CheckpointOptimizer {
    /// A snapshot of the state (see [`OptimizerState::from_sgd`]).
    fn checkpoint_state(&self) -> Result<OptimizerState>;
    /// Restores a snapshot; changes nothing on error.
    fn restore_checkpoint_state(&mut self, state: &OptimizerState) -> Result<()>;
}

impl CheckpointOptimizer for Sgd {
    fn checkpoint_state(&self) -> Result<OptimizerState> {
        OptimizerState::from_sgd(self)
    }
    fn restore_checkpoint_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.restore_sgd(self)
    }
}

impl CheckpointOptimizer for Adam {
    fn checkpoint_state(&self) -> Result<OptimizerState> {
        OptimizerState::from_adam(self)
    }
    fn restore_checkpoint_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.restore_adam(self)
    }
}

/// The contents of a training checkpoint.
#[derive(Clone, Debug)]
pub struct TrainingCheckpoint {
    /// The model's state dict (names without the `model.` prefix).
    pub model: Vec<(String, Tensor)>,
    /// The optimizer's state.
    pub optimizer: OptimizerState,
    /// The epoch counter given to [`save_training`].
    pub epoch: u64,
    /// The caller's metadata (the `extra` given to [`save_training`]).
    pub metadata: BTreeMap<String, String>,
}

/// Writes a training checkpoint (see the module docs for the layout):
/// the state dict of `module`, `optimizer` (e.g. from
/// [`CheckpointOptimizer::checkpoint_state`]), `epoch` and the caller's
/// `extra` metadata (e.g. a JSON string with the RNG seed), atomically.
/// Keys of `extra` must not start with `ferrite.`.
pub fn save_training(
    path: impl AsRef<Path>,
    module: &dyn Module,
    optimizer: &OptimizerState,
    epoch: u64,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    if let Some(k) = extra.keys().find(|k| k.starts_with(RESERVED)) {
        return Err(Error::invalid(
            "save_training",
            format!(
                "{}: metadata key `{k}` uses the reserved prefix `{RESERVED}`",
                path.display()
            ),
        ));
    }
    let mut tensors: Vec<(String, Tensor)> = nn::state_dict(module)
        .into_iter()
        .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t))
        .collect();
    tensors.extend(optimizer.to_tensors());
    let mut metadata = extra.clone();
    for (k, v) in [
        (KIND, "training".to_string()),
        (VERSION, "1".to_string()),
        (EPOCH, epoch.to_string()),
        (OPTIMIZER, optimizer.kind().to_string()),
        (STEPS, optimizer.steps().to_string()),
        (NUM_PARAMS, optimizer.num_params().to_string()),
    ] {
        metadata.insert(k.to_string(), v);
    }
    save_state_dict(path, &tensors, &metadata)
}

/// Reads a training checkpoint without applying it to anything. Errors are
/// [`Error::Io`] or [`Error::CorruptFile`] naming the file (also for a
/// safetensors file that is not a ferrite training checkpoint or whose
/// optimizer entries are inconsistent).
pub fn read_training(path: impl AsRef<Path>) -> Result<TrainingCheckpoint> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let corrupt = |msg: String| Error::CorruptFile {
        path: shown.clone(),
        msg,
    };
    let (tensors, mut metadata) = load_state_dict(path)?;
    if metadata.get(KIND).map(String::as_str) != Some("training") {
        return Err(corrupt(format!(
            "not a ferrite training checkpoint (no `{KIND}: training` metadata)"
        )));
    }
    if metadata.get(VERSION).map(String::as_str) != Some("1") {
        return Err(corrupt(format!(
            "unsupported training checkpoint version {:?}",
            metadata.get(VERSION)
        )));
    }
    let number = |key: &str| -> Result<u64> {
        let v = metadata
            .get(key)
            .ok_or_else(|| corrupt(format!("metadata `{key}` is missing")))?;
        v.parse::<u64>()
            .map_err(|_| corrupt(format!("metadata `{key}` = {v:?} is not a count")))
    };
    let epoch = number(EPOCH)?;
    let steps = number(STEPS)?;
    // The count sizes a vector before any optimizer is seen: bound it, so a
    // corrupt count cannot exhaust memory.
    let num_params = usize::try_from(number(NUM_PARAMS)?)
        .ok()
        .filter(|&n| n <= MAX_PARAMS)
        .ok_or_else(|| {
            corrupt(format!(
                "metadata `{NUM_PARAMS}` is larger than {MAX_PARAMS} parameter tensors"
            ))
        })?;
    let kind = metadata.get(OPTIMIZER).cloned().unwrap_or_default();
    if kind != "sgd" && kind != "adam" {
        return Err(corrupt(format!(
            "metadata `{OPTIMIZER}` = {kind:?}: expected \"sgd\" or \"adam\""
        )));
    }

    let mut model = Vec::new();
    // Per parameter index: field name → tensor.
    let mut state: BTreeMap<usize, BTreeMap<String, Tensor>> = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix(MODEL_PREFIX) {
            model.push((n.to_string(), t));
            continue;
        }
        let parsed = name.strip_prefix(STATE_PREFIX).and_then(|rest| {
            let (i, field) = rest.split_once('.')?;
            let idx = i.parse::<usize>().ok().filter(|v| v.to_string() == i)?;
            Some((idx, field.to_string()))
        });
        let Some((i, field)) = parsed else {
            return Err(corrupt(format!(
                "unexpected tensor `{name}` in a training checkpoint"
            )));
        };
        if i >= num_params {
            return Err(corrupt(format!(
                "tensor `{name}`: parameter index {i} out of range for {num_params} parameters"
            )));
        }
        state.entry(i).or_default().insert(field, t);
    }

    let optimizer = if kind == "sgd" {
        let mut buffers = vec![None; num_params];
        for (i, mut fields) in state {
            let b = fields.remove("momentum_buffer");
            if let Some(extra) = fields.keys().next() {
                return Err(corrupt(format!(
                    "unexpected SGD state `{STATE_PREFIX}{i}.{extra}`"
                )));
            }
            let b = b.ok_or_else(|| corrupt(format!("parameter {i}: no momentum_buffer")))?;
            if !b.dtype().is_float() {
                return Err(corrupt(format!(
                    "`{STATE_PREFIX}{i}.momentum_buffer` has dtype {:?}",
                    b.dtype()
                )));
            }
            buffers[i] = Some(b);
        }
        OptimizerState::Sgd { buffers, steps }
    } else {
        let mut moments = vec![None; num_params];
        for (i, mut fields) in state {
            let m = fields.remove("exp_avg");
            let v = fields.remove("exp_avg_sq");
            let k = fields.remove("step");
            if let Some(extra) = fields.keys().next() {
                return Err(corrupt(format!(
                    "unexpected Adam state `{STATE_PREFIX}{i}.{extra}`"
                )));
            }
            let (Some(m), Some(v), Some(k)) = (m, v, k) else {
                return Err(corrupt(format!(
                    "parameter {i}: Adam state needs exp_avg, exp_avg_sq and step together"
                )));
            };
            if !m.dtype().is_float() || !v.dtype().is_float() {
                return Err(corrupt(format!(
                    "parameter {i}: Adam moments have dtypes {:?} and {:?}",
                    m.dtype(),
                    v.dtype()
                )));
            }
            let step = if k.dtype() == DType::I64 && k.ndim() == 0 {
                k.to_scalar::<i64>()
                    .ok()
                    .and_then(|s| u64::try_from(s).ok())
            } else {
                None
            };
            let step = step.ok_or_else(|| {
                corrupt(format!(
                    "`{STATE_PREFIX}{i}.step` must be a non-negative I64 scalar, got {:?} {:?}",
                    k.shape(),
                    k.dtype()
                ))
            })?;
            moments[i] = Some((m, v, step));
        }
        OptimizerState::Adam { moments, steps }
    };
    metadata.retain(|k, _| !k.starts_with(RESERVED));
    Ok(TrainingCheckpoint {
        model,
        optimizer,
        epoch,
        metadata,
    })
}

/// Reads the training checkpoint at `path` and restores it: the model's
/// parameters and buffers (strictly: every name, shape and dtype must
/// match) and the optimizer's state. Everything is checked before anything
/// changes, so on error neither the module nor the optimizer is modified.
/// Returns the checkpoint (for its `epoch` and `metadata`).
pub fn load_training(
    path: impl AsRef<Path>,
    module: &dyn Module,
    optimizer: &mut dyn CheckpointOptimizer,
) -> Result<TrainingCheckpoint> {
    let path = path.as_ref();
    let ckpt = read_training(path)?;
    restore_training(&ckpt, path, module, optimizer)?;
    Ok(ckpt)
}

/// [`load_training`] for a checkpoint already read with [`read_training`]
/// (e.g. to build the module from its metadata first); `path` names the
/// file in errors.
pub fn restore_training(
    ckpt: &TrainingCheckpoint,
    path: &Path,
    module: &dyn Module,
    optimizer: &mut dyn CheckpointOptimizer,
) -> Result<()> {
    let shown = path.display().to_string();
    // Exact, whatever the file: resuming must be bit-identical.
    let plan = plan("load_training", module, &ckpt.model, &LoadOptions::strict())?;
    if !plan.report.is_exact() {
        return Err(Error::invalid(
            "load_training",
            format!(
                "{shown}: model state does not match the module, nothing was loaded: {}",
                plan.summary()
            ),
        ));
    }
    optimizer
        .restore_checkpoint_state(&ckpt.optimizer)
        .map_err(|e| {
            Error::invalid(
                "load_training",
                format!(
                    "{shown}: optimizer state does not fit the optimizer, nothing was loaded: {e}"
                ),
            )
        })?;
    apply(&plan.copies)
}
