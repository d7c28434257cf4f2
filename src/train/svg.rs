//! A small, dependency-free SVG chart: per-class recall and precision of
//! one or more runs, classes ordered from the most to the least frequent
//! in training, with the training frequency drawn as grey bars (log scale).

use std::fmt::Write;

/// One line of the chart: a run (or the mean of several seeds).
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Per-class recall, in the chart's class order.
    pub recall: Vec<f64>,
    /// Per-class precision, in the chart's class order.
    pub precision: Vec<f64>,
    /// Optional ± band (standard deviation over seeds) for recall.
    pub recall_std: Option<Vec<f64>>,
    /// Optional ± band for precision.
    pub precision_std: Option<Vec<f64>>,
}

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

const WIDTH: f64 = 860.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 250.0;
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
    for (panel, name) in ["Recall", "Precision"].iter().enumerate() {
        let top = TOP + panel as f64 * (PANEL_H + GAP);
        let y_of = |v: f64| top + PANEL_H * (1.0 - v.clamp(0.0, 1.0));
        // Training frequency bars, log scale: 1 at the bottom, max at the top.
        for (i, &c) in train_counts.iter().enumerate() {
            let frac = if max_count > 1.0 {
                ((c.max(1) as f64).ln() / max_count.ln()).clamp(0.02, 1.0)
            } else {
                1.0
            };
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
        // Axes and grid.
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
            let (values, std) = if panel == 0 {
                (&ser.recall, &ser.recall_std)
            } else {
                (&ser.precision, &ser.precision_std)
            };
            if let Some(std) = std {
                let upper: Vec<String> = values
                    .iter()
                    .zip(std)
                    .enumerate()
                    .map(|(i, (v, e))| format!("{:.1},{:.1}", x_of(i), y_of(v + e)))
                    .collect();
                let lower: Vec<String> = values
                    .iter()
                    .zip(std)
                    .enumerate()
                    .rev()
                    .map(|(i, (v, e))| format!("{:.1},{:.1}", x_of(i), y_of(v - e)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polygon points="{} {}" fill="{color}" fill-opacity="0.12" stroke="none"/>"#,
                    upper.join(" "),
                    lower.join(" ")
                );
            }
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| format!("{:.1},{:.1}", x_of(i), y_of(v)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                points.join(" ")
            );
            for (i, &v) in values.iter().enumerate() {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{}: {} {}: {v:.3}</title></circle>"#,
                    x_of(i),
                    y_of(v),
                    escape(&ser.label),
                    escape(class_names.get(i).map(String::as_str).unwrap_or("")),
                    name.to_lowercase()
                );
            }
        }
    }
    // Axis caption and legend.
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">class, most → least frequent in training (grey: training positives, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        height - 12.0
    );
    for (k, ser) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let y = TOP + 10.0 + 20.0 * k as f64;
        let x = WIDTH - RIGHT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            x + 28.0,
            y + 4.0,
            escape(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Escapes the XML special characters of `text`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_marker_per_class_and_series_and_escapes_text() {
        let names: Vec<String> = (0..3).map(|c| c.to_string()).collect();
        let series = vec![
            Series {
                label: "bce".into(),
                recall: vec![1.0, 0.5, 0.0],
                precision: vec![0.9, 0.8, 0.7],
                recall_std: None,
                precision_std: None,
            },
            Series {
                label: "plm<adaptive>".into(),
                recall: vec![1.0, 0.6, 0.2],
                precision: vec![0.95, 0.8, 0.5],
                recall_std: Some(vec![0.0, 0.1, 0.1]),
                precision_std: Some(vec![0.0, 0.1, 0.1]),
            },
        ];
        let svg = per_class_chart("a & b", &names, &[100, 10, 1], &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2 * 2 * 3);
        assert_eq!(svg.matches("<polygon").count(), 2);
        assert!(svg.contains("a &amp; b") && svg.contains("plm&lt;adaptive&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
