//! Plots of a sweep report, as SVG and PNG: one panel per task (a row per metric), one colour
//! per model size, chance as a dashed line, and, against loss, the emergence threshold as a red
//! line with its 95% confidence interval shaded and the fitted hinge dashed. Loss decreases to the right, as training goes.
//! Text is set in DejaVu Sans (shipped in models/fonts, embedded in the binary), so the PNGs
//! look the same on every machine.

use super::report::{size_label, MetricAnalysis, Report};
use crate::error::{Error, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const FONT: &[u8] = include_bytes!("../../models/fonts/DejaVuSans.ttf");
const PANEL: (u32, u32) = (460, 340);
const HEADER: u32 = 64;
/// Matplotlib's "tab10" colours, one per model size.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const THRESHOLD: RGBColor = RGBColor(200, 0, 0);

/// What the horizontal axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    Loss,
    Step,
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("the embedded font is valid"));
    });
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{}: cannot draw the plot: {e}", path.display()))
}

/// Writes `loss.svg`, `loss.png`, `step.svg` and `step.png` into `dir`: the given metrics
/// (rows) of every task (columns). Returns the files written.
pub fn write_plots(report: &Report, metrics: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::bad_input(format!("{}: cannot create: {e}", dir.display())))?;
    let tasks: Vec<&str> = {
        let mut t: Vec<&str> = report.metrics.iter().map(|m| m.task.as_str()).collect();
        t.dedup();
        t
    };
    let grid: Vec<Vec<&MetricAnalysis>> = metrics
        .iter()
        .filter_map(|metric| {
            let row: Vec<&MetricAnalysis> =
                tasks.iter().filter_map(|t| report.metrics.iter().find(|m| m.task == *t && &m.metric == metric)).collect();
            (!row.is_empty()).then_some(row)
        })
        .collect();
    if grid.is_empty() {
        return Err(Error::bad_input(format!(
            "no task in the results has the metrics {} to plot (choose with --plot-metrics)",
            metrics.join(", ")
        )));
    }
    let columns = grid.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let size = (PANEL.0 * columns, HEADER + PANEL.1 * grid.len() as u32);
    let mut written = Vec::new();
    for against in [Against::Loss, Against::Step] {
        let name = match against {
            Against::Loss => "loss",
            Against::Step => "step",
        };
        let svg = dir.join(format!("{name}.svg"));
        draw(SVGBackend::new(&svg, size).into_drawing_area(), report, &grid, against).map_err(|e| plot_error(&svg, e))?;
        let png = dir.join(format!("{name}.png"));
        let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
        draw(BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area(), report, &grid, against).map_err(|e| plot_error(&png, e))?;
        write_png(&png, size, &pixels)?;
        written.extend([svg, png]);
    }
    Ok(written)
}

