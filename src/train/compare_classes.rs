//! The per-class side of a comparison: for every class, head → tail,
//! each variant's recall, precision and average precision (means over
//! seeds) side by side, so a reader sees where one objective beats another.

use super::compare::Variant;
use super::report::{ClassRow, RunSummary};
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The mean of `xs`, `None` when empty.
fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// One class's values of one variant: means over the seeds (precision over
/// the seeds that predicted the class at all).
struct Cell {
    recall: Option<f64>,
    precision: Option<f64>,
    average_precision: Option<f64>,
}

fn cell(runs: &[RunSummary], class: usize) -> Cell {
    let rows: Vec<&ClassRow> = runs
        .iter()
        .filter_map(|r| r.rows.iter().find(|x| x.class == class))
        .collect();
    let of = |f: fn(&ClassRow) -> Option<f64>| {
        mean(&rows.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    Cell {
        recall: of(|r| Some(r.recall)),
        precision: of(|r| r.precision),
        average_precision: of(|r| Some(r.average_precision)),
    }
}

/// The markdown table (classes in the first run's head → tail order, one
/// recall, precision and AP column per variant) and its JSON rows.
pub fn per_class_table(results: &[(Variant, Vec<RunSummary>)]) -> (String, Vec<Value>) {
    let Some(first) = results.first().and_then(|(_, r)| r.first()) else {
        return (String::new(), Vec::new());
    };
    let labels: Vec<&str> = results.iter().map(|(v, _)| v.label.as_str()).collect();
    let mut md = String::from(
        "Per class, head → tail (means over seeds; precision over the seeds that predicted the class):\n\n",
    );
    let heads = |what: &str| {
        labels
            .iter()
            .map(|l| format!("{what} {l}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(
        md,
        "| class | train pos | test pos | {} | {} | {} |",
        heads("R"),
        heads("P"),
        heads("AP")
    );
    let _ = writeln!(md, "|---|---:|---:|{}", "---:|".repeat(3 * labels.len()));
    let mut rows = Vec::new();
    for row in &first.rows {
        let cells: Vec<Cell> = results
            .iter()
            .map(|(_, runs)| cell(runs, row.class))
            .collect();
        let show = |x: Option<f64>, none: &str| x.map_or(none.to_string(), |x| format!("{x:.3}"));
        let column = |f: fn(&Cell) -> Option<f64>, none: &str| {
            cells
                .iter()
                .map(|c| show(f(c), none))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            row.name,
            row.train_positives,
            row.test_support,
            column(|c| c.recall, "–"),
            column(|c| c.precision, "no prediction"),
            column(|c| c.average_precision, "–"),
        );
        let by_variant: serde_json::Map<String, Value> = labels
            .iter()
            .zip(&cells)
            .map(|(l, c)| {
                let v = json!({
                    "recall": c.recall,
                    "precision": c.precision,
                    "average_precision": c.average_precision,
                });
                (l.to_string(), v)
            })
            .collect();
        rows.push(json!({
            "class": row.class,
            "name": row.name,
            "train_positives": row.train_positives,
            "test_support": row.test_support,
            "variants": by_variant,
        }));
    }
    (md, rows)
}
