//! A small, dependency-free SVG chart: per-class recall and precision of
//! one or more runs, classes ordered from the most to the least frequent
//! in training, with the training frequency drawn as grey bars on an axis
//! of their own (log scale, right). Series take colours from the
//! colour-blind-safe Okabe–Ito palette and each has its own marker shape
//! and dash pattern; a class a run never predicted has no precision and is
//! marked "no prediction" instead of being drawn at 0.

use super::svg_marks::{dash, escape, marker, PALETTE};
use std::fmt::Write;

/// One line of the chart: a run (or the mean of several seeds).
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Per-class recall, in the chart's class order.
    pub recall: Vec<f64>,
    /// Per-class precision, in the chart's class order; `None` for a class
    /// the run never predicted (precision undefined).
    pub precision: Vec<Option<f64>>,
    /// Optional ± band (standard deviation over seeds) for recall.
    pub recall_std: Option<Vec<f64>>,
    /// Optional ± band for precision.
    pub precision_std: Option<Vec<f64>>,
}

const WIDTH: f64 = 920.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 300.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// Renders the two-panel chart (recall on top, precision below) as an SVG
/// document. `class_names` and `train_counts` are in the plotting order
/// (head → tail); every series must have one value per class.
pub fn per_class_chart(
    title: &str,
    class_names: &[String],
    train_counts: &[usize],
    series: &[Series],
) -> String {
    let n = class_names.len().max(1);
    let height = TOP + 2.0 * PANEL_H + GAP + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let x_of = |i: usize| LEFT + plot_w * (i as f64 + 0.5) / n as f64;
    let max_count = train_counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    // Fraction of the panel height of a training count (log scale, 1 at
    // the bottom, the largest count at the top).
    let count_frac = |c: f64| {
        if max_count > 1.0 {
            (c.max(1.0).ln() / max_count.ln()).clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    for (panel, name) in ["Recall", "Precision"].iter().enumerate() {
        let top = TOP + panel as f64 * (PANEL_H + GAP);
        let y_of = |v: f64| top + PANEL_H * (1.0 - v.clamp(0.0, 1.0));
        for (i, &c) in train_counts.iter().enumerate() {
            let frac = count_frac(c as f64).max(0.02);
            let bw = plot_w / n as f64 * 0.7;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="#e8e8e8"><title>{} training positives</title></rect>"##,
                x_of(i) - bw / 2.0,
                top + PANEL_H * (1.0 - frac),
                PANEL_H * frac,
                c
            );
        }
        // Left axis (the metric) and grid.
        for k in 0..=4 {
            let v = k as f64 / 4.0;
            let y = y_of(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#cccccc" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            );
        }
        count_axis(&mut s, top, LEFT + plot_w, max_count, &count_frac);
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#333333"/><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{name}</text>"##,
            top + PANEL_H / 2.0,
            top + PANEL_H / 2.0
        );
        for (i, label) in class_names.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x_of(i),
                top + PANEL_H + 16.0,
                escape(label)
            );
        }
        for (k, ser) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let values: Vec<Option<f64>> = if panel == 0 {
                ser.recall.iter().copied().map(Some).collect()
            } else {
                ser.precision.clone()
            };
            let std = if panel == 0 {
                &ser.recall_std
            } else {
                &ser.precision_std
            };
            if let Some(std) = std {
                band(&mut s, &values, std, color, &x_of, &y_of);
            }
            // The line breaks where a value is missing.
            for run in values
                .iter()
                .enumerate()
                .collect::<Vec<_>>()
                .split(|(_, v)| v.is_none())
            {
                let points: Vec<String> = run
                    .iter()
                    .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_of(*i), y_of(v))))
                    .collect();
                if points.len() > 1 {
                    let _ = writeln!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{}/>"#,
                        points.join(" "),
                        dash(k)
                    );
                }
            }
            let metric = name.to_lowercase();
            for (i, v) in values.iter().enumerate() {
                let class = escape(class_names.get(i).map(String::as_str).unwrap_or(""));
                let label = escape(&ser.label);
                match v {
                    Some(v) => {
                        let tip = format!("{label}: {class} {metric}: {v:.3}");
                        s.push_str(&marker(k, x_of(i), y_of(*v), color, &tip));
                    }
                    None => {
                        // The words, upright from the panel's floor, one
                        // column per series beside the class's position.
                        let x = x_of(i) + 10.0 * (k as f64 - (series.len() as f64 - 1.0) / 2.0);
                        let y = top + PANEL_H - 4.0;
                        let tip = format!("{label}: {class}: no prediction");
                        let _ = writeln!(
                            s,
                            r#"<text class="no-prediction" x="{x:.1}" y="{y:.1}" transform="rotate(-90 {x:.1} {y:.1})" fill="{color}" font-size="9" dominant-baseline="middle">no prediction<title>{tip}</title></text>"#
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">class, most → least frequent in training (grey bars: training positives, right axis, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        height - 12.0
    );
    legend(&mut s, series);
    s.push_str("</svg>\n");
    s
}

/// The right-hand axis of the training counts: ticks at the powers of ten
/// up to `max_count` (and at `max_count`), on the log scale of the bars.
fn count_axis(s: &mut String, top: f64, x: f64, max_count: f64, frac: &dyn Fn(f64) -> f64) {
    let mut ticks = vec![1.0];
    let mut t = 10.0;
    while t < max_count {
        ticks.push(t);
        t *= 10.0;
    }
    if max_count > 1.0 {
        ticks.push(max_count);
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#999999"/>"##,
        top + PANEL_H
    );
    for &c in &ticks {
        let y = top + PANEL_H * (1.0 - frac(c));
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#999999"/><text x="{:.1}" y="{:.1}" fill="#777777">{c}</text>"##,
            x + 4.0,
            x + 6.0,
            y + 4.0
        );
    }
    let cx = x + 48.0;
    let cy = top + PANEL_H / 2.0;
    let _ = writeln!(
        s,
        r##"<text x="{cx:.1}" y="{cy:.1}" transform="rotate(90 {cx:.1} {cy:.1})" text-anchor="middle" fill="#777777">training positives</text>"##
    );
}

/// The ± band of one series (missing values leave gaps in the band).
fn band(
    s: &mut String,
    values: &[Option<f64>],
    std: &[f64],
    color: &str,
    x_of: &dyn Fn(usize) -> f64,
    y_of: &dyn Fn(f64) -> f64,
) {
    let known: Vec<(usize, f64, f64)> = values
        .iter()
        .zip(std)
        .enumerate()
        .filter_map(|(i, (v, e))| v.map(|v| (i, v, *e)))
        .collect();
    if known.len() < 2 {
        return;
    }
    let upper = known
        .iter()
        .map(|&(i, v, e)| format!("{:.1},{:.1}", x_of(i), y_of(v + e)));
    let lower = known
        .iter()
        .rev()
        .map(|&(i, v, e)| format!("{:.1},{:.1}", x_of(i), y_of(v - e)));
    let points: Vec<String> = upper.chain(lower).collect();
    let _ = writeln!(
        s,
        r#"<polygon points="{}" fill="{color}" fill-opacity="0.12" stroke="none"/>"#,
        points.join(" ")
    );
}

/// One legend entry per series: its line, dash pattern and marker.
fn legend(s: &mut String, series: &[Series]) {
    for (k, ser) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let y = TOP + 10.0 + 20.0 * k as f64;
        let x = WIDTH - RIGHT + 70.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"{}/>"#,
            x + 28.0,
            dash(k)
        );
        s.push_str(&marker(k, x + 14.0, y, color, &escape(&ser.label)));
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 34.0,
            y + 4.0,
            escape(&ser.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![
            Series {
                label: "bce".into(),
                recall: vec![1.0, 0.5, 0.0],
                precision: vec![Some(0.9), Some(0.8), None],
                recall_std: None,
                precision_std: None,
            },
            Series {
                label: "plm<adaptive>".into(),
                recall: vec![1.0, 0.6, 0.2],
                precision: vec![Some(0.95), Some(0.8), Some(0.5)],
                recall_std: Some(vec![0.0, 0.1, 0.1]),
                precision_std: Some(vec![0.0, 0.1, 0.1]),
            },
        ]
    }

    #[test]
    fn chart_has_one_marker_per_value_and_escapes_text() {
        let names: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let svg = per_class_chart("a & b", &names, &[100, 10, 1], &series());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // 2 series × (3 recalls + 3 precisions) − 1 missing, + 2 in the legend.
        assert_eq!(svg.matches(r#"class="marker""#).count(), 11 + 2);
        assert_eq!(svg.matches("<polygon points").count(), 2);
        assert!(svg.contains("a &amp; b") && svg.contains("plm&lt;adaptive&gt;"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn elements_are_balanced_and_attributes_quoted() {
        let names: Vec<String> = (0..3).map(|c| format!("class {c}")).collect();
        let svg = per_class_chart("t", &names, &[1000, 10, 0], &series());
        for tag in ["svg", "text", "title", "rect", "circle", "polygon", "path"] {
            let pieces: Vec<&str> = svg.split(&format!("<{tag}")).skip(1).collect();
            let opened: Vec<&&str> = pieces
                .iter()
                .filter(|rest| rest.starts_with(' ') || rest.starts_with('>'))
                .collect();
            let self_closed = opened
                .iter()
                .filter(|rest| rest[..rest.find('>').unwrap()].ends_with('/'))
                .count();
            let closed = svg.matches(&format!("</{tag}>")).count();
            assert_eq!(opened.len(), closed + self_closed, "<{tag}> is unbalanced");
        }
        assert_eq!(svg.matches('"').count() % 2, 0);
    }

    #[test]
    fn a_never_predicted_class_says_no_prediction_and_is_not_drawn_at_zero() {
        let names: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let svg = per_class_chart("t", &names, &[100, 10, 1], &series()[..1]);
        assert_eq!(svg.matches("no prediction<title>").count(), 1);
        assert!(svg.contains("bce: 2: no prediction"));
        assert!(!svg.contains("bce: 2 precision"));
    }

    #[test]
    fn series_use_the_okabe_ito_palette_and_distinct_markers() {
        let names: Vec<String> = (0..2).map(|c| c.to_string()).collect();
        let many: Vec<Series> = (0..4)
            .map(|k| Series {
                label: format!("s{k}"),
                recall: vec![0.5, 0.5],
                precision: vec![Some(0.5), Some(0.5)],
                recall_std: None,
                precision_std: None,
            })
            .collect();
        let svg = per_class_chart("t", &names, &[2, 1], &many);
        for color in ["#0072B2", "#D55E00", "#009E73", "#CC79A7"] {
            assert!(svg.contains(color), "{color} missing");
        }
        for shape in ["circle", "square", "triangle", "diamond"] {
            assert!(svg.contains(&format!("data-shape=\"{shape}\"")), "{shape}");
        }
        // The count axis is labelled on its own.
        assert!(svg.contains("training positives</text>"));
    }
}
