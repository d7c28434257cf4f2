//! `Display` for tensors, in PyTorch's style.
//!
//! `tensor([[ 1.5000, -2.0000], ...])`: one format for all elements (integer
//! valued floats print as `1.`, wide ranges switch to scientific notation),
//! right-aligned columns, and tensors over 1000 elements summarised with
//! `...` keeping three items at each edge of every dimension.

use super::{DType, Tensor};
use std::fmt;

const SUMMARIZE_OVER: usize = 1000;
const EDGE_ITEMS: usize = 3;

enum Style {
    Int,
    IntegralFloat,
    Fixed,
    Sci,
}

impl Style {
    fn pick(dtype: DType, values: &[f64]) -> Style {
        if !dtype.is_float() {
            return Style::Int;
        }
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.iter().all(|v| v.fract() == 0.0) {
            let max = finite.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            return if max > 1e8 {
                Style::Sci
            } else {
                Style::IntegralFloat
            };
        }
        let nonzero: Vec<f64> = finite
            .iter()
            .map(|v| v.abs())
            .filter(|&v| v > 0.0)
            .collect();
        let max = nonzero.iter().fold(0.0f64, |m, &v| m.max(v));
        let min = nonzero.iter().fold(f64::INFINITY, |m, &v| m.min(v));
        if !nonzero.is_empty() && (max / min > 1000.0 || max > 1e8 || min < 1e-4) {
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
            Style::Sci => format!("{v:.4e}"),
        }
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
    cells: Vec<String>,
    width: usize,
    summarize: bool,
}

impl Printer<'_> {
    fn write(&self, out: &mut String, dim: usize, base: usize, indent: usize) {
        out.push('[');
        let items = shown(self.shape[dim], self.summarize);
        let last_dim = dim + 1 == self.shape.len();
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                if last_dim {
                    out.push_str(", ");
                } else {
                    out.push(',');
                    let blank = self.shape.len() - dim - 1;
                    out.push_str(&"\n".repeat(blank));
                    out.push_str(&" ".repeat(indent + 1));
                }
            }
            match item {
                None => out.push_str("..."),
                Some(i) => {
                    let pos = base + i * self.strides[dim];
                    if last_dim {
                        let cell = &self.cells[pos];
                        out.push_str(&" ".repeat(self.width - cell.len()));
                        out.push_str(cell);
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
        let summarize = values.len() > SUMMARIZE_OVER;
        let strides = super::contiguous_strides(self.shape());
        // Only the printed elements decide the format, as in PyTorch.
        let style = Style::pick(self.dtype(), &values);
        let cells: Vec<String> = values.iter().map(|&v| style.format(v)).collect();
        let width = cells.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut body = String::new();
        if self.ndim() == 0 {
            body.push_str(cells.first().map(String::as_str).unwrap_or(""));
        } else if values.is_empty() {
            body.push_str("[]");
        } else {
            let printer = Printer {
                shape: self.shape(),
                strides,
                cells,
                width,
                summarize,
            };
            printer.write(&mut body, 0, 0, "tensor(".len());
        }
        write!(f, "tensor({body}")?;
        if values.is_empty() && self.ndim() > 0 {
            write!(f, ", size={:?}", self.shape())?;
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
