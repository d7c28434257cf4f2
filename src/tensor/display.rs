//! `Display` for tensors, in PyTorch's style.
//!
//! `tensor([[ 1.5000, -2.0000], ...])`: one format for all elements (integer
//! valued floats print as `1.`, wide ranges switch to scientific notation
//! with Python's `1.0000e+03` exponents), right-aligned columns, rows
//! wrapped at 80 characters, and tensors over 1000 elements summarised with
//! `...` keeping three items at each edge of every dimension. As in
//! PyTorch, only the printed elements decide the format and the width.

use super::{DType, Tensor};
use std::fmt;

const SUMMARIZE_OVER: usize = 1000;
const EDGE_ITEMS: usize = 3;
const LINE_WIDTH: usize = 80;

enum Style {
    Int,
    IntegralFloat,
    Fixed,
    Sci,
}

impl Style {
    /// PyTorch's `_Formatter` rule, applied to the nonzero finite values.
    fn pick(dtype: DType, values: &[f64]) -> Style {
        if !dtype.is_float() {
            return Style::Int;
        }
        let nonzero: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v != 0.0)
            .collect();
        if nonzero.is_empty() {
            return Style::IntegralFloat;
        }
        let max = nonzero.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let min = nonzero.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        let wide = max / min > 1000.0 || max > 1e8;
        if nonzero.iter().all(|v| v.fract() == 0.0) {
            if wide {
                Style::Sci
            } else {
                Style::IntegralFloat
            }
        } else if wide || min < 1e-4 {
            Style::Sci
        } else {
            Style::Fixed
        }
    }

    fn format(&self, v: f64) -> String {
        if v.is_nan() {
            return "nan".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "inf".into() } else { "-inf".into() };
        }
        match self {
            Style::Int => format!("{}", v as i64),
            Style::IntegralFloat => format!("{v:.0}."),
            Style::Fixed => format!("{v:.4}"),
            Style::Sci => python_sci(v),
        }
    }
}

/// `v` as Python's `{:.4e}` writes it: the exponent has a sign and at
/// least two digits (`1.0000e-05`, where Rust writes `1.0000e-5`).
fn python_sci(v: f64) -> String {
    let s = format!("{v:.4e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Indices of one dimension to print (all, or the edges around a gap).
fn shown(n: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE_ITEMS..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    }
}

struct Printer<'a> {
    shape: &'a [usize],
    strides: Vec<usize>,
    values: &'a [f64],
    style: Style,
    width: usize,
    summarize: bool,
}

impl Printer<'_> {
    /// Row-major positions of the elements that will be printed.
    fn printed(&self, dim: usize, base: usize, out: &mut Vec<usize>) {
        for i in shown(self.shape[dim], self.summarize).into_iter().flatten() {
            let pos = base + i * self.strides[dim];
            if dim + 1 == self.shape.len() {
                out.push(pos);
            } else {
                self.printed(dim + 1, pos, out);
            }
        }
    }

    fn write(&self, out: &mut String, dim: usize, base: usize, indent: usize) {
        out.push('[');
        let items = shown(self.shape[dim], self.summarize);
        let last_dim = dim + 1 == self.shape.len();
        // Items per line of a row, as PyTorch's `_vector_str`.
        let per_line = (LINE_WIDTH.saturating_sub(indent) / (self.width + 2)).max(1);
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                if last_dim && k % per_line != 0 {
                    out.push_str(", ");
                } else {
                    out.push(',');
                    let blank = if last_dim {
                        1
                    } else {
                        self.shape.len() - dim - 1
                    };
                    out.push_str(&"\n".repeat(blank));
                    out.push_str(&" ".repeat(indent + 1));
                }
            }
            match item {
                None if last_dim => out.push_str(" ..."),
                None => out.push_str("..."),
                Some(i) => {
                    let pos = base + i * self.strides[dim];
                    if last_dim {
                        let cell = self.style.format(self.values[pos]);
                        out.push_str(&" ".repeat(self.width.saturating_sub(cell.len())));
                        out.push_str(&cell);
                    } else {
                        self.write(out, dim + 1, pos, indent + 1);
                    }
                }
            }
        }
        out.push(']');
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.to_f64_vec() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let mut printer = Printer {
            shape: self.shape(),
            strides: super::contiguous_strides(self.shape()),
            values: &values,
            style: Style::Int,
            width: 1,
            summarize: values.len() > SUMMARIZE_OVER,
        };
        // Only the printed elements decide the format and the width; for
        // floats the width counts nonzero finite values only, as in PyTorch.
        let printed: Vec<f64> = if self.ndim() == 0 {
            values.clone()
        } else {
            let mut pos = Vec::new();
            if !values.is_empty() {
                printer.printed(0, 0, &mut pos);
            }
            pos.iter().map(|&p| values[p]).collect()
        };
        printer.style = Style::pick(self.dtype(), &printed);
        let float = self.dtype().is_float();
        printer.width = printed
            .iter()
            .filter(|v| !float || (v.is_finite() && **v != 0.0))
            .map(|&v| printer.style.format(v).len())
            .fold(1, usize::max);
        let mut body = String::new();
        if self.ndim() == 0 {
            body.push_str(&printer.style.format(values[0]));
        } else if values.is_empty() {
            body.push_str("[]");
        } else {
            printer.write(&mut body, 0, 0, "tensor(".len());
        }
        write!(f, "tensor({body}")?;
        if values.is_empty() && self.ndim() != 1 {
            let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
            write!(f, ", size=({})", dims.join(", "))?;
        }
        if self.dtype() != DType::F32 && self.dtype() != DType::I64 {
            write!(f, ", dtype={}", self.dtype().as_str())?;
        }
        if self.requires_grad() {
            write!(f, ", requires_grad=true")?;
        }
        write!(f, ")")
    }
}
