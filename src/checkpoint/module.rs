//! Saving a [`Module`]'s state dict and loading one into it by name.

use super::format::{load_state_dict, save_state_dict};
use super::options::{is_num_batches_tracked, rename, LoadOptions, Strict};
use super::report::{summary, Conversion, KeyShapes, LoadReport, Mismatch};
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::nn::{self, Module};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Writes the state dict of `module` (parameters and buffers, PyTorch
/// names) to `path`; see [`save_state_dict`].
///
/// ```
/// use ferrite::checkpoint::{load_into_module, save_module, Strict};
/// use ferrite::nn::{Bias, Linear};
/// use ferrite::rand::{rngs::StdRng, SeedableRng};
/// let path = std::env::temp_dir().join(format!("ferrite-doc-mod-{}.safetensors", std::process::id()));
/// let trained = Linear::new(3, 2, Bias::Yes, &mut StdRng::seed_from_u64(1))?;
/// save_module(&path, &trained, &Default::default())?;
/// let fresh = Linear::new(3, 2, Bias::Yes, &mut StdRng::seed_from_u64(2))?;
/// let report = load_into_module(&path, &fresh, Strict::Yes)?;
/// std::fs::remove_file(&path).ok();
/// assert_eq!(report.loaded.len(), 2);
/// assert_eq!(fresh.weight.to_vec::<f32>()?, trained.weight.to_vec::<f32>()?);
/// # Ok::<(), ferrite::Error>(())
/// ```
pub fn save_module(
    path: impl AsRef<Path>,
    module: &dyn Module,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_state_dict(path, &nn::state_dict(module), metadata)
}

/// A checked load: what it will do, and the `(destination, source)` pairs
/// to copy (a source of another floating dtype is converted by [`apply`]).
pub(crate) struct Plan<'a> {
    /// The report of the load.
    pub report: LoadReport,
    /// Module tensor and the checkpoint tensor that goes into it.
    pub copies: Vec<(Tensor, &'a Tensor)>,
    /// Shapes of the missing and unexpected keys, for error messages.
    pub shapes: KeyShapes,
}

impl Plan<'_> {
    /// The report's problems with the shapes of missing and unexpected
    /// keys, then its hints: one short paragraph.
    pub fn summary(&self) -> String {
        let mut s = summary(&self.report, Some(&self.shapes));
        for h in &self.report.hints {
            s.push_str("; hint: ");
            s.push_str(h);
        }
        s
    }
}

/// Matches `tensors` against the module's state dict under `opts` (its
/// prefixes, conversions and tolerated keys; not `strict`, which the
/// caller applies to the report). Fails only on names that collide (twice
/// in `tensors`, or after renaming) and on non-contiguous module tensors.
pub(crate) fn plan<'a>(
    op: &'static str,
    module: &dyn Module,
    tensors: &'a [(String, Tensor)],
    opts: &LoadOptions,
) -> Result<Plan<'a>> {
    let mut by_name: HashMap<String, usize> = HashMap::with_capacity(tensors.len());
    for (i, (name, _)) in tensors.iter().enumerate() {
        let renamed = opts.rename(name);
        if let Some(j) = by_name.insert(renamed.clone(), i) {
            let first = &tensors[j].0;
            let msg = if first == name {
                format!("tensor name `{name}` appears twice")
            } else {
                format!(
                    "tensors `{first}` and `{name}` both become `{renamed}` after \
                     strip_prefix/add_prefix"
                )
            };
            return Err(Error::invalid(op, msg));
        }
    }
    let mut report = LoadReport::default();
    let mut shapes = KeyShapes {
        missing: Vec::new(),
        unexpected: Vec::new(),
    };
    let mut copies = Vec::new();
    let mut used = vec![false; tensors.len()];
    for (name, dst) in nn::state_dict(module) {
        let Some(&i) = by_name.get(&name) else {
            if opts.allow_missing_num_batches_tracked && is_num_batches_tracked(&name) {
                report.tolerated_missing.push(name);
            } else {
                shapes.missing.push((dst.shape().to_vec(), dst.dtype()));
                report.missing.push(name);
            }
            continue;
        };
        used[i] = true;
        let src = &tensors[i].1;
        let (from, to) = (src.dtype(), dst.dtype());
        let converts = from != to && opts.convert_dtypes && from.is_float() && to.is_float();
        if src.shape() != dst.shape() || (from != to && !converts) {
            report.mismatched.push(Mismatch {
                name,
                module_shape: dst.shape().to_vec(),
                module_dtype: to,
                checkpoint_shape: src.shape().to_vec(),
                checkpoint_dtype: from,
            });
            continue;
        }
        if !dst.is_contiguous() {
            return Err(Error::invalid(
                op,
                format!("module tensor `{name}` is a non-contiguous view and cannot be assigned"),
            ));
        }
        if converts {
            report.converted.push(Conversion {
                name: name.clone(),
                from,
                to,
            });
        }
        report.loaded.push(name);
        copies.push((dst, src));
    }
    for ((name, t), used) in tensors.iter().zip(used) {
        if !used {
            report.unexpected.push(name.clone());
            shapes.unexpected.push((t.shape().to_vec(), t.dtype()));
        }
    }
    Ok(Plan {
        report,
        copies,
        shapes,
    })
}

