//! The four plots of a verify report, drawn with plotters: training loss per
//! step (raw and smoothed, with the held-out metric beside it), signal
//! propagation q^l per layer, the ECDF of the input–output Jacobian's singular
//! values, and the gradient norm per layer. Each renders as SVG and PNG.
//!
//! plotters runs without its default features: text is laid out and
//! rasterised by ab_glyph from the bundled Liberation Sans (`assets/`,
//! SIL OFL 1.1) and PNGs are encoded by the pure-Rust `image` crate, so no
//! system font, fontconfig or C library is involved.

mod charts;

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ExecError;
use crate::train::Optimizer;
use crate::verify::VerifyReport;

/// Liberation Sans Regular, registered as plotters' `sans-serif`.
const FONT: &[u8] = include_bytes!("../../assets/LiberationSans-Regular.ttf");
const FAMILY: &str = "sans-serif";
/// Pixel size of every figure.
pub const SIZE: (u32, u32) = (960, 540);
/// Tableau 10: distinguishable, and readable on white.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
const GREY: RGBColor = RGBColor(110, 110, 110);

/// The plots, in the order the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotKind {
    Loss,
    Signal,
    JacobianSv,
    GradNorms,
}

impl PlotKind {
    /// Pixel size of every figure.
    pub const SIZE: (u32, u32) = SIZE;
    pub const ALL: [PlotKind; 4] = [
        PlotKind::Loss,
        PlotKind::Signal,
        PlotKind::JacobianSv,
        PlotKind::GradNorms,
    ];

    /// File stem: `loss`, `signal`, `jacobian_sv`, `grad_norms`.
    pub fn stem(self) -> &'static str {
        match self {
            PlotKind::Loss => "loss",
            PlotKind::Signal => "signal",
            PlotKind::JacobianSv => "jacobian_sv",
            PlotKind::GradNorms => "grad_norms",
        }
    }

    fn title(self) -> &'static str {
        match self {
            PlotKind::Loss => "Training loss",
            PlotKind::Signal => "Signal propagation at init",
            PlotKind::JacobianSv => "Input-output Jacobian singular values at init",
            PlotKind::GradNorms => "Gradient norm per layer at init",
        }
    }
}

/// One rendered plot.
#[derive(Debug, Clone)]
pub struct Figure {
    pub kind: PlotKind,
    /// Title line as drawn on the figure.
    pub title: String,
    pub svg: String,
    pub png: Vec<u8>,
}

/// Renders every plot the report has data for (the Jacobian plot needs the
/// exact spectra: it is left out when every run used random projections).
/// `model` names the model in the titles.
pub fn render_plots(report: &VerifyReport, model: &str) -> Result<Vec<Figure>, ExecError> {
    register_font();
    let mut figures = Vec::new();
    for kind in PlotKind::ALL {
        if kind == PlotKind::JacobianSv && charts::spectra(report).is_empty() {
            continue;
        }
        let title = title_line(kind, model);
        let subtitle = settings_line(report);
        let text = Header {
            title: &title,
            subtitle: &subtitle,
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            draw(kind, report, &text, &root).map_err(|e| plot_error(kind, e))?;
            root.present().map_err(|e| plot_error(kind, e))?;
        }
        let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
            draw(kind, report, &text, &root).map_err(|e| plot_error(kind, e))?;
            root.present().map_err(|e| plot_error(kind, e))?;
        }
        figures.push(Figure {
            kind,
            title,
            svg,
            png: encode_png(&rgb).map_err(|e| plot_error(kind, e))?,
        });
    }
    Ok(figures)
}

/// Writes `STEM.svg` and `STEM.png` for every plot of [`render_plots`] into
/// `dir` (created if missing).
pub fn write_plots(report: &VerifyReport, model: &str, dir: &Path) -> Result<(), ExecError> {
    let figures = render_plots(report, model)?;
    std::fs::create_dir_all(dir)?;
    for f in &figures {
        std::fs::write(dir.join(format!("{}.svg", f.kind.stem())), &f.svg)?;
        std::fs::write(dir.join(format!("{}.png", f.kind.stem())), &f.png)?;
    }
    Ok(())
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid font compiled in; a failure here is a build defect.
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("bundled Liberation Sans failed to parse"));
    });
}

fn plot_error(kind: PlotKind, e: impl std::fmt::Display) -> ExecError {
    ExecError::Invalid(format!("plot {}: {e}", kind.stem()))
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, image::ImageError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        rgb,
        SIZE.0,
        SIZE.1,
        image::ColorType::Rgb8,
    )?;
    Ok(out)
}

fn title_line(kind: PlotKind, model: &str) -> String {
    if model.is_empty() {
        kind.title().to_string()
    } else {
        format!("{} – {model}", kind.title())
    }
}

