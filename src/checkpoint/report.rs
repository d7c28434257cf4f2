//! What a load did ([`LoadReport`]) and its short summaries.

use crate::tensor::DType;
use std::fmt::{self, Write as _};

/// How many names of each kind a summary shows before "… and N more".
pub(crate) const SHOWN: usize = 5;

/// A name present in both the module and the checkpoint whose shape or
/// dtype differs (and was not converted).
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

/// A tensor loaded after converting its floating dtype to the module's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// State-dict name of the tensor (the module's name).
    pub name: String,
    /// Dtype in the checkpoint.
    pub from: DType,
    /// Dtype of the module's tensor, which it was converted to.
    pub to: DType,
}

impl fmt::Display for Conversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?} → {:?})", self.name, self.from, self.to)
    }
}

/// What a load did: the names it loaded, converted or tolerated, and the
/// ones it could not use.
///
/// Its `Display` is one short line: counts, then at most five names of
/// each kind and "… and N more"; the fields hold every name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module tensors that received the checkpoint's values, converted or
    /// not (module order).
    pub loaded: Vec<String>,
    /// The loaded tensors whose floating dtype was converted to the
    /// module's (module order).
    pub converted: Vec<Conversion>,
    /// Module `num_batches_tracked` buffers the checkpoint lacks, which kept
    /// the module's value (module order).
    pub tolerated_missing: Vec<String>,
    /// Module tensors the checkpoint does not have (module order).
    pub missing: Vec<String>,
    /// Checkpoint tensors the module does not have, under their names in
    /// the checkpoint, before any prefix option (checkpoint order).
    pub unexpected: Vec<String>,
    /// Names in both whose shape, or dtype, differs and was not converted
    /// (not loaded).
    pub mismatched: Vec<Mismatch>,
    /// Suggestions, when they would have helped: a prefix option that would
    /// make more keys match, `strip_prefix` matching no key, dtype
    /// differences that conversion would resolve.
    pub hints: Vec<String>,
}

impl LoadReport {
    /// True when every module tensor was loaded exactly as stored (nothing
    /// converted or tolerated) and nothing was left over.
    pub fn is_exact(&self) -> bool {
        self.is_complete() && self.converted.is_empty() && self.tolerated_missing.is_empty()
    }

    /// True when nothing is missing, unexpected or mismatched (conversions
    /// and tolerated `num_batches_tracked` allowed): what strict loading
    /// requires.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// The problems in one short paragraph: the counts of missing,
    /// unexpected and mismatched keys, then at most five names of each
    /// (mismatches with both shapes and dtypes) and "… and N more". Empty
    /// when [`is_complete`](LoadReport::is_complete).
    pub fn problems(&self) -> String {
        summary(self, None)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensor(s)", self.loaded.len())?;
        if !self.converted.is_empty() {
            write!(
                f,
                " ({} converted: {})",
                self.converted.len(),
                conversion_counts(&self.converted)
            )?;
        }
        if !self.tolerated_missing.is_empty() {
            write!(
                f,
                "; {} num_batches_tracked missing from the checkpoint kept the module's value",
                self.tolerated_missing.len()
            )?;
        }
        if !self.is_complete() {
            write!(f, "; {}", self.problems())?;
        }
        for h in &self.hints {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

/// `47 F16 → F32, 2 F64 → F32`: conversions counted by dtype pair, in
/// order of first appearance.
fn conversion_counts(converted: &[Conversion]) -> String {
    let mut counts: Vec<(DType, DType, usize)> = Vec::new();
    for c in converted {
        match counts
            .iter_mut()
            .find(|(f, t, _)| *f == c.from && *t == c.to)
        {
            Some(entry) => entry.2 += 1,
            None => counts.push((c.from, c.to, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(f, t, n)| format!("{n} {f:?} → {t:?}"))
        .collect();
    parts.join(", ")
}

/// Shapes and dtypes of the report's `missing` (module side) and
/// `unexpected` (checkpoint side) tensors, in the same order, for
/// summaries that show them.
pub(crate) struct KeyShapes {
    /// One entry per `LoadReport::missing` name.
    pub missing: Vec<(Vec<usize>, DType)>,
    /// One entry per `LoadReport::unexpected` name.
    pub unexpected: Vec<(Vec<usize>, DType)>,
}

/// Appends `label: a, b, …, and N more` with at most [`SHOWN`] items.
fn list<T>(out: &mut String, label: &str, items: &[T], show: impl Fn(usize, &T) -> String) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, "; {label}: ");
    for (i, item) in items.iter().take(SHOWN).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&show(i, item));
    }
    if items.len() > SHOWN {
        let _ = write!(out, ", … and {} more", items.len() - SHOWN);
    }
}

/// `2 missing, 1 unexpected, 3 mismatched; missing: a [4] F32, …` (shapes
/// of missing and unexpected keys when `shapes` has them). Empty when the
/// report is complete.
pub(crate) fn summary(report: &LoadReport, shapes: Option<&KeyShapes>) -> String {
    if report.is_complete() {
        return String::new();
    }
    let mut out = format!(
        "{} missing, {} unexpected, {} mismatched",
        report.missing.len(),
        report.unexpected.len(),
        report.mismatched.len()
    );
    let with_shape = |name: &str, info: Option<&(Vec<usize>, DType)>| match info {
        Some((shape, dtype)) => format!("{name} {shape:?} {dtype:?}"),
        None => name.to_string(),
    };
    list(&mut out, "missing", &report.missing, |i, name| {
        with_shape(name, shapes.and_then(|s| s.missing.get(i)))
    });
    list(&mut out, "unexpected", &report.unexpected, |i, name| {
        with_shape(name, shapes.and_then(|s| s.unexpected.get(i)))
    });
    list(&mut out, "mismatched", &report.mismatched, |_, m| {
        m.to_string()
    });
    out
}
