//! The learning curve of a run: training loss and the main test metric per
//! epoch, read back from the run's `log.jsonl` and drawn as an SVG chart
//! (`learning_curve.svg`, next to `per_class.svg`). The log may be missing
//! or cut short (a run that was stopped): what can be read is drawn, and the
//! chart says how many lines could not be.

use super::svg_marks::{dash, escape, marker, PALETTE};
use crate::error::{Error, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// The metrics the chart prefers, in order, when the log has several: the
/// single-label top-1 accuracy, then the multi-label mAP and macro F1.
const MAIN_METRICS: &[&str] = &["top1", "map", "macro_f1", "cf1"];

/// One epoch of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPoint {
    /// Epoch number (1-based, as logged).
    pub epoch: usize,
    /// Mean training loss of the epoch, when logged.
    pub train_loss: Option<f64>,
    /// The main test metric after the epoch, when logged.
    pub metric: Option<f64>,
}

/// The per-epoch records of a run's log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LearningCurve {
    /// The epochs that could be read, in log order.
    pub points: Vec<EpochPoint>,
    /// The name of the metric in [`EpochPoint::metric`] (`None` when no
    /// epoch logged one).
    pub metric: Option<String>,
    /// Non-empty lines that were not an epoch record (garbled, or cut off
    /// when a run stopped mid-write).
    pub skipped_lines: usize,
}

impl LearningCurve {
    /// Reads the curve from JSON Lines text: one object per epoch with
    /// `epoch`, `train_loss` and the test metrics under `test`.
    ///
    /// ```
    /// use ferrite::train::curve::LearningCurve;
    /// let log = "{\"epoch\":1,\"train_loss\":0.9,\"test\":{\"top1\":0.5}}\n\
    ///            {\"epoch\":2,\"train_loss\":0.4,\"test\":{\"top1\":0.8}}\n{\"epoch\":3,\"tra";
    /// let curve = LearningCurve::parse(log);
    /// assert_eq!(curve.points.len(), 2);
    /// assert_eq!(curve.metric.as_deref(), Some("top1"));
    /// assert_eq!(curve.points[1].metric, Some(0.8));
    /// assert_eq!(curve.skipped_lines, 1);
    /// ```
    pub fn parse(text: &str) -> Self {
        let mut records = Vec::new();
        let mut skipped_lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v["epoch"].as_u64().is_some() => records.push(v),
                _ => skipped_lines += 1,
            }
        }
        let metric = MAIN_METRICS
            .iter()
            .find(|m| records.iter().any(|r| r["test"][**m].is_number()))
            .map(|m| m.to_string())
            .or_else(|| {
                records.iter().find_map(|r| {
                    r["test"]
                        .as_object()?
                        .iter()
                        .find(|(_, v)| v.is_number())
                        .map(|(k, _)| k.clone())
                })
            });
        let points = records
            .iter()
            .map(|r| EpochPoint {
                epoch: r["epoch"].as_u64().unwrap_or(0) as usize,
                train_loss: r["train_loss"].as_f64().filter(|x| x.is_finite()),
                metric: metric
                    .as_deref()
                    .and_then(|m| r["test"][m].as_f64())
                    .filter(|x| x.is_finite()),
            })
            .collect();
        LearningCurve {
            points,
            metric,
            skipped_lines,
        }
    }

    /// Reads the curve from the log file at `path`; a missing file is an
    /// empty curve, other read errors are errors.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::parse(&String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(path, "reading", e)),
        }
    }

    /// The chart: training loss (left panel, its own scale from 0) and the
    /// main metric (right panel, 0 to 1) against the epoch. With no epoch
    /// to draw, the chart says so.
    pub fn svg(&self, title: &str) -> String {
        const W: f64 = 860.0;
        const H: f64 = 320.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            W / 2.0,
            escape(title)
        );
        if self.skipped_lines > 0 {
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#D55E00">{} line(s) of the log could not be read (garbled or cut off)</text>"##,
                W / 2.0,
                H - 8.0,
                self.skipped_lines
            );
        }
        if self.points.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">no epochs logged yet</text>"#,
                W / 2.0,
                H / 2.0
            );
            s.push_str("</svg>\n");
            return s;
        }
        let loss: Vec<(usize, Option<f64>)> = self
            .points
            .iter()
            .map(|p| (p.epoch, p.train_loss))
            .collect();
        let metric: Vec<(usize, Option<f64>)> =
            self.points.iter().map(|p| (p.epoch, p.metric)).collect();
        let max_loss = loss
            .iter()
            .filter_map(|p| p.1)
            .fold(0.0f64, f64::max)
            .max(1e-12);
        let name = self.metric.as_deref().unwrap_or("metric");
        panel(&mut s, 60.0, "training loss", &loss, max_loss, 0);
        panel(&mut s, 480.0, &format!("test {name}"), &metric, 1.0, 1);
        s.push_str("</svg>\n");
        s
    }
}

