//! Several objectives × seeds on one dataset: runs each (or reuses a
//! finished run's report), then one table of mean ± standard deviation and
//! one chart of per-class recall and precision averaged over seeds.

use super::compare_reuse::check_existing_run;
pub use super::compare_reuse::config_differences;
use super::config::TrainConfig;
use super::loss_spec::LossSpec;
use super::report::{RunSummary, REPORT_JSON};
use super::run::{Observer, Run, CHECKPOINT_FILE};
use super::svg::{per_class_chart, Series};
use crate::distributed::Communicator;
use crate::error::{Error, Result};
use crate::tensor::Device;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One row of a comparison: a loss in the grammar of [`LossSpec`], e.g.
/// `plm(init=balanced,lambda=0)` (PLM with a fixed r̂ = 1) or
/// `focal(gamma=1)`; the text is the row's label and names its folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// The text it was parsed from (the row label and folder name).
    pub label: String,
    /// The objective.
    pub loss: LossSpec,
}

impl std::str::FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // The loss's errors quote the text already.
        let loss: LossSpec = s.parse()?;
        Ok(Variant {
            label: s.trim().to_string(),
            loss,
        })
    }
}

/// The message of an invalid-argument error without its op prefix.
fn plain(e: Error) -> String {
    match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    }
}

impl Variant {
    /// Sets the loss of this variant on `config` and checks the result
    /// (e.g. `ce` on multi-label data is refused).
    pub fn apply(&self, config: &mut TrainConfig) -> Result<()> {
        config.loss = self.loss;
        config
            .validate()
            .map_err(|e| Error::invalid("Variant", format!("`{}`: {}", self.label, plain(e))))
    }

    /// A folder name for the variant (characters other than letters,
    /// digits, `+`, `.` and `-` replaced by `_`).
    pub fn folder(&self) -> String {
        self.label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '+' || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// The metrics a comparison table shows, by summary key.
pub fn table_metrics(multi_label: bool) -> &'static [&'static str] {
    if multi_label {
        &[
            "macro_f1",
            "micro_f1",
            "subset_accuracy",
            "map",
            "rare3_recall",
            "frequent3_precision",
        ]
    } else {
        &[
            "top1",
            "many",
            "medium",
            "few",
            "macro_f1",
            "rare3_recall",
            "frequent3_precision",
        ]
    }
}

/// The table cell of summary value `key` over `runs` (mean ± std; the
/// mean alone for one run; `–` when no run has it), recorded in `cells`.
fn metric_cell(
    runs: &[RunSummary],
    key: &str,
    cells: &mut serde_json::Map<String, Value>,
) -> String {
    let xs: Vec<f64> = runs.iter().filter_map(|r| r.get(key)).collect();
    if xs.is_empty() {
        return " – |".to_string();
    }
    let (mean, std) = mean_std(&xs);
    cells.insert(
        key.to_string(),
        json!({"mean": mean, "std": std, "values": xs}),
    );
    if xs.len() == 1 {
        format!(" {mean:.4} |")
    } else {
        format!(" {mean:.4} ± {std:.4} |")
    }
}

/// Mean and sample standard deviation (divisor n − 1; 0 for one value) of `xs`.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Runs every variant with every seed into `out_dir/<variant>/seed<s>/`
/// (skipping runs whose `report.json` exists, resuming runs with a
/// checkpoint — either only if made with the same settings: a folder
/// holding a run with other settings is an error naming them, raised
/// before anything trains, as are a seed or a variant listed twice), then
/// writes `compare.md`, `compare.json` and `compare.svg` into `out_dir`.
/// Every run trains on `device`. `observer` is asked for an observer per
/// run (with the run's label).
pub fn compare(
    base: &TrainConfig,
    variants: &[Variant],
    seeds: &[u64],
    out_dir: &Path,
    device: Device,
    observer: &mut dyn FnMut(&str) -> Box<dyn Observer>,
) -> Result<Vec<(Variant, Vec<RunSummary>)>> {
    compare_with(base, variants, seeds, out_dir, device, observer, None)
}

/// This process's place in a data-parallel comparison (see
/// [`compare_with`]).
pub struct JobRank<'a> {
    /// This process's rank; rank 0 writes.
    pub rank: usize,
    /// Makes this rank's communicator for one run (e.g. a clone of an MPI
    /// communicator); called once per run that trains.
    pub communicator: &'a dyn Fn() -> Box<dyn Communicator>,
}

