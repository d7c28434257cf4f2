//! The end-of-run report: a per-class table (training frequency, P, R,
//! F1, AP, head → tail) and the summary metrics, as Markdown, JSON and an
//! SVG chart of per-class recall and precision.

use super::config::TrainConfig;
use super::datasets::RunData;
use super::evaluation::Evaluation;
use super::svg::{per_class_chart, Series};
use crate::error::{Error, Result};
use crate::plm::Plm;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Report file names inside a run's folder.
pub const REPORT_MD: &str = "report.md";
/// See [`REPORT_MD`].
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_MD`].
pub const REPORT_SVG: &str = "per_class.svg";

/// One row of the per-class table.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRow {
    /// Class index.
    pub class: usize,
    /// Class name (the index as text when no name is given).
    pub name: String,
    /// Positives of the class in the training set.
    pub train_positives: usize,
    /// Positives of the class in the evaluation set.
    pub test_support: u64,
    /// `TP / (TP + FP)` on the evaluation set, 0 when never predicted.
    pub precision: f64,
    /// `TP / (TP + FN)` on the evaluation set, 0 without positives.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Threshold-free average precision of the class's scores.
    pub average_precision: f64,
    /// PLM's final target ratio r̂ and the data's ratio r (PLM runs only).
    pub plm_rhat: Option<f64>,
    /// The data's ratio `r = Npos / Nneg` of the class (PLM runs only).
    pub plm_ratio: Option<f64>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run's configuration as JSON.
    pub config: Value,
    /// Short description, e.g. `"plm on multimnist-lt, resnet8, seed 0"`.
    pub title: String,
    /// Classes ordered from the most to the least frequent in training.
    pub rows: Vec<ClassRow>,
    /// Summary metrics in a fixed order.
    pub summary: Vec<(String, f64)>,
    /// Training seconds (excluding evaluation).
    pub seconds: f64,
    /// Images in the training set.
    pub train_size: usize,
    /// Images in the evaluation set.
    pub test_size: usize,
}

impl RunSummary {
    /// Collects the report of a run from its final evaluation.
    pub fn new(
        config: &TrainConfig,
        data: &RunData,
        evaluation: &Evaluation,
        plm: Option<&Plm>,
        seconds: f64,
        names: Vec<String>,
    ) -> Self {
        let mut order: Vec<usize> = (0..data.train_positives.len()).collect();
        order.sort_by_key(|&c| (std::cmp::Reverse(data.train_positives[c]), c));
        let rows = order
            .into_iter()
            .map(|c| {
                let m = &evaluation.report.per_class[c];
                ClassRow {
                    class: c,
                    name: names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    train_positives: data.train_positives[c],
                    test_support: m.support,
                    precision: m.precision,
                    recall: m.recall,
                    f1: m.f1,
                    average_precision: m.average_precision,
                    plm_rhat: plm.map(|p| p.rhat()[c]),
                    plm_ratio: plm.map(|p| p.ratios()[c]),
                }
            })
            .collect();
        RunSummary {
            config: config.to_json(),
            title: format!(
                "{} on {}, {}, seed {}, {} epochs",
                config.loss,
                config.data.kind.name(),
                config.model,
                config.seed,
                config.epochs
            ),
            rows,
            summary: evaluation.summary.clone(),
            seconds,
            train_size: data.train.len(),
            test_size: data.test.len(),
        }
    }

    /// The value of summary metric `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        super::evaluation::summary_value(&self.summary, name)
    }

    /// The report as Markdown: summary table, then the per-class table.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}\n", self.title);
        let _ = writeln!(
            s,
            "{} training / {} test images, {:.0} s of training.\n",
            self.train_size, self.test_size, self.seconds
        );
        let _ = writeln!(s, "| metric | value |\n|---|---:|");
        for (k, v) in &self.summary {
            let _ = writeln!(s, "| {k} | {v:.4} |");
        }
        let plm = self.rows.iter().any(|r| r.plm_rhat.is_some());
        let _ = write!(
            s,
            "\nPer class, most → least frequent in training:\n\n| class | train positives | test positives | precision | recall | F1 | AP |"
        );
        if plm {
            s.push_str(" r | r̂ |");
        }
        s.push_str("\n|---|---:|---:|---:|---:|---:|---:|");
        if plm {
            s.push_str("---:|---:|");
        }
        s.push('\n');
        for r in &self.rows {
            let _ = write!(
                s,
                "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.name,
                r.train_positives,
                r.test_support,
                r.precision,
                r.recall,
                r.f1,
                r.average_precision
            );
            if let (Some(ratio), Some(rhat)) = (r.plm_ratio, r.plm_rhat) {
                let _ = write!(s, " {ratio:.4} | {rhat:.4} |");
            }
            s.push('\n');
        }
        s
    }

    /// The report as JSON (what `compare` reads back).
    pub fn to_json(&self) -> Value {
        let summary: serde_json::Map<String, Value> = self
            .summary
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "title": self.title,
            "config": self.config,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "seconds": self.seconds,
            "summary": summary,
            "summary_order": self.summary.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            "per_class": self.rows.iter().map(|r| json!({
                "class": r.class, "name": r.name, "train_positives": r.train_positives,
                "test_support": r.test_support, "precision": r.precision, "recall": r.recall,
                "f1": r.f1, "average_precision": r.average_precision,
                "plm_rhat": r.plm_rhat, "plm_ratio": r.plm_ratio,
            })).collect::<Vec<_>>(),
        })
    }

    /// Reads a report written by [`RunSummary::to_json`]; `source` names
    /// the file in errors.
    pub fn from_json(v: &Value, source: &str) -> Result<Self> {
        let corrupt = |what: &str| Error::CorruptFile {
            path: source.to_string(),
            msg: format!("report field `{what}` is missing or has the wrong type"),
        };
        let num = |v: &Value, k: &str| v[k].as_f64().ok_or_else(|| corrupt(k));
        let order = v["summary_order"]
            .as_array()
            .ok_or_else(|| corrupt("summary_order"))?;
        let mut summary = Vec::new();
        for k in order {
            let k = k.as_str().ok_or_else(|| corrupt("summary_order"))?;
            summary.push((k.to_string(), num(&v["summary"], k)?));
        }
        let mut rows = Vec::new();
        for r in v["per_class"]
            .as_array()
            .ok_or_else(|| corrupt("per_class"))?
        {
            rows.push(ClassRow {
                class: r["class"].as_u64().ok_or_else(|| corrupt("class"))? as usize,
                name: r["name"]
                    .as_str()
                    .ok_or_else(|| corrupt("name"))?
                    .to_string(),
                train_positives: r["train_positives"]
                    .as_u64()
                    .ok_or_else(|| corrupt("train_positives"))?
                    as usize,
                test_support: r["test_support"]
                    .as_u64()
                    .ok_or_else(|| corrupt("test_support"))?,
                precision: num(r, "precision")?,
                recall: num(r, "recall")?,
                f1: num(r, "f1")?,
                average_precision: num(r, "average_precision")?,
                plm_rhat: r["plm_rhat"].as_f64(),
                plm_ratio: r["plm_ratio"].as_f64(),
            });
        }
        Ok(RunSummary {
            config: v["config"].clone(),
            title: v["title"]
                .as_str()
                .ok_or_else(|| corrupt("title"))?
                .to_string(),
            rows,
            summary,
            seconds: num(v, "seconds")?,
            train_size: v["train_size"]
                .as_u64()
                .ok_or_else(|| corrupt("train_size"))? as usize,
            test_size: v["test_size"]
                .as_u64()
                .ok_or_else(|| corrupt("test_size"))? as usize,
        })
    }

    /// The per-class chart of this run alone.
    pub fn svg(&self) -> String {
        let names: Vec<String> = self.rows.iter().map(|r| r.name.clone()).collect();
        let counts: Vec<usize> = self.rows.iter().map(|r| r.train_positives).collect();
        let series = Series {
            label: self
                .config
                .get("loss")
                .and_then(Value::as_str)
                .unwrap_or("run")
                .to_string(),
            recall: self.rows.iter().map(|r| r.recall).collect(),
            precision: self.rows.iter().map(|r| r.precision).collect(),
            recall_std: None,
            precision_std: None,
        };
        per_class_chart(&self.title, &names, &counts, &[series])
    }
}

/// Writes `report.md`, `report.json` and `per_class.svg` into `dir`, each
/// atomically.
pub fn write_report(dir: &Path, summary: &RunSummary) -> Result<()> {
    let json = serde_json::to_string_pretty(&summary.to_json()).unwrap_or_default();
    for (name, text) in [
        (REPORT_MD, summary.markdown()),
        (REPORT_JSON, json),
        (REPORT_SVG, summary.svg()),
    ] {
        super::write_text(&dir.join(name), &text)?;
    }
    Ok(())
}
