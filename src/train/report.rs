//! The end-of-run report: a per-class table (training frequency, P, R,
//! F1, AP, head → tail) and the summary metrics, as Markdown, JSON and an
//! SVG chart of per-class recall and precision, with the provenance of the
//! run (build and machine) and a learning curve drawn from its log.

use super::config::TrainConfig;
use super::curve::LearningCurve;
use super::datasets::RunData;
use super::evaluation::Evaluation;
use super::plm_chart::RhatTrajectory;
use super::svg::{per_class_chart, Series};
use crate::error::{Error, Result};
use crate::plm::Plm;
use crate::provenance::Provenance;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Report file names inside a run's folder.
pub const REPORT_MD: &str = "report.md";
/// See [`REPORT_MD`].
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_MD`].
pub const REPORT_SVG: &str = "per_class.svg";
/// See [`REPORT_MD`]: loss and main metric per epoch, from the run's log.
pub const REPORT_CURVE: &str = "learning_curve.svg";
/// PLM's r̂/r per class over the epochs (PLM runs only).
pub const REPORT_RHAT: &str = "plm_rhat.svg";

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
    /// `TP / (TP + FP)` on the evaluation set; `None` when the class was
    /// never predicted (reports say "no prediction").
    pub precision: Option<f64>,
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
    /// PLM's coverage of the class over the run: how many epochs' worth of
    /// its positives and of its negatives the masks kept, in expectation
    /// (`(positives, negatives)`; PLM runs that recorded it only).
    pub plm_coverage: Option<(f64, f64)>,
}

/// Classes with fewer test positives than this get a warning in the
/// report: their recall moves by more than 1 % per image.
pub const MIN_TAIL_TEST_POSITIVES: u64 = 100;

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
    /// The build and machine of the run (`None` in reports written before
    /// ferrite recorded it).
    pub provenance: Option<Provenance>,
    /// PLM's λ in this run and how it was chosen (`"auto: 1/epochs"` or
    /// `"fixed"`); `None` without PLM.
    pub plm_lambda: Option<(f64, String)>,
    /// The same report on the run's other test sets, by section name
    /// (e.g. `test_balanced`); their own `other_sets` are empty.
    pub other_sets: Vec<(String, RunSummary)>,
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
                    precision: (m.counts.tp + m.counts.fp > 0).then_some(m.precision),
                    recall: m.recall,
                    f1: m.f1,
                    average_precision: m.average_precision,
                    plm_rhat: plm.map(|p| p.rhat()[c]),
                    plm_ratio: plm.map(|p| p.ratios()[c]),
                    plm_coverage: None,
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
            provenance: Some(Provenance::current()),
            plm_lambda: plm.map(|p| {
                let rule = match config.loss.plm.map(|s| s.lambda) {
                    Some(crate::train::PlmLambda::Auto) => "auto: 1/epochs",
                    _ => "fixed",
                };
                (p.config().lambda, rule.to_string())
            }),
            other_sets: Vec::new(),
        }
    }

    /// Records PLM's coverage per class (`pos[c]`, `neg[c]`: epochs' worth
    /// of class `c`'s positives and negatives kept) in the rows of this
    /// report and of its other test sets.
    pub fn set_plm_coverage(&mut self, pos: &[f64], neg: &[f64]) {
        for row in &mut self.rows {
            if let (Some(&p), Some(&n)) = (pos.get(row.class), neg.get(row.class)) {
                row.plm_coverage = Some((p, n));
            }
        }
        for (_, other) in &mut self.other_sets {
            other.set_plm_coverage(pos, neg);
        }
    }

    /// A summary value: `macro_f1`, or `test_balanced.macro_f1` for
    /// another test set's.
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some((set, metric)) = name.split_once('.') {
            let (_, other) = self.other_sets.iter().find(|(s, _)| s == set)?;
            return other.get(metric);
        }
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
        if let Some(p) = &self.provenance {
            let _ = writeln!(s, "Run with {}.\n", p.summary_line());
        }
        if let Some((lambda, rule)) = &self.plm_lambda {
            let _ = writeln!(s, "PLM's λ = {lambda} ({rule}).\n");
        }
        let _ = writeln!(s, "| metric | value |\n|---|---:|");
        for (k, v) in &self.summary {
            let _ = writeln!(s, "| {k} | {v:.4} |");
        }
        let few: Vec<String> = self
            .rows
            .iter()
            .rev()
            .take(3)
            .filter(|r| r.test_support < MIN_TAIL_TEST_POSITIVES)
            .map(|r| format!("{} ({})", r.name, r.test_support))
            .collect();
        if !few.is_empty() {
            let _ = writeln!(
                s,
                "\n**Few test positives:** {} of the rarest classes have fewer than \
                 {MIN_TAIL_TEST_POSITIVES} in this set, so their recall and precision \
                 are noisy.",
                few.join(", ")
            );
        }
        let plm = self.rows.iter().any(|r| r.plm_rhat.is_some());
        let coverage = self.rows.iter().any(|r| r.plm_coverage.is_some());
        let _ = write!(
            s,
            "\nPer class, most → least frequent in training:\n\n| class | train positives | test positives | precision | recall | F1 | AP |"
        );
        if plm {
            s.push_str(" r | r̂ |");
        }
        if coverage {
            s.push_str(" coverage + | coverage − |");
        }
        s.push_str("\n|---|---:|---:|---:|---:|---:|---:|");
        if plm {
            s.push_str("---:|---:|");
        }
        if coverage {
            s.push_str("---:|---:|");
        }
        s.push('\n');
        for r in &self.rows {
            let _ = write!(
                s,
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
                r.name,
                r.train_positives,
                r.test_support,
                r.precision
                    .map_or("no prediction".to_string(), |p| format!("{p:.3}")),
                r.recall,
                r.f1,
                r.average_precision
            );
            if let (Some(ratio), Some(rhat)) = (r.plm_ratio, r.plm_rhat) {
                let _ = write!(s, " {ratio:.4} | {rhat:.4} |");
            }
            if let Some((pos, neg)) = r.plm_coverage {
                let _ = write!(s, " {pos:.2} | {neg:.2} |");
            }
            s.push('\n');
        }
        if coverage {
            s.push_str(
                "\nCoverage: epochs' worth of the class's positives (+) and negatives (−) \
                 that PLM's masks kept over the run, in expectation.\n",
            );
        }
        for (name, other) in &self.other_sets {
            let _ = write!(s, "\n## On `{name}`\n\n{}", other.markdown());
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
            "provenance": self.provenance.as_ref().map(Provenance::to_json),
            "plm_lambda": self.plm_lambda.as_ref().map(|(l, rule)| json!({"value": l, "rule": rule})),
            "summary": summary,
            "summary_order": self.summary.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            "per_class": self.rows.iter().map(|r| json!({
                "class": r.class, "name": r.name, "train_positives": r.train_positives,
                "test_support": r.test_support, "precision": r.precision, "recall": r.recall,
                "f1": r.f1, "average_precision": r.average_precision,
                "plm_rhat": r.plm_rhat, "plm_ratio": r.plm_ratio,
                "plm_coverage": r.plm_coverage.map(|(p, n)| json!({"pos": p, "neg": n})),
            })).collect::<Vec<_>>(),
            "other_sets": self.other_sets.iter()
                .map(|(name, other)| (name.clone(), other.to_json()))
                .collect::<serde_json::Map<String, Value>>(),
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
                precision: match r.get("precision") {
                    Some(Value::Null) => None,
                    _ => Some(num(r, "precision")?),
                },
                recall: num(r, "recall")?,
                f1: num(r, "f1")?,
                average_precision: num(r, "average_precision")?,
                plm_rhat: r["plm_rhat"].as_f64(),
                plm_ratio: r["plm_ratio"].as_f64(),
                plm_coverage: r["plm_coverage"]["pos"]
                    .as_f64()
                    .zip(r["plm_coverage"]["neg"].as_f64()),
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
            provenance: Provenance::from_json(&v["provenance"]),
            plm_lambda: v["plm_lambda"]["value"].as_f64().map(|l| {
                let rule = v["plm_lambda"]["rule"].as_str().unwrap_or("fixed");
                (l, rule.to_string())
            }),
            // Reports written before several test sets existed have none.
            other_sets: match v.get("other_sets").and_then(Value::as_object) {
                None => Vec::new(),
                Some(sets) => sets
                    .iter()
                    .map(|(name, other)| Ok((name.clone(), Self::from_json(other, source)?)))
                    .collect::<Result<Vec<_>>>()?,
            },
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

/// Writes `report.md`, `report.json`, `per_class.svg`,
/// `learning_curve.svg` and, for PLM runs, `plm_rhat.svg` (both from the
/// run's `log.jsonl` in `dir`, which may be missing or partial) into `dir`,
/// each atomically.
pub fn write_report(dir: &Path, summary: &RunSummary) -> Result<()> {
    let json = serde_json::to_string_pretty(&summary.to_json()).unwrap_or_default();
    let log_path = dir.join(super::run::LOG_FILE);
    let curve = LearningCurve::read(&log_path)?;
    let curve_title = format!("{}: learning curve", summary.title);
    // The log was readable (or missing) for the curve: read it once more
    // for PLM's trajectory.
    let log = std::fs::read(&log_path).unwrap_or_default();
    let names: Vec<String> = summary.rows.iter().map(|r| r.name.clone()).collect();
    let trajectory = RhatTrajectory::parse(&String::from_utf8_lossy(&log));
    let rhat_title = format!("{}: PLM's r̂ / r per class", summary.title);
    if let Some(svg) = trajectory.svg(&rhat_title, &names) {
        super::write_text(&dir.join(REPORT_RHAT), &svg)?;
    }
    for (name, text) in [
        (REPORT_MD, summary.markdown()),
        (REPORT_JSON, json),
        (REPORT_SVG, summary.svg()),
        (REPORT_CURVE, curve.svg(&curve_title)),
    ] {
        super::write_text(&dir.join(name), &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        let row = |class: usize, precision: Option<f64>| ClassRow {
            class,
            name: format!("c{class}"),
            train_positives: 100 / (class + 1),
            test_support: 5,
            precision,
            recall: if precision.is_some() { 0.5 } else { 0.0 },
            f1: 0.0,
            average_precision: 0.3,
            plm_rhat: None,
            plm_ratio: None,
            plm_coverage: None,
        };
        RunSummary {
            config: json!({"loss": {"kind": "bce"}}),
            title: "bce on test".into(),
            rows: vec![row(0, Some(0.75)), row(1, None)],
            summary: vec![("map".into(), 0.3)],
            seconds: 1.0,
            train_size: 10,
            test_size: 10,
            provenance: Some(Provenance::current()),
            plm_lambda: None,
            other_sets: Vec::new(),
        }
    }

    #[test]
    fn a_never_predicted_class_reads_no_prediction_everywhere() {
        let s = summary();
        let md = s.markdown();
        assert!(md.contains("| c1 | 50 | 5 | no prediction |"), "{md}");
        assert!(md.contains("| c0 | 100 | 5 | 0.750 |"), "{md}");
        assert!(md.contains("Run with ferrite "), "{md}");
        let j = s.to_json();
        assert!(j["per_class"][1]["precision"].is_null());
        assert!(j["provenance"]["git_commit"].is_string());
        let back = RunSummary::from_json(&j, "report.json").unwrap();
        assert_eq!(back.rows, s.rows);
        assert_eq!(back.provenance, s.provenance);
        assert!(s.svg().contains("c1: no prediction"));
        // A wrong type is still an error, not a missing precision.
        let mut bad = j.clone();
        bad["per_class"][0]["precision"] = json!("high");
        assert!(RunSummary::from_json(&bad, "report.json").is_err());
    }

    #[test]
    fn few_tail_positives_are_flagged_and_coverage_round_trips() {
        let mut s = summary();
        // 5 test positives per class: below the 100 a tail needs.
        let md = s.markdown();
        assert!(
            md.contains("**Few test positives:** c1 (5), c0 (5)"),
            "{md}"
        );
        assert!(!md.contains("coverage +"), "{md}");
        s.rows[0].test_support = MIN_TAIL_TEST_POSITIVES;
        s.rows[1].test_support = MIN_TAIL_TEST_POSITIVES;
        assert!(!s.markdown().contains("Few test positives"));

        s.set_plm_coverage(&[9.5, 0.25], &[10.0, 0.125]);
        assert_eq!(s.rows[1].plm_coverage, Some((0.25, 0.125)));
        let md = s.markdown();
        assert!(md.contains("coverage + | coverage − |"), "{md}");
        assert!(md.contains(" 0.25 | 0.12 |"), "{md}");
        let back = RunSummary::from_json(&s.to_json(), "report.json").unwrap();
        assert_eq!(back.rows, s.rows);
    }

    #[test]
    fn write_report_draws_the_learning_curve_from_the_log() {
        let dir = std::env::temp_dir().join(format!("ferrite-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No log yet: the chart says so.
        write_report(&dir, &summary()).unwrap();
        let curve = std::fs::read_to_string(dir.join(REPORT_CURVE)).unwrap();
        assert!(curve.contains("no epochs logged yet"));
        std::fs::write(
            dir.join(super::super::run::LOG_FILE),
            "{\"epoch\":1,\"train_loss\":0.7,\"test\":{\"map\":0.2}}\n{\"epoch\":2,\"train_lo",
        )
        .unwrap();
        write_report(&dir, &summary()).unwrap();
        let curve = std::fs::read_to_string(dir.join(REPORT_CURVE)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(curve.contains("epoch 1: test map 0.2000"), "{curve}");
        assert!(curve.contains("1 line(s) of the log could not be read"));
    }
}
