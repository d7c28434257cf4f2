//! What PLM did to each class over a run: log₁₀(r̂/r) per class against
//! the epoch, read back from the run's `log.jsonl` and drawn as
//! `plm_rhat.svg` next to the per-class chart. Above 0 a class's positives
//! are favoured (its negatives masked), below 0 its negatives; the line
//! at 0 is the data's own ratio.

use super::svg_marks::{dash, escape, marker, PALETTE};
use serde_json::Value;
use std::fmt::Write;

/// r̂/r per class for each logged PLM epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RhatTrajectory {
    /// `(epoch, r̂_c / r_c for every class)`, in log order.
    pub epochs: Vec<(usize, Vec<f64>)>,
    /// The λ the run used (from the first PLM record).
    pub lambda: Option<f64>,
}

impl RhatTrajectory {
    /// Reads the PLM records (`plm.rhat`, `plm.ratio`, `plm.lambda`) of a
    /// JSON Lines log; lines without them, or unreadable, are left out.
    ///
    /// ```
    /// use ferrite::train::plm_chart::RhatTrajectory;
    /// let log = r#"{"epoch":1,"plm":{"lambda":0.5,"rhat":[1.0,2.0],"ratio":[1.0,0.5]}}"#;
    /// let t = RhatTrajectory::parse(log);
    /// assert_eq!(t.epochs, vec![(1, vec![1.0, 4.0])]);
    /// assert_eq!(t.lambda, Some(0.5));
    /// ```
    pub fn parse(text: &str) -> Self {
        let mut out = RhatTrajectory::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let floats = |key: &str| -> Option<Vec<f64>> {
                v["plm"][key]
                    .as_array()?
                    .iter()
                    .map(Value::as_f64)
                    .collect()
            };
            let (Some(epoch), Some(rhat), Some(ratio)) =
                (v["epoch"].as_u64(), floats("rhat"), floats("ratio"))
            else {
                continue;
            };
            if rhat.len() != ratio.len() {
                continue;
            }
            out.lambda = out.lambda.or(v["plm"]["lambda"].as_f64());
            let relative = rhat.iter().zip(&ratio).map(|(a, b)| a / b).collect();
            out.epochs.push((epoch as usize, relative));
        }
        out
    }

    /// The chart, one line per class named by `names`; `None` without any
    /// PLM epoch.
    pub fn svg(&self, title: &str, names: &[String]) -> Option<String> {
        const W: f64 = 860.0;
        const H: f64 = 380.0;
        const L: f64 = 70.0;
        const T: f64 = 45.0;
        const PW: f64 = 620.0;
        const PH: f64 = 280.0;
        let classes = self.epochs.first()?.1.len();
        let logs: Vec<(usize, Vec<Option<f64>>)> = self
            .epochs
            .iter()
            .map(|(e, xs)| {
                let ys = xs
                    .iter()
                    .map(|x| (x.is_finite() && *x > 0.0).then(|| x.log10()))
                    .collect();
                (*e, ys)
            })
            .collect();
        let reach = logs
            .iter()
            .flat_map(|(_, ys)| ys.iter().flatten())
            .fold(0.5f64, |m, y| m.max(y.abs()));
        let top = (reach * 4.0).ceil() / 4.0;
        let (first, last) = (logs[0].0 as f64, logs[logs.len() - 1].0 as f64);
        let x_of = |e: usize| L + PW * (e as f64 - first) / (last - first).max(1.0);
        let y_of = |y: f64| T + PH * (0.5 - y / (2.0 * top));
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let lambda = self.lambda.map_or(String::new(), |l| format!(" (λ = {l})"));
        let _ = writeln!(
            s,
            r##"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{}{}</text><rect x="{L}" y="{T}" width="{PW}" height="{PH}" fill="none" stroke="#333333"/>"##,
            W / 2.0,
            escape(title),
            escape(&lambda)
        );
        for i in -2..=2 {
            let y = top * f64::from(i) / 2.0;
            let (stroke, extra) = if i == 0 {
                ("#333333", "")
            } else {
                ("#cccccc", r#" stroke-dasharray="2,3""#)
            };
            let _ = writeln!(
                s,
                r#"<line x1="{L}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="{stroke}"{extra}/><text x="{:.1}" y="{:.1}" text-anchor="end">{y:+.2}</text>"#,
                L + PW,
                L - 6.0,
                y_of(y) + 4.0,
                py = y_of(y),
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">epoch ({first} … {last})</text><text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">log10(r̂ / r)</text>"#,
            L + PW / 2.0,
            T + PH + 22.0,
            T + PH / 2.0,
            T + PH / 2.0
        );
        for c in 0..classes {
            let color = PALETTE[c % PALETTE.len()];
            let k = c; // marker and dash cycle with the class
            let name = names.get(c).cloned().unwrap_or_else(|| c.to_string());
            let points: Vec<(usize, f64)> = logs
                .iter()
                .filter_map(|(e, ys)| ys.get(c).copied().flatten().map(|y| (*e, y)))
                .collect();
            let line: Vec<String> = points
                .iter()
                .map(|&(e, y)| format!("{:.1},{:.1}", x_of(e), y_of(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"{}/>"#,
                line.join(" "),
                dash(k / PALETTE.len() + c)
            );
            for &(e, y) in &points {
                let tip = format!("{} epoch {e}: r̂/r = {:.3}", escape(&name), 10f64.powf(y));
                s.push_str(&marker(k, x_of(e), y_of(y), color, &tip));
            }
            let ly = T + 14.0 + 18.0 * c as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{}/>{}<text x="{:.1}" y="{:.1}">{}</text>"#,
                L + PW + 14.0,
                L + PW + 40.0,
                dash(k / PALETTE.len() + c),
                marker(k, L + PW + 27.0, ly, color, &escape(&name)),
                L + PW + 46.0,
                ly + 4.0,
                escape(&name)
            );
        }
        s.push_str("</svg>\n");
        Some(s)
    }
}