/// One panel at `left`: `values` against the epoch on a 0..=`top` scale.
fn panel(
    s: &mut String,
    left: f64,
    name: &str,
    values: &[(usize, Option<f64>)],
    top: f64,
    k: usize,
) {
    const PW: f64 = 340.0;
    const PH: f64 = 220.0;
    const Y0: f64 = 45.0;
    let last = values.iter().map(|v| v.0).max().unwrap_or(1).max(1) as f64;
    let first = values.iter().map(|v| v.0).min().unwrap_or(1) as f64;
    let span = (last - first).max(1.0);
    let x_of = |e: usize| left + PW * (e as f64 - first) / span;
    let y_of = |v: f64| Y0 + PH * (1.0 - (v / top).clamp(0.0, 1.0));
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{Y0}" width="{PW}" height="{PH}" fill="none" stroke="#333333"/><text x="{}" y="{}" text-anchor="middle">{}</text>"##,
        left + PW / 2.0,
        Y0 - 6.0,
        escape(name)
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#cccccc" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + PW,
            left - 6.0,
            y + 4.0,
            format_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">epoch</text><text x="{left}" y="{}" text-anchor="middle">{first}</text><text x="{}" y="{}" text-anchor="middle">{last}</text>"#,
        left + PW / 2.0,
        Y0 + PH + 30.0,
        Y0 + PH + 16.0,
        left + PW,
        Y0 + PH + 16.0
    );
    let color = PALETTE[k % PALETTE.len()];
    let points: Vec<String> = values
        .iter()
        .filter_map(|(e, v)| v.map(|v| format!("{:.1},{:.1}", x_of(*e), y_of(v))))
        .collect();
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{}/>"#,
        points.join(" "),
        dash(k)
    );
    for (e, v) in values {
        if let Some(v) = v {
            let tip = format!("epoch {e}: {} {v:.4}", escape(name));
            s.push_str(&marker(k, x_of(*e), y_of(*v), color, &tip));
        }
    }
}

/// A tick label with about three significant digits.
fn format_tick(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_log_gives_one_point_per_epoch() {
        let dir = std::env::temp_dir().join(format!("ferrite-curve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        let mut text = String::new();
        for e in 1..=3 {
            text.push_str(&format!(
                "{{\"epoch\":{e},\"lr\":0.1,\"train_loss\":{},\"test\":{{\"map\":{},\"macro_f1\":0.1}}}}\n",
                1.0 / e as f64,
                0.2 * e as f64
            ));
        }
        std::fs::write(&path, text).unwrap();
        let curve = LearningCurve::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(curve.metric.as_deref(), Some("map"));
        assert_eq!(curve.skipped_lines, 0);
        let epochs: Vec<usize> = curve.points.iter().map(|p| p.epoch).collect();
        assert_eq!(epochs, [1, 2, 3]);
        assert_eq!(curve.points[2].train_loss, Some(1.0 / 3.0));
        let svg = curve.svg("run");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="marker""#).count(), 6);
        assert!(svg.contains("test map") && svg.contains("training loss"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn a_missing_or_garbled_log_gives_a_clear_chart_not_a_panic() {
        let missing = LearningCurve::read(Path::new("/nonexistent/ferrite/log.jsonl")).unwrap();
        assert!(missing.points.is_empty());
        assert!(missing.svg("t").contains("no epochs logged yet"));

        let garbled = LearningCurve::parse("not json\n{\"epoch\":1,\"train_loss\":NaN}\n\u{0}\n");
        assert!(garbled.points.is_empty());
        assert_eq!(garbled.skipped_lines, 3);
        let svg = garbled.svg("t");
        assert!(svg.contains("3 line(s) of the log could not be read"));

        // An epoch without a metric, or with a null loss, still plots the rest.
        let partial = LearningCurve::parse(
            "{\"epoch\":1,\"train_loss\":null}\n{\"epoch\":2,\"train_loss\":0.5,\"test\":{\"top1\":0.7}}\n{\"epo",
        );
        assert_eq!(partial.points.len(), 2);
        assert_eq!(partial.points[0].train_loss, None);
        assert_eq!(partial.points[1].metric, Some(0.7));
        assert_eq!(partial.skipped_lines, 1);
        let svg = partial.svg("t");
        assert_eq!(svg.matches(r#"class="marker""#).count(), 2);
    }
}
