//! SVG plots of a verify report (plotters' SVG backend; no font stack).

use std::path::Path;

use plotters::prelude::*;

use crate::error::ExecError;
use crate::verify::VerifyReport;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Display>(e: E) -> ExecError {
    ExecError::Invalid(format!("plot: {e}"))
}

fn lines(path: &Path, series: &[(String, Vec<(f64, f64)>)], log_y: bool) -> Result<(), ExecError> {
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let tf = |y: f64| if log_y { y.max(1e-30).log10() } else { y };
    let pts = series
        .iter()
        .flat_map(|(_, s)| s.iter())
        .filter(|(_, y)| y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(tf(y));
        y1 = y1.max(tf(y));
    }
    if x0 > x1 {
        return Ok(());
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    for (i, (_, s)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.iter()
                    .filter(|(_, y)| y.is_finite())
                    .map(|&(x, y)| (x, tf(y))),
                c.stroke_width(2),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// `loss.svg` (loss per step), `signal.svg` (log10 q^l per layer) and
/// `jacobian_sv.svg` (histogram of singular values, exact runs). Series
/// colours follow the run order of the report (see `plots.json` legend).
pub fn write_plots(report: &VerifyReport, dir: &Path) -> Result<(), ExecError> {
    std::fs::create_dir_all(dir)?;
    let loss: Vec<(String, Vec<(f64, f64)>)> = report
        .runs
        .iter()
        .map(|r| {
            (
                r.scheme.clone(),
                r.loss
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as f64, l as f64))
                    .collect(),
            )
        })
        .collect();
    lines(&dir.join("loss.svg"), &loss, false)?;
    let signal: Vec<(String, Vec<(f64, f64)>)> = report
        .runs
        .iter()
        .map(|r| {
            (
                r.scheme.clone(),
                r.signal
                    .iter()
                    .enumerate()
                    .map(|(i, (_, q))| (i as f64, *q))
                    .collect(),
            )
        })
        .collect();
    lines(&dir.join("signal.svg"), &signal, true)?;

    // singular-value histogram: 30 bins over all exact runs
    let all: Vec<f64> = report
        .runs
        .iter()
        .filter_map(|r| r.jacobian.as_ref())
        .flat_map(|j| j.singular_values.iter().copied())
        .collect();
    if !all.is_empty() {
        let hi = all.iter().fold(0.0f64, |m, &x| m.max(x)).max(1e-12) * 1.0001;
        let bins = 30usize;
        let path = dir.join("jacobian_sv.svg");
        let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let counts: Vec<Vec<u32>> = report
            .runs
            .iter()
            .map(|r| {
                let mut c = vec![0u32; bins];
                for &s in r
                    .jacobian
                    .as_ref()
                    .map(|j| j.singular_values.as_slice())
                    .unwrap_or_default()
                {
                    c[((s / hi * bins as f64) as usize).min(bins - 1)] += 1;
                }
                c
            })
            .collect();
        let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .build_cartesian_2d((0u32..bins as u32).into_segmented(), 0u32..top + 1)
            .map_err(err)?;
        for (i, c) in counts.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(color.mix(0.5).filled())
                        .data(c.iter().enumerate().map(|(b, &n)| (b as u32, n))),
                )
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let legend = serde_json::json!({
        "colors": report.runs.iter().enumerate().map(|(i, r)| {
            let c = COLORS[i % COLORS.len()];
            (r.scheme.clone(), format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2))
        }).collect::<Vec<_>>(),
        "signal_y": "log10 q^l per weighted layer (x = layer index)",
        "loss": "training loss per step",
        "jacobian_sv_bins": "30 bins over [0, max singular value]"
    });
    std::fs::write(
        dir.join("plots.json"),
        serde_json::to_string_pretty(&legend).map_err(err)?,
    )?;
    Ok(())
}