/// `digits task · 100 steps · AdamW lr 0.003 · batch 16 · seed 0`.
fn settings_line(report: &VerifyReport) -> String {
    let optimizer = match report.optimizer {
        Optimizer::AdamW => "AdamW".to_string(),
        Optimizer::Sgd { momentum } => format!("SGD (momentum {momentum})"),
    };
    let mut parts = Vec::new();
    if let Some(task) = &report.task {
        parts.push(format!("{} task", task.name));
    }
    parts.push(format!("{} steps", report.steps));
    parts.push(format!("{optimizer} lr {}", report.lr));
    parts.push(format!("batch {}", report.batch));
    parts.push(format!("seed {}", report.seed));
    parts.join("  |  ")
}

struct Header<'a> {
    title: &'a str,
    subtitle: &'a str,
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    kind: PlotKind,
    report: &VerifyReport,
    header: &Header,
    root: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(58);
    let centre = SIZE.0 as i32 / 2;
    top.draw(&Text::new(
        header.title.to_string(),
        (centre, 8),
        (FAMILY, 21)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    top.draw(&Text::new(
        header.subtitle.to_string(),
        (centre, 36),
        (FAMILY, 14)
            .into_font()
            .color(&GREY)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    match kind {
        PlotKind::Loss => charts::loss_plot(report, &body),
        PlotKind::Signal => charts::signal_plot(report, &body),
        PlotKind::JacobianSv => charts::jacobian_plot(report, &body),
        PlotKind::GradNorms => charts::grad_plot(report, &body),
    }
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Tick label for a log axis: plain decimals between 1e-3 and 1e4, else
/// `2e-5`-style (no `1e0.4`).
pub fn log_tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e4).contains(&a) {
        let digits = (-a.log10().floor()).max(0.0) as usize;
        let s = format!("{v:.digits$}");
        // 0.30000000000000004 → 0.3: the key points are 1/2/5 multiples.
        let trimmed = format!("{}", s.parse::<f64>().unwrap_or(v));
        return trimmed;
    }
    let exp = a.log10().floor() as i32;
    let mantissa = v / 10f64.powi(exp);
    if (mantissa.abs() - 1.0).abs() < 1e-9 {
        format!("{}e{exp}", if v < 0.0 { "-1" } else { "1" })
    } else {
        format!("{}e{exp}", (mantissa * 10.0).round() / 10.0)
    }
}

/// (lo, hi) of the finite positive values, widened to whole decades' worth of
/// margin so nothing sits on the frame; `None` without any.
fn log_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    (lo <= hi).then(|| {
        let (lo, hi) = if hi / lo < 10.0 {
            let mid = (lo * hi).sqrt();
            (mid / 10f64.sqrt(), mid * 10f64.sqrt())
        } else {
            (lo, hi)
        };
        (lo / 1.6, hi * 1.6)
    })
}

/// Trailing moving mean, window a twentieth of the run (the window
/// [`crate::steps_to_reach`] times `to_target` with).
pub fn smoothed(loss: &[f32]) -> Vec<f64> {
    let w = (loss.len() / 20).max(1);
    let mut sum = 0.0f64;
    loss.iter()
        .enumerate()
        .map(|(i, &l)| {
            sum += f64::from(l);
            if i >= w {
                sum -= f64::from(loss[i - w]);
            }
            sum / (i + 1).min(w) as f64
        })
        .collect()
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .label_font((FAMILY, 14))
        .draw()
}

/// `, 2 zero (bottom edge)` when some values are exactly zero (a log axis
/// cannot show them).
fn zeros_note(values: impl Iterator<Item = f64>) -> String {
    match values.filter(|v| *v <= 0.0).count() {
        0 => String::new(),
        k => format!(", {k} zero (bottom edge)"),
    }
}

/// Three significant digits, log_tick's notation.
fn log_tick_3(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e4).contains(&a) {
        let digits = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.digits$}")
    } else {
        format!("{v:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_plain_decimals_or_powers_of_ten() {
        assert_eq!(log_tick(1.0), "1");
        assert_eq!(log_tick(0.01), "0.01");
        assert_eq!(log_tick(0.30000000000000004), "0.3");
        assert_eq!(log_tick(500.0), "500");
        assert_eq!(log_tick(1e-5), "1e-5");
        assert_eq!(log_tick(2e-5), "2e-5");
        assert_eq!(log_tick(1e6), "1e6");
    }

    #[test]
    fn smoothing_is_the_to_target_moving_mean() {
        let loss: Vec<f32> = (0..40)
            .map(|i| if i % 2 == 0 { 2.0 } else { 1.0 })
            .collect();
        let s = smoothed(&loss);
        // window 2: every full window averages one 2 and one 1.
        assert!(s[1..].iter().all(|v| (v - 1.5).abs() < 1e-12));
        assert_eq!(s[0], 2.0);
    }
}
