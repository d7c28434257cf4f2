//! Kernel names, following `<op>_<fwd|bwd|step>_<dtype>` (casts are
//! `cast_<from>_to_<to>`; kernels whose output type differs from their
//! input type end in `<from>_to_<to>`, e.g. `gemm_fwd_bf16_to_f32`). The op tables are public so that launchers can
//! check an op name before building a kernel name from it.

/// The floating-point storage dtypes of the elementwise kernels.
pub const FLOAT_DTYPES: &[&str] = &["f32", "bf16", "f16"];
/// Unary maps `y = f(x)` (`kernels/elementwise.cu`, `UNARY_OPS`).
pub const UNARY_OPS: &[&str] = &[
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "sign",
    "relu",
    "step",
    "sigmoid",
    "tanh",
    "gelu",
    "gelu_derivative",
    "softplus",
    "powf",
    "clamp",
    "in_range",
    "affine",
    "finite_or_zero",
];
/// Activations with a fused f32 backward kernel.
pub const ACTIVATION_BWD_OPS: &[&str] = &["relu", "sigmoid", "tanh"];
/// Binary ops with broadcasting.
pub const BINARY_OPS: &[&str] = &["add", "sub", "mul", "div", "maximum", "minimum", "pow"];
/// Comparisons producing u8 masks.
pub const COMPARE_OPS: &[&str] = &["eq", "ne", "lt", "le", "gt", "ge"];
/// Dtypes of the bit-for-bit strided copy.
pub const COPY_DTYPES: &[&str] = &["f32", "bf16", "f16", "u8", "i64"];
/// The (from, to) pairs of the cast kernels.
pub const CASTS: &[(&str, &str)] = &[
    ("f32", "bf16"),
    ("f32", "f16"),
    ("f32", "u8"),
    ("f32", "i64"),
    ("bf16", "f32"),
    ("bf16", "f16"),
    ("f16", "f32"),
    ("f16", "bf16"),
    ("u8", "f32"),
    ("u8", "bf16"),
    ("u8", "f16"),
    ("i64", "f32"),
];

fn each(ops: &[&str], suffix: &str, dtypes: &[&str]) -> Vec<String> {
    ops.iter()
        .flat_map(|op| dtypes.iter().map(move |dt| format!("{op}_{suffix}_{dt}")))
        .collect()
}

fn list(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `kernels/elementwise.cu`.
pub fn elementwise() -> Vec<String> {
    let mut v = each(UNARY_OPS, "fwd", FLOAT_DTYPES);
    v.extend(each(ACTIVATION_BWD_OPS, "bwd", &["f32"]));
    v.extend(each(BINARY_OPS, "fwd", FLOAT_DTYPES));
    v.extend(each(COMPARE_OPS, "fwd", FLOAT_DTYPES));
    v.extend(each(&["where"], "fwd", FLOAT_DTYPES));
    v.extend(each(&["copy"], "fwd", COPY_DTYPES));
    v.extend(CASTS.iter().map(|(a, b)| format!("cast_{a}_to_{b}")));
    v.extend(each(&["fill"], "fwd", FLOAT_DTYPES));
    v.push("add_int_fwd_i64".to_string());
    v
}

/// `kernels/reduce.cu`.
pub fn reduce() -> Vec<String> {
    list(&[
        "sum_fwd_f32",
        "mean_fwd_f32",
        "max_fwd_f32",
        "logsumexp_fwd_f32",
        "argmax_fwd_f32",
        "softmax_fwd_f32",
        "log_softmax_fwd_f32",
        "softmax_bwd_f32",
        "log_softmax_bwd_f32",
        "sum_strided_fwd_f32",
        "mean_strided_fwd_f32",
        "max_strided_fwd_f32",
    ])
}

/// `kernels/matmul.cu`.
pub fn matmul() -> Vec<String> {
    list(&[
        "gemm_fwd_f32",
        "gemm_fwd_bf16",
        "gemm_fwd_f16",
        "gemm_fwd_bf16_to_f32",
    ])
}

/// `kernels/conv.cu`.
pub fn conv() -> Vec<String> {
    list(&["im2col_fwd_f32", "im2col_fwd_f32_to_bf16", "im2col_bwd_f32"])
}

/// `kernels/pool.cu`.
pub fn pool() -> Vec<String> {
    list(&[
        "max_pool2d_fwd_f32",
        "max_pool2d_bwd_f32",
        "avg_pool2d_fwd_f32",
        "avg_pool2d_bwd_f32",
        "adaptive_avg_pool2d_fwd_f32",
        "adaptive_avg_pool2d_bwd_f32",
    ])
}

/// `kernels/norm.cu`.
pub fn norm() -> Vec<String> {
    list(&[
        "batch_norm_stats_fwd_f32",
        "batch_norm_moments_fwd_f32",
        "batch_norm_fwd_f32",
        "batch_norm_eval_fwd_f32",
        "batch_norm_eval_stats_fwd_f32",
        "batch_norm_reduce_bwd_f32",
        "batch_norm_bwd_f32",
        "batch_norm_eval_bwd_f32",
    ])
}

/// The per-element sigmoid losses of `kernels/sigmoid_loss.cu`.
pub const SIGMOID_LOSSES: &[&str] = &["bce_logits", "focal", "asl"];

/// `kernels/sigmoid_loss.cu`.
pub fn sigmoid_loss() -> Vec<String> {
    let mut v = each(SIGMOID_LOSSES, "fwd", &["f32"]);
    v.extend(each(SIGMOID_LOSSES, "bwd", &["f32"]));
    v
}

/// `kernels/plm.cu`.
pub fn plm() -> Vec<String> {
    list(&[
        "plm_mask_fwd_f32",
        "plm_histogram_fwd_f32",
        "plm_targets_check_fwd_f32",
    ])
}

/// `kernels/optim.cu`.
pub fn optim() -> Vec<String> {
    list(&["sgd_step_f32", "adam_step_f32"])
}

/// `kernels/index.cu`: the gathers copy every dtype of the strided
/// copy, the accumulating kernels are f32.
pub fn index() -> Vec<String> {
    let mut v = list(&[
        "index_check_fwd_i64",
        "index_add_fwd_f32",
        "scatter_add_fwd_f32",
    ]);
    v.extend(each(&["index_select", "gather"], "fwd", COPY_DTYPES));
    v
}
