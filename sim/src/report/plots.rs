//! Line plots of one metric against the round, one line per config, as SVG.
//!
//! Contract of [`plot_metric`]:
//! - The file is **SVG** (plotters' SVG backend). SVG leaves text to the viewer, so
//!   titles, axis labels and the legend need no font files and no system fonts on the
//!   machine that draws. The path's extension must be `.svg` (or absent); any other
//!   extension is an error, so that no `.png` full of SVG is ever written. Missing parent
//!   directories are created; an existing file is replaced.
//! - x = round, y = the metric. One line per `config` (in order of first appearance in
//!   `rows`): at each round, the mean over that config's seeds of the values that are
//!   finite there. NaN (and ±∞) values are skipped: a round where no seed has a finite
//!   value has no point, and the line joins its neighbours.
//! - When a config has several seeds, a translucent band in the line's colour spans the
//!   min–max over seeds at each round.
//! - The legend names every config, also one without any finite value (then it has no
//!   line). The title is the caption; the axes are labelled `round` and the metric's
//!   [`Metric::label`]. Empty `rows`, or no finite value at all, still give a (blank)
//!   plot with the title.

use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;

use super::RoundMetrics;
use super::series;

/// A per-round metric that [`plot_metric`] can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    TestAccuracy,
    TestLoss,
    TrainLoss,
    GlobalTrainLoss,
}

impl Metric {
    /// Every metric, e.g. to plot them all.
    pub const ALL: [Metric; 4] = [Metric::TestAccuracy, Metric::TestLoss, Metric::TrainLoss, Metric::GlobalTrainLoss];

    /// The [`RoundMetrics`] field name, e.g. `test_accuracy` (good as a file stem).
    pub fn name(self) -> &'static str {
        match self {
            Metric::TestAccuracy => "test_accuracy",
            Metric::TestLoss => "test_loss",
            Metric::TrainLoss => "train_loss",
            Metric::GlobalTrainLoss => "global_train_loss",
        }
    }

    /// A human label for an axis, e.g. `test accuracy`.
    pub fn label(self) -> &'static str {
        match self {
            Metric::TestAccuracy => "test accuracy",
            Metric::TestLoss => "test loss",
            Metric::TrainLoss => "train loss (after local training)",
            Metric::GlobalTrainLoss => "global model train loss",
        }
    }

    /// This metric's value in `row` (NaN when not measured).
    pub fn value(self, row: &RoundMetrics) -> f64 {
        match self {
            Metric::TestAccuracy => row.test_accuracy,
            Metric::TestLoss => row.test_loss,
            Metric::TrainLoss => row.train_loss,
            Metric::GlobalTrainLoss => row.global_train_loss,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tableau 10: distinguishable colours, cycled when there are more than ten configs.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// One config's line: (round, mean, min, max) where some seed has a finite value.
struct Line<'a> {
    config: &'a str,
    points: Vec<(u32, f64, f64, f64)>,
    band: bool,
}

fn lines(rows: &[RoundMetrics], metric: Metric) -> Vec<Line<'_>> {
    series::by_config(rows)
        .into_iter()
        .map(|(config, group)| {
            let rounds = series::by_round(&group, |r| metric.value(r));
            let band = rounds.values().any(|v| v.len() > 1);
            let points = rounds
                .into_iter()
                .map(|(round, values)| {
                    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (round, series::mean(&values), min, max)
                })
                .collect();
            Line { config, points, band }
        })
        .collect()
}

