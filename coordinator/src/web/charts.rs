//! Line charts drawn as inline SVG on the server: no chart library, no script, nothing
//! fetched. One series per region (and `all`), rounds on x; every point is a `<circle
//! class="pt">` carrying its series, round and value, so that a reader (or a test) can read
//! the numbers back, and a `<title>` that the browser shows on hover.

use super::pages::escape;
use super::runs::Chart;
use std::fmt::Write;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;

/// Series colours, in order; `all` is always the first series and drawn dark.
const PALETTE: [&str; 8] = ["#1f2937", "#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d"];

/// The chart as a `<figure>`: the SVG and its legend, or the note saying why it is empty.
pub fn render(chart: &Chart) -> String {
    let points: usize = chart.series.iter().map(|s| s.points.len()).sum();
    let mut out = format!(
        "<figure class=\"chart\" id=\"chart-{}\" data-points=\"{points}\"><figcaption>{}</figcaption>",
        chart.id,
        escape(chart.title)
    );
    if points == 0 {
        let why = chart.note.as_deref().unwrap_or("no completed rounds yet");
        let _ = write!(out, "<p class=\"empty\">{}</p></figure>", escape(why));
        return out;
    }
    let all = chart.series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1) = (u32::MAX, 0u32);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        (x0, x1) = (x0.min(x), x1.max(x));
        if y.is_finite() {
            (y0, y1) = (y0.min(y), y1.max(y));
        }
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let pad = (y1 - y0) * 0.08;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: u32| {
        if x1 == x0 {
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (x - x0) as f64 / (x1 - x0) as f64 * (WIDTH - LEFT - RIGHT)
        }
    };
    let py = |y: f64| TOP + (y1 - y.clamp(y0, y1)) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        escape(chart.title)
    );
    // Axes, four y ticks, and x ticks at rounds (at most eight labels).
    let bottom = HEIGHT - BOTTOM;
    let _ = write!(out, "<path class=\"axis\" d=\"M{LEFT} {TOP}V{bottom}H{}\"/>", WIDTH - RIGHT);
    for i in 0..=4 {
        let v = y0 + (y1 - y0) * i as f64 / 4.0;
        let y = py(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            tick(v)
        );
    }
    let step = ((x1 - x0) / 8 + 1).max(1);
    let mut x = x0;
    while x <= x1 {
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>",
            px(x),
            bottom + 16.0
        );
        x += step;
    }
    for (i, s) in chart.series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let colour = PALETTE[i % PALETTE.len()];
        let name = escape(&s.name);
        let path: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = write!(
            out,
            "<polyline class=\"line\" data-series=\"{name}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = write!(
                out,
                "<circle class=\"pt\" data-series=\"{name}\" data-round=\"{x}\" data-value=\"{y}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{name}, round {x}: {}</title></circle>",
                px(x),
                py(y),
                tick(y)
            );
        }
    }
    out.push_str("</svg><ul class=\"legend\">");
    for (i, s) in chart.series.iter().enumerate().filter(|(_, s)| !s.points.is_empty()) {
        let _ = write!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
            PALETTE[i % PALETTE.len()],
            escape(&s.name)
        );
    }
    out.push_str("</ul>");
    if let Some(note) = &chart.note {
        let _ = write!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    out.push_str("</figure>");
    out
}

/// A value as an axis label: three significant digits, no exponent for the usual ranges.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::runs::Series;

    fn chart(series: Vec<Series>) -> Chart {
        Chart { id: "training-loss", title: "Training loss", series, note: None }
    }

    /// Every point is drawn once, inside the plot area, with its data attributes.
    #[test]
    fn points_are_drawn_inside_the_plot_with_their_values() {
        let c = chart(vec![
            Series { name: "all".into(), points: vec![(1, 2.0), (2, 1.0), (3, 0.5)] },
            Series { name: "eu".into(), points: vec![(1, 2.5), (3, 0.25)] },
        ]);
        let svg = render(&c);
        assert!(svg.contains("data-points=\"5\""), "{svg}");
        assert_eq!(svg.matches("<circle class=\"pt\"").count(), 5);
        assert!(svg.contains("data-series=\"eu\" data-round=\"3\" data-value=\"0.25\""), "{svg}");
        for cap in svg.split(" cx=\"").skip(1) {
            let cx: f64 = cap.split('"').next().unwrap().parse().unwrap();
            let cy: f64 = cap.split("cy=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            assert!((LEFT..=WIDTH - RIGHT).contains(&cx) && (TOP..=HEIGHT - BOTTOM).contains(&cy), "({cx}, {cy})");
        }
        // Higher values are drawn higher up (smaller y).
        let y = |round: &str| -> f64 {
            let at = svg.find(&format!("data-series=\"all\" data-round=\"{round}\"")).unwrap();
            svg[at..].split("cy=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap()
        };
        assert!(y("1") < y("2") && y("2") < y("3"));
    }

    #[test]
    fn an_empty_chart_says_why_and_names_are_escaped() {
        let mut c = chart(vec![Series { name: "all".into(), points: vec![] }]);
        c.note = Some("a private run's training metrics are withheld".into());
        let html = render(&c);
        assert!(html.contains("data-points=\"0\"") && html.contains("withheld") && !html.contains("<svg"), "{html}");
        let c = chart(vec![Series { name: "<script>".into(), points: vec![(1, 1.0)] }]);
        let html = render(&c);
        assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "{html}");
    }
}
