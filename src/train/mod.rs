//! Training runs end to end, as the `ferrite train / eval / compare`
//! commands use them and as Rust programs can embed them:
//!
//! - [`config`]: every choice of a run, with names and a JSON form;
//! - [`LossSpec`]: the objective in one grammar (`plm+focal(gamma=2)`);
//! - [`datasets`], [`model`], [`objective`], [`optimizer`]: building the
//!   pieces a configuration names;
//! - [`trainer`]: the generic [`Trainer`] of any [`Module`](crate::nn::Module)
//!   with a loss closure or a [`Criterion`](trainer::Criterion): validation
//!   metrics, best checkpoint, early stopping, JSONL log, atomic
//!   checkpoints, exact resume, progress callbacks;
//! - [`run`]: a configured [`Run`] in an output folder (the ResNet,
//!   optimizer, objective and data its configuration names, PLM updates,
//!   test-set evaluation, reports), trained by the generic trainer, with
//!   [`run_criterion`] making the run's objective a criterion;
//! - [`evaluation`], [`report`], [`svg`], [`curve`]: metrics and the files
//!   a run leaves behind (`report.md`, `report.json`, `per_class.svg`,
//!   `learning_curve.svg`);
//! - [`compare`]: several objectives × seeds in one table and chart.
//!
//! ```no_run
//! use ferrite::train::{config::*, run::{Run, Quiet}};
//! let mut config = TrainConfig::new(DataConfig::new(DatasetKind::MultiMnistLt), "resnet8", "plm".parse()?);
//! config.epochs = 5;
//! let summary = Run::new(config, "runs/plm")?.run(&mut Quiet)?;
//! println!("{}", summary.markdown());
//! # Ok::<(), ferrite::Error>(())
//! ```

pub mod compare;
mod compare_classes;
mod compare_reuse;
pub mod config;
pub mod curve;
pub mod datasets;
pub mod evaluation;
mod loss_log;
pub mod loss_spec;
pub mod model;
pub mod objective;
pub mod optimizer;
pub mod plm_chart;
pub mod report;
pub mod run;
pub mod run_criterion;
mod run_metric;
mod scoring;
pub mod svg;
mod svg_marks;
pub mod trainer;

pub use config::{DataConfig, DatasetKind, TestSet, TrainConfig};
pub use loss_spec::{BaseLoss, LossSpec, PlmLambda, PlmSpec};
pub use run::Run;
pub use trainer::{Observer, Quiet, Trainer};

/// Writes `text` to `path` atomically (see [`crate::checkpoint::write_atomic`]).
pub(crate) fn write_text(path: &std::path::Path, text: &str) -> crate::Result<()> {
    crate::checkpoint::write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| crate::Error::io(path, "writing", e))
    })
}
