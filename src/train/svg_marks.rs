//! What the charts share: the colour-blind-safe palette, a marker shape
//! and a dash pattern per series, and XML escaping.

/// The Okabe–Ito palette (safe for the common colour-vision deficiencies),
/// ordered for contrast on white; yellow, the faintest, comes last.
pub const PALETTE: &[&str] = &[
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Marker shapes, one per series (cycled after the last).
const SHAPES: &[&str] = &[
    "circle", "square", "triangle", "diamond", "cross", "plus", "down",
];

/// A `stroke-dasharray` attribute for series `k` (none for the first), so
/// lines differ without colour too.
pub fn dash(k: usize) -> &'static str {
    const DASHES: &[&str] = &[
        "",
        r#" stroke-dasharray="6,3""#,
        r#" stroke-dasharray="2,2""#,
        r#" stroke-dasharray="8,3,2,3""#,
    ];
    DASHES[k % DASHES.len()]
}

/// The marker of series `k` at `(x, y)` in `color`, with a tooltip
/// (`tip`, already escaped). Every marker has `class="marker"` and a
/// `data-shape` naming its shape.
pub fn marker(k: usize, x: f64, y: f64, color: &str, tip: &str) -> String {
    let shape = SHAPES[k % SHAPES.len()];
    let r = 3.5;
    let head = format!(r#"class="marker" data-shape="{shape}""#);
    let body = match shape {
        "circle" => format!(r#"<circle {head} cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}">"#),
        "square" => format!(
            r#"<rect {head} x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}">"#,
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        "cross" | "plus" => {
            let d = if shape == "cross" {
                format!(
                    "M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}",
                    x - r,
                    y - r,
                    x + r,
                    y + r,
                    x - r,
                    y + r,
                    x + r,
                    y - r
                )
            } else {
                format!(
                    "M{:.1},{y:.1}L{:.1},{y:.1}M{x:.1},{:.1}L{x:.1},{:.1}",
                    x - r - 1.0,
                    x + r + 1.0,
                    y - r - 1.0,
                    y + r + 1.0
                )
            };
            format!(r#"<path {head} d="{d}" stroke="{color}" stroke-width="2" fill="none">"#)
        }
        _ => {
            let r = r + 1.0;
            let points = match shape {
                "triangle" => [(0.0, -r), (r, r * 0.8), (-r, r * 0.8)].to_vec(),
                "down" => [(0.0, r), (r, -r * 0.8), (-r, -r * 0.8)].to_vec(),
                _ => [(0.0, -r), (r, 0.0), (0.0, r), (-r, 0.0)].to_vec(),
            };
            let points: Vec<String> = points
                .iter()
                .map(|(dx, dy)| format!("{:.1},{:.1}", x + dx, y + dy))
                .collect();
            format!(
                r#"<polygon {head} points="{}" fill="{color}">"#,
                points.join(" ")
            )
        }
    };
    let tag = &body[1..body.find(' ').unwrap_or(1)];
    format!("{body}<title>{tip}</title></{tag}>\n")
}

/// Escapes the XML special characters of `text`.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