/// [`compare`] with every run trained data-parallel over the ranks of a
/// job. Every rank calls it with the same arguments and its own
/// [`JobRank`]; the output folder must be one that every rank reads.
/// Rank 0 alone writes (runs, `compare.md`, `compare.json`,
/// `compare.svg`); every rank returns the same summaries. `None` is
/// [`compare`].
pub fn compare_with(
    base: &TrainConfig,
    variants: &[Variant],
    seeds: &[u64],
    out_dir: &Path,
    device: Device,
    observer: &mut dyn FnMut(&str) -> Box<dyn Observer>,
    job: Option<JobRank<'_>>,
) -> Result<Vec<(Variant, Vec<RunSummary>)>> {
    let writer = job.as_ref().is_none_or(|j| j.rank == 0);
    if variants.is_empty() || seeds.is_empty() {
        return Err(Error::invalid(
            "compare",
            "needs at least one loss and one seed",
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(seed) = seeds.iter().find(|&&s| !seen.insert(s)) {
        return Err(Error::invalid(
            "compare",
            format!("seed {seed} is listed twice (--seeds)"),
        ));
    }
    let mut folders = BTreeMap::new();
    for variant in variants {
        if let Some(other) = folders.insert(variant.folder(), &variant.label) {
            return Err(Error::invalid(
                "compare",
                format!(
                    "losses `{other}` and `{}` are the same run (folder `{}`) (--losses)",
                    variant.label,
                    variant.folder()
                ),
            ));
        }
    }
    // Every variant must fit the base run, and every run already in
    // `out_dir` must match its settings, before hours go into the others.
    let mut configs = Vec::new();
    for variant in variants {
        for &seed in seeds {
            let mut config = base.clone();
            config.seed = seed;
            variant.apply(&mut config)?;
            let dir: PathBuf = out_dir.join(variant.folder()).join(format!("seed{seed}"));
            check_existing_run(&dir, &config)?;
            configs.push((dir, config));
        }
    }
    // Only now, with every argument checked, is anything written.
    if writer {
        std::fs::create_dir_all(out_dir)
            .map_err(|e| Error::io(out_dir, "creating the folder", e))?;
        crate::checkpoint::remove_stale_temp_files(out_dir)?;
    }
    let mut configs = configs.into_iter();
    let mut results = Vec::new();
    for variant in variants {
        let mut runs = Vec::new();
        for &seed in seeds {
            let Some((dir, config)) = configs.next() else {
                break;
            };
            let report = dir.join(REPORT_JSON);
            let summary = if report.exists() {
                read_summary(&report)?
            } else {
                let mut obs = observer(&format!("{} seed {seed}", variant.label));
                let comm = job.as_ref().map(|j| (j.communicator)());
                let mut trainer = if dir.join(CHECKPOINT_FILE).exists() {
                    Run::resume_with(&dir, device, comm)?
                } else {
                    Run::new_with(config, &dir, device, comm)?
                };
                trainer.run(obs.as_mut())?
            };
            runs.push(summary);
        }
        results.push((variant.clone(), runs));
    }
    if writer {
        write_comparison(out_dir, base, &results)?;
    }
    Ok(results)
}

/// Reads a run's `report.json`.
pub(super) fn read_summary(path: &Path) -> Result<RunSummary> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "reading a run report", e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::CorruptFile {
        path: shown.clone(),
        msg: format!("not JSON: {e}"),
    })?;
    RunSummary::from_json(&v, &shown)
}

/// Writes the comparison table (Markdown + JSON) and chart.
pub fn write_comparison(
    out_dir: &Path,
    base: &TrainConfig,
    results: &[(Variant, Vec<RunSummary>)],
) -> Result<()> {
    let metrics = table_metrics(base.data.kind.is_multi_label());
    let mut md = String::new();
    let seeds = results.first().map_or(0, |(_, r)| r.len());
    let sizes = results
        .first()
        .and_then(|(_, r)| r.first())
        .map_or(String::new(), |r| {
            format!(" {} training / {} test images.", r.train_size, r.test_size)
        });
    let stem = base
        .stem
        .as_deref()
        .map_or(String::new(), |s| format!(" ({s} stem)"));
    let _ = writeln!(
        md,
        "# {} — {}\n\nModel {}{stem}, {} epochs, batch {}, {} {} (lr {}).{sizes}\n",
        base.data.kind.name(),
        if seeds == 1 {
            "1 seed per row".to_string()
        } else {
            format!("{seeds} seeds per row, mean ± std")
        },
        base.model,
        base.epochs,
        base.batch_size,
        base.optim.kind.name(),
        base.optim.schedule.name(),
        base.optim.lr
    );
    let _ = writeln!(md, "| loss | {} |", metrics.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(metrics.len()));
    let mut rows_json = Vec::new();
    let mut series = Vec::new();
    // The run's other test sets (e.g. `test_balanced`), from the first run.
    let sets: Vec<String> = results
        .first()
        .and_then(|(_, r)| r.first())
        .map(|r| r.other_sets.iter().map(|(name, _)| name.clone()).collect())
        .unwrap_or_default();
    let mut set_tables = vec![String::new(); sets.len()];
    for (variant, runs) in results {
        let _ = write!(md, "| {} |", variant.label);
        let mut cells = serde_json::Map::new();
        for m in metrics {
            md.push_str(&metric_cell(runs, m, &mut cells));
        }
        md.push('\n');
        for (set, table) in sets.iter().zip(&mut set_tables) {
            let _ = write!(table, "| {} |", variant.label);
            for m in metrics {
                table.push_str(&metric_cell(runs, &format!("{set}.{m}"), &mut cells));
            }
            table.push('\n');
        }
        rows_json.push(json!({"variant": variant.label, "metrics": cells}));
        // Per-class mean over seeds, in the first run's (head → tail) order.
        if let Some(first) = runs.first() {
            let per_class = |f: fn(&super::report::ClassRow) -> f64| {
                first
                    .rows
                    .iter()
                    .map(|row| {
                        let xs: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| r.rows.iter().find(|x| x.class == row.class).map(f))
                            .collect();
                        mean_std(&xs)
                    })
                    .unzip::<f64, f64, Vec<f64>, Vec<f64>>()
            };
            let (recall, recall_std) = per_class(|r| r.recall);
            // Precision over the seeds that predicted the class at all;
            // `None` where no seed did.
            let (precision, precision_std): (Vec<Option<f64>>, Vec<f64>) = first
                .rows
                .iter()
                .map(|row| {
                    let xs: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.rows.iter().find(|x| x.class == row.class))
                        .filter_map(|x| x.precision)
                        .collect();
                    if xs.is_empty() {
                        (None, 0.0)
                    } else {
                        let (m, s) = mean_std(&xs);
                        (Some(m), s)
                    }
                })
                .unzip();
            series.push(Series {
                label: variant.label.clone(),
                recall,
                precision,
                recall_std: (runs.len() > 1).then_some(recall_std),
                precision_std: (runs.len() > 1).then_some(precision_std),
            });
        }
    }
    let svg = match results.first().and_then(|(_, r)| r.first()) {
        Some(first) => per_class_chart(
            &format!(
                "{}: per-class recall and precision (mean over seeds)",
                base.data.kind.name()
            ),
            &first
                .rows
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>(),
            &first
                .rows
                .iter()
                .map(|r| r.train_positives)
                .collect::<Vec<_>>(),
            &series,
        ),
        None => String::new(),
    };
    for (set, table) in sets.iter().zip(&set_tables) {
        let _ = write!(
            md,
            "\nOn `{set}`:\n\n| loss | {} |\n|---|{}\n{table}",
            metrics.join(" | "),
            "---:|".repeat(metrics.len())
        );
    }
    let (classes_md, classes_json) = super::compare_classes::per_class_table(results);
    if !classes_md.is_empty() {
        let _ = write!(md, "\n{classes_md}");
    }
    // The job that ran the comparison: as many ranks as its runs had.
    let ranks = results
        .iter()
        .flat_map(|(_, runs)| runs)
        .filter_map(|r| r.provenance.as_ref())
        .map(|p| p.ranks)
        .max()
        .unwrap_or(1);
    let provenance = crate::provenance::Provenance::current().with_ranks(ranks);
    let _ = writeln!(md, "\nRun with {}.", provenance.summary_line());
    let json = serde_json::to_string_pretty(&json!({
        "provenance": provenance.to_json(),
        "base_config": base.to_json(),
        "metrics": metrics,
        "rows": rows_json,
        "per_class": classes_json,
    }))
    .unwrap_or_default();
    for (name, text) in [
        ("compare.md", md),
        ("compare.json", json),
        ("compare.svg", svg),
    ] {
        super::write_text(&out_dir.join(name), &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse_and_reject_bad_settings() {
        let v: Variant = "plm(lambda=0,init=balanced)".parse().unwrap();
        let plm = v.loss.plm.unwrap();
        assert_eq!(
            (plm.lambda, plm.init),
            (
                super::super::PlmLambda::Fixed(0.0),
                crate::plm::RhatInit::Balanced
            )
        );
        assert_eq!(v.folder(), "plm_lambda_0_init_balanced_");
        for bad in [
            "plm(lambda)",
            "plm(lambda=0;init=balanced)",
            "plm+",
            "plm(speed=3)",
            "softmax",
            "plm(lambda=-1)",
        ] {
            assert!(bad.parse::<Variant>().is_err(), "{bad}");
        }
        // The old `loss/key=value` form says how to write it now.
        let err = "plm/lambda=0".parse::<Variant>().unwrap_err().to_string();
        assert!(err.contains("plm(init=balanced,lambda=0)"), "{err}");
    }

    #[test]
    fn a_variant_that_does_not_fit_the_data_fails_before_anything_runs() {
        let base = TrainConfig::new(
            super::super::config::DataConfig::new(super::super::config::DatasetKind::MultiMnistLt),
            "resnet8",
            LossSpec::bce(),
        );
        let variants: Vec<Variant> = ["bce", "ce"].iter().map(|v| v.parse().unwrap()).collect();
        let mut started = 0;
        let dir = std::env::temp_dir().join(format!("ferrite-compare-{}", std::process::id()));
        let err = compare(&base, &variants, &[0], &dir, Device::Cpu, &mut |_| {
            started += 1;
            Box::new(super::super::run::Quiet)
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("single-label"), "{err}");
        assert_eq!(started, 0);
        assert!(!dir.exists());
    }

    #[test]
    fn mean_std_uses_the_sample_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
    }
}