/// The first dotted component shared by every name (`module.`), if any.
fn common_prefix<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let first = names.next()?;
    let prefix = &first[..first.find('.')? + 1];
    names.all(|n| n.starts_with(prefix)).then_some(prefix)
}

/// Suggestions for a load that left keys unused: a prefix option that makes
/// more keys match than `opts` did (a common first component of the
/// checkpoint's keys to strip, of the module's to add, or no prefix at all),
/// a `strip_prefix` that no key has, and mismatches or missing keys that
/// the lenient options would resolve.
fn hints(report: &LoadReport, tensors: &[(String, Tensor)], opts: &LoadOptions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = opts.strip_prefix.as_deref() {
        if !p.is_empty() && !tensors.iter().any(|(n, _)| n.starts_with(p)) {
            out.push(format!("no checkpoint key starts with strip_prefix `{p}`"));
        }
    }
    if report.is_complete() {
        return out;
    }
    let module: HashSet<&str> = report
        .loaded
        .iter()
        .chain(&report.missing)
        .chain(&report.tolerated_missing)
        .chain(report.mismatched.iter().map(|m| &m.name))
        .map(String::as_str)
        .collect();
    let matched = report.loaded.len() + report.mismatched.len();
    let strip = common_prefix(tensors.iter().map(|(n, _)| n.as_str()));
    let add = common_prefix(module.iter().copied());
    let mut best: Option<(usize, Option<&str>, Option<&str>)> = None;
    for s in [None, strip] {
        for a in [None, add] {
            let n = tensors
                .iter()
                .filter(|(k, _)| module.contains(rename(k, s, a).as_str()))
                .count();
            if n > matched && best.is_none_or(|(b, ..)| n > b) {
                best = Some((n, s, a));
            }
        }
    }
    if let Some((n, s, a)) = best {
        out.push(prefix_hint(n, matched, s, a, opts));
    }
    let floats = report
        .mismatched
        .iter()
        .filter(|m| {
            m.module_shape == m.checkpoint_shape
                && m.module_dtype.is_float()
                && m.checkpoint_dtype.is_float()
        })
        .count();
    if floats > 0 && !opts.convert_dtypes {
        out.push(format!(
            "{floats} mismatch(es) differ only in floating dtype, which convert_dtypes converts"
        ));
    }
    let nbt = report
        .missing
        .iter()
        .filter(|n| is_num_batches_tracked(n))
        .count();
    // Only once some key matched: when none did, the prefix is the problem.
    if nbt > 0 && matched > 0 && !opts.allow_missing_num_batches_tracked {
        out.push(format!(
            "{nbt} missing key(s) are num_batches_tracked, which \
             allow_missing_num_batches_tracked tolerates"
        ));
    }
    out
}

/// `every checkpoint key starts with `module.` (..): with
/// strip_prefix("module.") and no add_prefix, 56 key(s) would match instead
/// of 0`: the suggested prefix options in full (saying "no ..." for an
/// option of `opts` to drop) and why.
fn prefix_hint(
    n: usize,
    matched: usize,
    strip: Option<&str>,
    add: Option<&str>,
    opts: &LoadOptions,
) -> String {
    let mut why = Vec::new();
    let mut with = Vec::new();
    for (name, suggested, given) in [
        ("strip_prefix", strip, opts.strip_prefix.is_some()),
        ("add_prefix", add, opts.add_prefix.is_some()),
    ] {
        match suggested {
            Some(p) => with.push(format!("{name}(\"{p}\")")),
            None if given => with.push(format!("no {name}")),
            None => {}
        }
    }
    if let Some(s) = strip {
        let dp = if s == "module." {
            " (the prefix of nn.DataParallel checkpoints)"
        } else {
            ""
        };
        why.push(format!("every checkpoint key starts with `{s}`{dp}"));
    }
    if let Some(a) = add {
        why.push(format!("every module key starts with `{a}`"));
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!("{}: ", why.join(" and "))
    };
    format!(
        "{why}with {}, {n} key(s) would match instead of {matched}",
        with.join(" and ")
    )
}

