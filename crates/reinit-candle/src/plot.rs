//! SVG plots of a verify report: loss curves, per-layer signal q^l and the
//! Jacobian singular-value histogram, each with axes, ticks, a title and a
//! legend. Written by hand as plain SVG (text is drawn by the viewer, so no
//! font stack is needed and nothing is linked).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::ExecError;
use crate::verify::VerifyReport;

const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];
const W: f64 = 760.0;
const H: f64 = 440.0;
/// Margins around the plot area (the right one holds the legend).
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// One named series of (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// `loss.svg`, `signal.svg` and (when exact spectra exist) `jacobian_sv.svg`.
pub fn write_plots(report: &VerifyReport, dir: &Path) -> Result<(), ExecError> {
    std::fs::create_dir_all(dir)?;
    let loss: Vec<Series> = report
        .runs
        .iter()
        .map(|r| {
            (
                r.scheme.clone(),
                r.loss
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as f64, f64::from(l)))
                    .collect(),
            )
        })
        .collect();
    let svg = line_chart("Training loss", "step", "loss", &loss, false);
    std::fs::write(dir.join("loss.svg"), svg)?;
    let signal: Vec<Series> = report
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
    let svg = line_chart(
        "Signal propagation at init",
        "weighted layer",
        "q^l (second moment, log10)",
        &signal,
        true,
    );
    std::fs::write(dir.join("signal.svg"), svg)?;
    let spectra: Vec<(String, Vec<f64>)> = report
        .runs
        .iter()
        .filter_map(|r| {
            r.jacobian
                .as_ref()
                .map(|j| (r.scheme.clone(), j.singular_values.clone()))
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !spectra.is_empty() {
        std::fs::write(dir.join("jacobian_sv.svg"), histogram(&spectra, 30))?;
    }
    Ok(())
}

/// Maps data coordinates to the plot area.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (H - TOP - BOTTOM)
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return None;
    }
    Some(if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Axes, ticks, labels and title around `frame`.
fn axes(out: &mut String, frame: &Frame, title: &str, x_label: &str, y_label: &str, y_log: bool) {
    let (x0, x1) = (LEFT, W - RIGHT);
    let (y0, y1) = (H - BOTTOM, TOP);
    let _ = write!(
        out,
        r##"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="24" font-size="16" text-anchor="middle" font-family="sans-serif">{}</text>"##,
        (x0 + x1) / 2.0,
        escape(title)
    );
    let _ = write!(
        out,
        r##"<path d="M{x0},{y1} V{y0} H{x1}" stroke="black" fill="none"/>"##
    );
    for i in 0..=5 {
        let t = i as f64 / 5.0;
        let xv = frame.x.0 + t * (frame.x.1 - frame.x.0);
        let yv = frame.y.0 + t * (frame.y.1 - frame.y.0);
        let (px, py) = (frame.px(xv), frame.py(yv));
        let y_text = if y_log {
            format!("1e{yv:.1}")
        } else {
            format!("{yv:.3}")
        };
        let _ = write!(
            out,
            r##"<path d="M{px},{y0} v5 M{x0},{py} h-5" stroke="black"/><path d="M{x0},{py} H{x1}" stroke="#ddd"/><text x="{px}" y="{}" font-size="11" text-anchor="middle" font-family="sans-serif">{xv:.0}</text><text x="{}" y="{}" font-size="11" text-anchor="end" font-family="sans-serif">{y_text}</text>"##,
            y0 + 18.0,
            x0 - 8.0,
            py + 4.0
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" font-family="sans-serif">{}</text><text transform="translate(16,{}) rotate(-90)" font-size="12" text-anchor="middle" font-family="sans-serif">{}</text>"##,
        (x0 + x1) / 2.0,
        H - 12.0,
        escape(x_label),
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn legend(out: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{}" width="14" height="4" fill="{}"/><text x="{}" y="{}" font-size="12" font-family="sans-serif">{}</text>"##,
            y - 4.0,
            COLORS[i % COLORS.len()],
            x + 20.0,
            y + 1.0,
            escape(name)
        );
    }
}

fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> String {
    let ty = |y: f64| if log_y { y.max(1e-30).log10() } else { y };
    let points = || series.iter().flat_map(|(_, s)| s.iter().copied());
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"##
    );
    if let (Some(x), Some(y)) = (
        bounds(points().map(|p| p.0)),
        bounds(points().map(|p| ty(p.1))),
    ) {
        let frame = Frame { x, y };
        axes(&mut out, &frame, title, x_label, y_label, log_y);
        for (i, (_, s)) in series.iter().enumerate() {
            let path: Vec<String> = s
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(ty(y))))
                .collect();
            if !path.is_empty() {
                let _ = write!(
                    out,
                    r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"##,
                    path.join(" "),
                    COLORS[i % COLORS.len()]
                );
            }
        }
        let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
        legend(&mut out, &names);
    }
    out.push_str("</svg>\n");
    out
}

/// Overlaid histograms of singular values, `bins` bins over [0, max].
fn histogram(spectra: &[(String, Vec<f64>)], bins: usize) -> String {
    let hi = spectra
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-12)
        * 1.0001;
    let counts: Vec<Vec<usize>> = spectra
        .iter()
        .map(|(_, s)| {
            let mut c = vec![0usize; bins];
            for &v in s.iter().filter(|v| v.is_finite()) {
                c[((v / hi * bins as f64) as usize).min(bins - 1)] += 1;
            }
            c
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let frame = Frame {
        x: (0.0, hi),
        y: (0.0, top),
    };
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"##
    );
    axes(
        &mut out,
        &frame,
        "Input-output Jacobian singular values at init",
        "singular value",
        "count",
        false,
    );
    let width = hi / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        for (b, &n) in c.iter().enumerate().filter(|(_, n)| **n > 0) {
            let (x0, x1) = (frame.px(b as f64 * width), frame.px((b + 1) as f64 * width));
            let (y0, y1) = (frame.py(n as f64), frame.py(0.0));
            let _ = write!(
                out,
                r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.45"/>"##,
                (x1 - x0).max(1.0),
                y1 - y0,
                COLORS[i % COLORS.len()]
            );
        }
    }
    let names: Vec<&str> = spectra.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_complete_svg_with_labels_and_legend() {
        let series = vec![
            ("he".to_string(), vec![(0.0, 2.3), (1.0, 1.2)]),
            ("eoi".to_string(), vec![(0.0, 2.2), (1.0, 0.9)]),
        ];
        let svg = line_chart("Training loss", "step", "loss", &series, false);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        for text in ["Training loss", "step", "loss", "he", "eoi"] {
            assert!(svg.contains(&format!(">{text}<")), "{text} missing");
        }
        let svg = histogram(&[("he".into(), vec![0.5, 1.0, 1.5])], 10);
        assert_eq!(svg.matches("fill-opacity").count(), 3);
    }
}