/// Draws `metric` against the round for every config in `rows` into the SVG file `path`.
/// See the [module docs](self) for the contract.
pub fn plot_metric(path: &Path, rows: &[RoundMetrics], metric: Metric, title: &str) -> anyhow::Result<()> {
    if let Some(ext) = path.extension()
        && !ext.eq_ignore_ascii_case("svg")
    {
        bail!("plot_metric writes SVG; {} does not end in .svg", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw(path, &lines(rows, metric), metric, title)
        .with_context(|| format!("plotting {} to {}", metric, path.display()))
}

fn draw(path: &Path, lines: &[Line<'_>], metric: Metric, title: &str) -> anyhow::Result<()> {
    let points = lines.iter().flat_map(|l| &l.points);
    let (mut x0, mut x1) = (u32::MAX, 0u32);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(round, _, min, max) in points {
        x0 = x0.min(round);
        x1 = x1.max(round);
        y0 = y0.min(min);
        y1 = y1.max(max);
    }
    if x0 > x1 {
        (x0, x1) = (0, 1);
        (y0, y1) = (0.0, 1.0);
    }
    if x0 == x1 {
        x1 = x0.saturating_add(1);
        x0 = x1 - 1;
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { y0.abs().max(1.0) * 0.05 };
    let (y0, y1) = (y0 - pad, y1 + pad);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart.configure_mesh().x_desc("round").y_desc(metric.label()).draw()?;

    for (i, line) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if line.band {
            let upper = line.points.iter().map(|&(r, _, _, max)| (r, max));
            let lower = line.points.iter().rev().map(|&(r, _, min, _)| (r, min));
            let outline: Vec<(u32, f64)> = upper.chain(lower).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18).filled())))?;
        }
        let mean = line.points.iter().map(|&(r, mean, _, _)| (r, mean));
        chart
            .draw_series(LineSeries::new(mean.clone(), color.stroke_width(2)))?
            .label(line.config)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        if line.points.len() <= 40 {
            chart.draw_series(mean.map(|p| Circle::new(p, 3, color.filled())))?;
        }
    }
    if !lines.is_empty() {
        chart
            .configure_series_labels()
            // Accuracy rises, losses fall: keep the legend off the curves' ends.
            .position(match metric {
                Metric::TestAccuracy => SeriesLabelPosition::LowerRight,
                _ => SeriesLabelPosition::UpperRight,
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, seed: u64, round: u32, acc: f64) -> RoundMetrics {
        RoundMetrics {
            selected: 4,
            reported: 4,
            train_loss: 1.0 / f64::from(round + 1),
            test_loss: 2.0 - acc,
            test_accuracy: acc,
            bytes_out: 100,
            bytes_in: 100,
            wall_seconds: 0.1,
            ..RoundMetrics::empty(config, seed, round)
        }
    }

    fn two_configs_two_seeds() -> Vec<RoundMetrics> {
        let mut rows = Vec::new();
        for seed in [1, 2] {
            for round in 0..10 {
                let t = f64::from(round) / 10.0;
                rows.push(row("mu=0", seed, round, 0.5 * t + 0.01 * seed as f64));
                let mut r = row("mu=1 <&>", seed, round, 0.6 * t);
                if round == 3 {
                    r.test_accuracy = f64::NAN;
                }
                rows.push(r);
            }
        }
        rows
    }

    #[test]
    fn every_metric_plots_to_a_nonempty_svg_naming_each_config() {
        let dir = tempfile::tempdir().unwrap();
        let rows = two_configs_two_seeds();
        for metric in Metric::ALL {
            let path = dir.path().join(format!("plots/{metric}.svg"));
            plot_metric(&path, &rows, metric, &format!("FedProx: {}", metric.label())).unwrap();
            let svg = fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{metric}");
            assert!(svg.contains("</svg>"), "{metric}");
            assert!(svg.contains("mu=0"), "{metric}: legend lacks mu=0");
            // Text is XML-escaped by the backend.
            assert!(svg.contains("mu=1 &lt;&amp;&gt;"), "{metric}: legend lacks mu=1");
            assert!(svg.contains("FedProx"), "{metric}: no title");
            assert!(svg.contains("round"), "{metric}: no x label");
        }
    }

    #[test]
    fn band_only_with_several_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let many = dir.path().join("many.svg");
        plot_metric(&many, &two_configs_two_seeds(), Metric::TestAccuracy, "t").unwrap();
        assert!(fs::read_to_string(&many).unwrap().contains("<polygon"));

        let single: Vec<_> = (0..5).map(|r| row("solo", 7, r, 0.1)).collect();
        let one = dir.path().join("one.svg");
        plot_metric(&one, &single, Metric::TestAccuracy, "t").unwrap();
        let svg = fs::read_to_string(&one).unwrap();
        assert!(!svg.contains("<polygon"));
        assert!(svg.contains("solo"));
    }

    #[test]
    fn no_finite_data_still_plots() {
        let dir = tempfile::tempdir().unwrap();
        // global_train_loss is NaN everywhere.
        let path = dir.path().join("nan.svg");
        plot_metric(&path, &two_configs_two_seeds(), Metric::GlobalTrainLoss, "nan").unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.contains("mu=0"));
        let empty = dir.path().join("empty.svg");
        plot_metric(&empty, &[], Metric::TestLoss, "empty title").unwrap();
        assert!(fs::read_to_string(&empty).unwrap().contains("empty title"));
        // A single round gives a non-degenerate axis.
        let one = dir.path().join("one_round.svg");
        plot_metric(&one, &[row("a", 1, 0, 0.5)], Metric::TestAccuracy, "t").unwrap();
        assert!(fs::metadata(&one).unwrap().len() > 0);
    }

    #[test]
    fn non_svg_extension_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        let err = plot_metric(&path, &two_configs_two_seeds(), Metric::TestLoss, "t").unwrap_err().to_string();
        assert!(err.contains("SVG"), "{err}");
        assert!(!path.exists());
        // No extension is fine.
        plot_metric(&dir.path().join("plot"), &[], Metric::TestLoss, "t").unwrap();
    }

    #[test]
    fn lines_average_finite_values_over_seeds() {
        let rows = two_configs_two_seeds();
        let lines = lines(&rows, Metric::TestAccuracy);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].config, "mu=0");
        assert!(lines[0].band);
        let (round, mean, min, max) = lines[0].points[2];
        assert_eq!(round, 2);
        assert!((mean - (0.1 + 0.015)).abs() < 1e-12);
        assert!((min - 0.11).abs() < 1e-12 && (max - 0.12).abs() < 1e-12);
        // mu=1 has NaN at round 3 for both seeds: that round has no point.
        assert_eq!(lines[1].points.len(), 9);
        assert!(lines[1].points.iter().all(|p| p.0 != 3));
    }
}