/// Copies the checked pairs, each source first converted to its
/// destination's dtype (when [`plan`] allowed it) and then moved to its
/// destination's device (a checkpoint read from a file loads into a model
/// on a GPU). Every conversion and upload is made before anything is
/// written, so a failure (out of device memory) leaves the module
/// unchanged.
pub(crate) fn apply(copies: &[(Tensor, &Tensor)]) -> Result<()> {
    no_grad(|| {
        let sources = copies
            .iter()
            .map(|(dst, src)| src.to_dtype(dst.dtype())?.to_device(dst.device()))
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
/// [`Strict::Yes`] is [`LoadOptions::strict`]: every name, shape and dtype
/// must match exactly, otherwise an [`Error::InvalidArgument`] summarises
/// the differences (counts, then the first few keys with their shapes) and
/// nothing is changed. [`Strict::No`] is [`LoadOptions::default`]: floating
/// dtypes convert to the module's, a missing `num_batches_tracked` keeps the
/// module's value, the tensors whose name and shape match are loaded, and
/// the rest is reported in the [`LoadReport`] (unlike PyTorch, which raises
/// on a shape mismatch even when not strict). See
/// [`apply_state_dict_with`] for the other options.
pub fn apply_state_dict(
    module: &dyn Module,
    tensors: &[(String, Tensor)],
    strict: Strict,
) -> Result<LoadReport> {
    apply_state_dict_with(module, tensors, &preset(strict))
}

/// [`apply_state_dict`] under `opts` (see [`LoadOptions`]). Every name,
/// shape and dtype is checked, and with `opts.strict` the whole load
/// refused, before anything is written; conversions and uploads also come
/// before the first write, so on any error the module is unchanged.
pub fn apply_state_dict_with(
    module: &dyn Module,
    tensors: &[(String, Tensor)],
    opts: &LoadOptions,
) -> Result<LoadReport> {
    load_checked("apply_state_dict", None, module, tensors, opts)
}

fn preset(strict: Strict) -> LoadOptions {
    match strict {
        Strict::Yes => LoadOptions::strict(),
        Strict::No => LoadOptions::lenient(),
    }
}

fn load_checked(
    op: &'static str,
    path: Option<&str>,
    module: &dyn Module,
    tensors: &[(String, Tensor)],
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let mut plan = plan(op, module, tensors, opts)?;
    plan.report.hints = hints(&plan.report, tensors, opts);
    if opts.strict && !plan.report.is_complete() {
        let at = path.map(|p| format!("{p}: ")).unwrap_or_default();
        return Err(Error::invalid(
            op,
            format!(
                "{at}state dict does not match the module (strict), nothing was loaded: {}",
                plan.summary()
            ),
        ));
    }
    apply(&plan.copies)?;
    Ok(plan.report)
}

/// Loads the safetensors file at `path` into `module` by name; see
/// [`apply_state_dict`] for `strict` and [`load_state_dict`] for the file
/// errors. Errors name the file.
pub fn load_into_module(
    path: impl AsRef<Path>,
    module: &dyn Module,
    strict: Strict,
) -> Result<LoadReport> {
    load_into_module_with(path, module, &preset(strict))
}

/// Loads the safetensors file at `path` into `module` by name under `opts`
/// (see [`LoadOptions`] and [`apply_state_dict_with`]); see
/// [`load_state_dict`] for the file errors. Errors name the file.
///
/// ```no_run
/// use ferrite::checkpoint::{self, LoadOptions};
/// # fn main() -> ferrite::Result<()> {
/// # let model = ferrite::nn::Sequential::new();
/// // Written by `save_file(nn.DataParallel(net).half().state_dict(), ..)`:
/// let opts = LoadOptions::default().with_strip_prefix("module.");
/// let report = checkpoint::load_into_module_with("net.safetensors", &model, &opts)?;
/// println!("{report}"); // loaded 62 tensor(s) (60 converted: 60 F16 → F32)
/// assert!(report.is_complete());
/// # Ok(())
/// # }
/// ```
pub fn load_into_module_with(
    path: impl AsRef<Path>,
    module: &dyn Module,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let path = path.as_ref();
    let (tensors, _) = load_state_dict(path)?;
    load_checked(
        "load_into_module",
        Some(&path.display().to_string()),
        module,
        &tensors,
        opts,
    )
}