fn write_png(path: &Path, (width, height): (u32, u32), rgb: &[u8]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::bad_input(format!("{}: cannot write: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn colour(report: &Report, parameters: u64) -> RGBColor {
    let index = report.sizes.iter().position(|&s| s == parameters).unwrap_or(0);
    PALETTE[index % PALETTE.len()]
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, report: &Report, grid: &[Vec<&MetricAnalysis>], against: Against) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let title = match against {
        Against::Loss => format!("Task performance against {}", report.axis_label),
        Against::Step => "Task performance against training step".to_string(),
    };
    header.draw(&Text::new(title, (12, 8), ("sans-serif", 20).into_font()))?;
    // Legend: sizes, chance, threshold.
    let legend = ("sans-serif", 14).into_font();
    let mut x = 12;
    let y = 44;
    header.draw(&Text::new("model size:", (x, y - 8), legend.clone()))?;
    x += 84;
    for &size in &report.sizes {
        header.draw(&Circle::new((x, y), 5, colour(report, size).filled()))?;
        header.draw(&Text::new(size_label(size), (x + 9, y - 8), legend.clone()))?;
        x += 24 + 9 * size_label(size).len() as i32;
    }
    x += 16;
    header.draw(&PathElement::new(vec![(x, y), (x + 10, y)], BLACK))?;
    header.draw(&PathElement::new(vec![(x + 16, y), (x + 26, y)], BLACK))?;
    header.draw(&Text::new("chance", (x + 32, y - 8), legend.clone()))?;
    if against == Against::Loss {
        x += 100;
        header.draw(&Rectangle::new([(x, y - 7), (x + 18, y + 7)], THRESHOLD.mix(0.15).filled()))?;
        header.draw(&PathElement::new(vec![(x + 9, y - 7), (x + 9, y + 7)], THRESHOLD.stroke_width(2)))?;
        header.draw(&Text::new("emergence threshold (95% CI shaded)", (x + 24, y - 8), legend))?;
    }
    let columns = grid.iter().map(Vec::len).max().unwrap_or(1);
    let panels = body.split_evenly((grid.len(), columns));
    for (r, row) in grid.iter().enumerate() {
        for (c, analysis) in row.iter().enumerate() {
            panel(&panels[r * columns + c], report, analysis, against)?;
        }
    }
    root.present()
}

/// The value range of a panel's points and chance, padded.
fn y_range(analysis: &MetricAnalysis) -> (f64, f64) {
    let values = analysis.points.iter().map(|p| p.value).chain(analysis.chance);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.08).max(0.01);
    (lo - pad, hi + pad)
}

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, report: &Report, analysis: &MetricAnalysis, against: Against) -> DrawResult<DB> {
    let (y0, y1) = y_range(analysis);
    let rho = match against {
        Against::Loss => analysis.spearman_loss.map_or(String::new(), |r| format!("  (Spearman vs loss {r:.2})")),
        Against::Step => analysis.spearman_step.map_or(String::new(), |r| format!("  (Spearman vs step {r:.2})")),
    };
    let caption = format!("{}: {}{rho}", analysis.task, analysis.metric);
    let y_desc = if analysis.lower_is_better { format!("{} (lower is better)", analysis.metric) } else { analysis.metric.clone() };
    let mut builder = ChartBuilder::on(area);
    builder.caption(caption, ("sans-serif", 15)).margin(10).margin_right(18).x_label_area_size(42).y_label_area_size(56);
    match against {
        Against::Loss => {
            // Loss decreases to the right: the axis runs over -loss and its labels undo the sign.
            let xs: Vec<f64> = analysis.points.iter().map(|p| -p.x).collect();
            let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let pad = ((hi - lo) * 0.04).max(0.01);
            let mut chart = builder.build_cartesian_2d(lo - pad..hi + pad, y0..y1)?;
            let label = format!("{} (decreasing \u{2192})", report.axis_label);
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_desc(label)
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{:.2}", -v))
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 13))
                .draw()?;
            if let Some(t) = &analysis.threshold {
                if let Some(loss) = t.loss {
                    if let Some([a, b]) = t.ci {
                        chart.draw_series(std::iter::once(Rectangle::new([(-b, y0), (-a, y1)], THRESHOLD.mix(0.15).filled())))?;
                    }
                    chart.draw_series(std::iter::once(PathElement::new(vec![(-loss, y0), (-loss, y1)], THRESHOLD.stroke_width(2))))?;
                    if let Some(chance) = analysis.chance {
                        // The fitted hinge, back on the metric's scale.
                        let best = if analysis.lower_is_better { 0.0 } else { 1.0 };
                        let fit = |x: f64| chance + (best - chance) * t.slope * (loss - x).max(0.0);
                        let (lowest, highest) = (-(hi + pad), -(lo - pad));
                        let hinge = vec![(-highest, fit(highest)), (-loss, chance), (-lowest, fit(lowest))];
                        chart.draw_series(DashedLineSeries::new(hinge, 5, 3, THRESHOLD.mix(0.8).stroke_width(1)))?;
                    }
                    let text = format!("{}{loss:.2}", if t.censored { "\u{2265} " } else { "" });
                    let label = EmptyElement::at((-loss, y1)) + Text::new(text, (4, 4), ("sans-serif", 13).into_font().color(&THRESHOLD));
                    chart.plotting_area().draw(&label)?;
                }
            }
            series(&mut chart, report, analysis, |p| Some(-p.x), (lo - pad, hi + pad))
        }
        Against::Step => {
            let steps: Vec<f64> = analysis.points.iter().filter_map(|p| p.step).map(|s| s as f64).collect();
            let (lo, hi) = steps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let (lo, hi) = if steps.is_empty() { (0.0, 1.0) } else { (lo, hi.max(lo + 1.0)) };
            let desc = "training step";
            if lo > 0.0 {
                let range = (lo / 1.25, hi * 1.25);
                let x_axis = (range.0..range.1).log_scale().with_key_points(step_ticks(&steps, range));
                let mut chart = builder.build_cartesian_2d(x_axis, y0..y1)?;
                chart
                    .configure_mesh()
                    .light_line_style(WHITE)
                    .x_desc(format!("{desc} (log scale)"))
                    .y_desc(y_desc)
                    .x_label_formatter(&|v| format!("{v:.0}"))
                    .label_style(("sans-serif", 12))
                    .axis_desc_style(("sans-serif", 13))
                    .draw()?;
                series(&mut chart, report, analysis, |p| p.step.map(|s| s as f64), range)
            } else {
                let pad = (hi - lo) * 0.04;
                let range = (lo - pad, hi + pad);
                let mut chart = builder.build_cartesian_2d(range.0..range.1, y0..y1)?;
                chart
                    .configure_mesh()
                    .light_line_style(WHITE)
                    .x_desc(desc)
                    .y_desc(y_desc)
                    .label_style(("sans-serif", 12))
                    .axis_desc_style(("sans-serif", 13))
                    .draw()?;
                series(&mut chart, report, analysis, |p| p.step.map(|s| s as f64), range)
            }
        }
    }
}

