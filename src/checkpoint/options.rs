//! How a state dict is matched to a module: [`LoadOptions`].

/// How [`load_into_module`](super::load_into_module) and
/// [`apply_state_dict`](super::apply_state_dict) treat a file that does not
/// match the module exactly (PyTorch's `strict=True` / `strict=False`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strict {
    /// [`LoadOptions::strict`]: every tensor present with its shape and
    /// dtype, nothing left over, nothing converted.
    Yes,
    /// [`LoadOptions::default`]: dtypes convert, what matches is loaded and
    /// the rest reported.
    No,
}

/// How [`load_into_module_with`](super::load_into_module_with) and
/// [`apply_state_dict_with`](super::apply_state_dict_with) match a
/// checkpoint to a module.
///
/// Two presets cover the usual cases:
///
/// - [`LoadOptions::default`] (= [`LoadOptions::lenient`]) accepts what
///   PyTorch's `load_state_dict` accepts and more: floating dtypes convert to
///   the module's, a missing `num_batches_tracked` keeps the module's
///   value, and keys that do not match are reported instead of refused.
/// - [`LoadOptions::strict`] requires an exact match: every module tensor
///   present with its shape and dtype, no tensor left over, nothing
///   converted or tolerated. This is what `load_into_module(.., Strict::Yes)` does.
///
/// Each field can also be set on its own; for example
/// `LoadOptions::default().with_strict(true)` behaves like PyTorch's
/// `load_state_dict(sd, strict=True)`: every key must match, but floating
/// dtypes convert and a missing `num_batches_tracked` is tolerated.
///
/// Prefixes are never guessed: a DataParallel checkpoint (`module.conv1.weight`)
/// needs [`with_strip_prefix("module.")`](LoadOptions::with_strip_prefix),
/// as PyTorch needs `consume_prefix_in_state_dict_if_present`. When a
/// prefix would have made keys match, the [`LoadReport`](super::LoadReport)
/// (and a strict error) says which.
///
/// ```
/// use ferrite::checkpoint::LoadOptions;
/// let opts = LoadOptions::strict().with_strip_prefix("module.");
/// assert!(opts.strict && !opts.convert_dtypes);
/// assert_eq!(opts.strip_prefix.as_deref(), Some("module."));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Refuse the load, changing nothing, unless every module tensor
    /// receives a value (or is a tolerated `num_batches_tracked`), every
    /// checkpoint tensor is used, and no shape or dtype differs beyond
    /// what `convert_dtypes` converts. Default: false.
    pub strict: bool,
    /// Convert floating-point tensors (F16, BF16, F32, F64) to the module
    /// tensor's floating dtype (rounding to nearest; a value beyond the
    /// target's range becomes infinite, as in PyTorch) and list them in
    /// [`LoadReport::converted`](super::LoadReport::converted). Integer
    /// dtypes never convert: a differing one is a mismatch. Default: true.
    pub convert_dtypes: bool,
    /// Removed from the start of every checkpoint key that has it (keys
    /// without it are kept as they are), e.g. `module.` for checkpoints of
    /// `nn.DataParallel`. Applied before `add_prefix`. Default: none.
    pub strip_prefix: Option<String>,
    /// Put before every checkpoint key (after `strip_prefix`), e.g. to load
    /// a backbone's weights into `backbone.` of a larger module.
    /// Default: none.
    pub add_prefix: Option<String>,
    /// A module buffer named `num_batches_tracked` (batch norm's counter)
    /// that the checkpoint lacks keeps the module's value and is listed in
    /// [`LoadReport::tolerated_missing`](super::LoadReport::tolerated_missing)
    /// instead of [`missing`](super::LoadReport::missing), as PyTorch
    /// does. Default: true.
    pub allow_missing_num_batches_tracked: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions::lenient()
    }
}

impl LoadOptions {
    /// Not strict, floating dtypes converted, a missing
    /// `num_batches_tracked` tolerated, no prefix (the default).
    pub fn lenient() -> Self {
        LoadOptions {
            strict: false,
            convert_dtypes: true,
            strip_prefix: None,
            add_prefix: None,
            allow_missing_num_batches_tracked: true,
        }
    }

    /// Strict and exact: every name, shape and dtype must match, nothing is
    /// converted or tolerated, no prefix.
    pub fn strict() -> Self {
        LoadOptions {
            strict: true,
            convert_dtypes: false,
            strip_prefix: None,
            add_prefix: None,
            allow_missing_num_batches_tracked: false,
        }
    }

    /// Sets [`strict`](LoadOptions::strict) (the field).
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Sets [`convert_dtypes`](LoadOptions::convert_dtypes).
    pub fn with_convert_dtypes(mut self, convert: bool) -> Self {
        self.convert_dtypes = convert;
        self
    }

    /// Sets [`strip_prefix`](LoadOptions::strip_prefix).
    pub fn with_strip_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.strip_prefix = Some(prefix.into());
        self
    }

    /// Sets [`add_prefix`](LoadOptions::add_prefix).
    pub fn with_add_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.add_prefix = Some(prefix.into());
        self
    }

    /// Sets [`allow_missing_num_batches_tracked`](LoadOptions::allow_missing_num_batches_tracked).
    pub fn with_allow_missing_num_batches_tracked(mut self, allow: bool) -> Self {
        self.allow_missing_num_batches_tracked = allow;
        self
    }

    /// The module name a checkpoint key stands for under these options.
    pub(crate) fn rename(&self, key: &str) -> String {
        rename(
            key,
            self.strip_prefix.as_deref(),
            self.add_prefix.as_deref(),
        )
    }
}

/// `key` without `strip` (when it starts with it), then with `add` before it.
pub(crate) fn rename(key: &str, strip: Option<&str>, add: Option<&str>) -> String {
    let rest = strip.and_then(|p| key.strip_prefix(p)).unwrap_or(key);
    match add {
        Some(p) => format!("{p}{rest}"),
        None => rest.to_string(),
    }
}

/// True for batch norm's counter buffer, `num_batches_tracked` at any depth.
pub(crate) fn is_num_batches_tracked(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}
