//! Training runs end to end, as the `ferrite train / eval / compare`
//! commands use them and as Rust programs can embed them:
//!
//! - [`config`]: every choice of a run, with names and a JSON form;
//! - [`datasets`], [`model`], [`objective`], [`optimizer`]: building the
//!   pieces a configuration names;
//! - [`run`]: the [`Trainer`] (epochs, PLM updates, evaluation, JSONL log,
//!   atomic checkpoints, `resume`);
//! - [`evaluation`], [`report`], [`svg`], [`curve`]: metrics and the files
//!   a run leaves behind (`report.md`, `report.json`, `per_class.svg`,
//!   `learning_curve.svg`);
//! - [`compare`]: several objectives × seeds in one table and chart.
//!
//! ```no_run
//! use ferrite::train::{config::*, run::{Trainer, Quiet}};
//! let mut config = TrainConfig::new(DataConfig::new(DatasetKind::MultiMnistLt), "resnet8", LossKind::Plm);
//! config.epochs = 5;
//! let summary = Trainer::new(config, "runs/plm")?.run(&mut Quiet)?;
//! println!("{}", summary.markdown());
//! # Ok::<(), ferrite::Error>(())
//! ```

pub mod compare;
pub mod config;
pub mod curve;
pub mod datasets;
pub mod evaluation;
mod loss_log;
pub mod model;
pub mod objective;
pub mod optimizer;
pub mod report;
pub mod run;
mod scoring;
pub mod svg;
mod svg_marks;

pub use config::{DataConfig, DatasetKind, LossKind, TrainConfig};
pub use run::{Observer, Quiet, Trainer};

/// Writes `text` to `path` atomically (see [`crate::checkpoint::write_atomic`]).
pub(crate) fn write_text(path: &std::path::Path, text: &str) -> crate::Result<()> {
    crate::checkpoint::write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| crate::Error::io(path, "writing", e))
    })
}