/// Ticks of a logarithmic step axis: the steps themselves where there are few, else 1-2-5
/// multiples of powers of ten within the range.
fn step_ticks(steps: &[f64], (lo, hi): (f64, f64)) -> Vec<f64> {
    let mut distinct: Vec<f64> = steps.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() <= 8 {
        return distinct;
    }
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        ticks.extend([1.0, 2.0, 5.0].iter().map(|m| m * decade).filter(|t| (lo..=hi).contains(t)));
        decade *= 10.0;
    }
    ticks
}

/// Chance, each run's checkpoints joined in step order, and the points.
fn series<DB: DrawingBackend, X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    chart: &mut ChartContext<DB, Cartesian2d<X, RangedCoordf64>>,
    report: &Report,
    analysis: &MetricAnalysis,
    x_of: impl Fn(&super::report::Point) -> Option<f64>,
    (x0, x1): (f64, f64),
) -> DrawResult<DB> {
    if let Some(chance) = analysis.chance {
        chart.draw_series(DashedLineSeries::new(vec![(x0, chance), (x1, chance)], 6, 4, BLACK.stroke_width(1)))?;
    }
    let mut runs: Vec<&str> = analysis.points.iter().map(|p| p.run.as_str()).collect();
    runs.sort();
    runs.dedup();
    for run in runs {
        let mut line: Vec<(u64, f64, f64, u64)> = analysis
            .points
            .iter()
            .filter(|p| p.run == run)
            .filter_map(|p| Some((p.step.unwrap_or(0), x_of(p)?, p.value, p.parameters)))
            .collect();
        line.sort_by_key(|l| l.0);
        if let Some(&(_, _, _, parameters)) = line.first() {
            let style = colour(report, parameters).mix(0.45).stroke_width(1);
            chart.draw_series(LineSeries::new(line.iter().map(|l| (l.1, l.2)), style))?;
        }
    }
    chart.draw_series(
        analysis.points.iter().filter_map(|p| Some(Circle::new((x_of(p)?, p.value), 4, colour(report, p.parameters).filled()))),
    )?;
    Ok(())
}
