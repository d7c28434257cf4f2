//! The spread of repeated timings: every benchmark row reports the
//! minimum, median and maximum of its runs, so that a noisy measurement
//! shows itself.

use serde_json::{json, Value};
use std::time::Duration;

/// Minimum, median and maximum wall time of one run over repetitions.
///
/// ```
/// use ferrite::bench::Timing;
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// let t = Timing::from_samples(vec![ms(3), ms(1), ms(2), ms(9)]).unwrap();
/// assert_eq!((t.min, t.median, t.max, t.runs), (ms(1), ms(3), ms(9), 4));
/// assert_eq!(t.to_json()["median_ms"], 3.0);
/// assert!(Timing::from_samples(Vec::new()).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Fastest run.
    pub min: Duration,
    /// Median run (the upper one of an even count): what rates use.
    pub median: Duration,
    /// Slowest run.
    pub max: Duration,
    /// Number of timed runs.
    pub runs: usize,
}

impl Timing {
    /// The spread of `samples` (any order); `None` when there are none.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort();
        Some(Timing {
            min: *samples.first()?,
            median: samples[samples.len() / 2],
            max: *samples.last()?,
            runs: samples.len(),
        })
    }

    /// A single measurement (min = median = max).
    pub fn single(t: Duration) -> Self {
        Timing {
            min: t,
            median: t,
            max: t,
            runs: 1,
        }
    }

    /// `min_ms`, `median_ms`, `max_ms` and `runs` as JSON fields.
    pub fn to_json(&self) -> Value {
        json!({
            "min_ms": ms(self.min),
            "median_ms": ms(self.median),
            "max_ms": ms(self.max),
            "runs": self.runs,
        })
    }

    /// Adds the fields of [`to_json`](Self::to_json) to the JSON object
    /// `row`.
    pub fn extend_json(&self, row: &mut Value) {
        if let (Some(row), Value::Object(fields)) = (row.as_object_mut(), self.to_json()) {
            row.extend(fields);
        }
    }

    /// The three times as table cells, in milliseconds with `decimals`
    /// digits: `min | median | max`.
    pub fn cells(&self, decimals: usize) -> String {
        format!(
            "{:.decimals$} ms | {:.decimals$} ms | {:.decimals$} ms",
            ms(self.min),
            ms(self.median),
            ms(self.max)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
