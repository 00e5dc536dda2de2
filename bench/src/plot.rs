//! PNG line charts for the benchmark binaries: a figure of panels, each a
//! set of named series of (x, y) points on linear axes, drawn with
//! `plotters` into an RGB buffer and written with the `png` crate.
//!
//! Text is rendered by `ab_glyph` (pure Rust) from a TrueType font read at
//! run time ([`FONT_PATH`], Debian's `fonts-dejavu-core`), so nothing
//! needs fontconfig or freetype. Non-finite y values (a measurement that
//! did not happen) leave a gap in their line.

use std::io::BufWriter;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// The font plot text is drawn with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The font family name plotters' default text styles ask for.
const FAMILY: &str = "sans-serif";

/// Line colours, in series order (Tableau 10, readable on white).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One named line.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// The y axis description (quantity and unit).
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Panels on a grid sharing one x quantity, with a title on top.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The title of the whole figure.
    pub title: String,
    /// The x axis description of every panel.
    pub x_label: String,
    /// Panels, row by row.
    pub panels: Vec<Panel>,
    /// Panels per row (at least 1).
    pub columns: usize,
    /// Image size in pixels.
    pub size: (u32, u32),
}

/// Registers [`FONT_PATH`] as the family plotters draws text with, once
/// per process.
pub fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|err| {
                format!(
                    "cannot read the plot font {FONT_PATH}: {err} \
                     (Debian/Ubuntu: apt-get install fonts-dejavu-core)"
                )
            })?;
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a TrueType/OpenType font"))
        })
        .clone()
        .map_err(|err| anyhow!(err))
}

/// `lo..hi` widened by `pad` of its length on both sides (and to a unit
/// range around a single value).
fn padded(lo: f64, hi: f64, pad: f64) -> Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    if hi - lo < 1e-9 {
        return lo - 1.0..hi + 1.0;
    }
    let margin = (hi - lo) * pad;
    lo - margin..hi + margin
}

/// The x ticks: the data's own x values when there are few (a sweep's
/// parameter values), else ten even steps over `lo..=hi`.
fn x_ticks(xs: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let mut distinct: Vec<f64> = xs.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if !distinct.is_empty() && distinct.len() <= 12 {
        return distinct;
    }
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    (0..=10)
        .map(|i| lo + (hi - lo) * f64::from(i) / 10.0)
        .collect()
}

/// A linear x axis with ticks at given values. (plotters' own
/// `with_key_points` over f64 cannot be given a label formatter in 0.3.7.)
struct TickedAxis {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold grid lines and labels at the ticks, no light lines between.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
}

/// A tick label of `v` on an axis spanning `span`: no more decimals than
/// the span needs.
fn tick_label(v: f64, span: f64) -> String {
    match span {
        s if s >= 20.0 => format!("{v:.0}"),
        s if s >= 2.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// The finite runs of consecutive points of `points` (a gap at every
/// non-finite value).
fn runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            if let Some(run) = out.last_mut() {
                run.push((x, y));
            }
        } else if out.last().is_some_and(|run| !run.is_empty()) {
            out.push(Vec::new());
        }
    }
    out.retain(|run| !run.is_empty());
    out
}

/// Draws `panel` on `area` with x range `x`.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    x: Range<f64>,
    ticks: &[f64],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0_f64, f64::max);
    // Headroom above the data for the legend, one line per series.
    let headroom = 1.1 + 0.09 * panel.series.len() as f64;
    let y_top = if y_max > 0.0 { y_max * headroom } else { 1.0 };
    let x_span = x.end - x.start;
    let whole_ticks = ticks.iter().all(|t| t.fract() == 0.0);
    let x_tick = |v: &f64| {
        if whole_ticks {
            format!("{v:.0}")
        } else {
            tick_label(*v, x_span)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            TickedAxis {
                linear: x.into(),
                ticks: ticks.to_vec(),
            },
            0.0..y_top,
        )
        .map_err(|err| anyhow!("plot {}: {err}", panel.title))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .axis_desc_style((FAMILY, 16))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .y_max_light_lines(1)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&|v| tick_label(*v, y_top))
        .draw()
        .map_err(|err| anyhow!("plot {}: {err}", panel.title))?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let style = colour.stroke_width(2);
        for (k, run) in runs(&series.points).into_iter().enumerate() {
            let drawn = chart
                .draw_series(LineSeries::new(run, style).point_size(4))
                .map_err(|err| anyhow!("plot {}: {err}", panel.title))?;
            if k == 0 {
                drawn.label(&series.label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(|err| anyhow!("plot {}: legend: {err}", panel.title))?;
    Ok(())
}

/// Draws `figure` and writes it to `path` as a PNG (creating the parent
/// directory if needed).
pub fn write_png(figure: &Figure, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let (width, height) = figure.size;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|err| anyhow!("plot background: {err}"))?;
        let body = root
            .margin(10, 0, 0, 0)
            .titled(&figure.title, (FAMILY, 28))
            .map_err(|err| anyhow!("plot title: {err}"))?;
        let columns = figure.columns.max(1);
        let rows = figure.panels.len().div_ceil(columns).max(1);
        let xs: Vec<f64> = figure
            .panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|x| x.is_finite())
            .collect();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let x = padded(lo, hi, 0.05);
        let ticks = x_ticks(&xs, lo, hi);
        for (area, panel) in body
            .split_evenly((rows, columns))
            .iter()
            .zip(&figure.panels)
        {
            draw_panel(area, panel, &figure.x_label, x.clone(), &ticks)?;
        }
        root.present()
            .map_err(|err| anyhow!("plot rendering: {err}"))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .write_image_data(&pixels)
        .and_then(|()| writer.finish())
        .with_context(|| format!("cannot write {}", path.display()))
}
