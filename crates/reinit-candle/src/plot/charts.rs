//! The four charts' bodies (below the header [`super::draw`] writes): what
//! each plots, its axes and legend.

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    DrawResult, FAMILY, GREY, SIZE, color, legend, log_bounds, log_tick, log_tick_3, smoothed,
    zeros_note,
};
use crate::verify::{RunReport, VerifyReport};

pub(super) fn loss_plot<DB: DrawingBackend>(
    report: &VerifyReport,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let (left, right) = area.split_horizontally(SIZE.0 as i32 * 7 / 10);
    let steps = report
        .runs
        .iter()
        .map(|r| r.loss.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let finite = || {
        report
            .runs
            .iter()
            .flat_map(|r| r.loss.iter().map(|&l| f64::from(l)))
            .filter(|l| l.is_finite())
    };
    let metric_is_mse = report
        .runs
        .first()
        .is_some_and(|r| r.heldout.metric == "mse");
    let y_desc = if metric_is_mse {
        "training loss (mean squared error)"
    } else {
        "training loss (cross-entropy, nats)"
    };
    let lo = finite().fold(f64::MAX, f64::min);
    let hi = finite().fold(f64::MIN, f64::max);
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let x_range = 0f64..steps as f64;
    // A loss spanning more than a decade and a half reads better on a log axis.
    if lo > 0.0 && hi / lo > 30.0 {
        let (lo, hi) = log_bounds(finite()).unwrap_or((lo, hi));
        let mut chart = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(format!("{y_desc}, log scale"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| log_tick(*v))
            .axis_desc_style((FAMILY, 15))
            .label_style((FAMILY, 13))
            .draw()?;
        loss_series(report, &mut chart)?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    } else {
        let pad = ((hi - lo) * 0.06).max(1e-6);
        let mut chart = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, (lo - pad).max(0.0)..hi + pad)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .axis_desc_style((FAMILY, 15))
            .label_style((FAMILY, 13))
            .draw()?;
        loss_series(report, &mut chart)?;
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    heldout_panel(report, &right)
}

/// Raw per-step loss (faint), its moving mean (solid, labelled) and the
/// target loss the `to_target` column times against (dashed).
fn loss_series<'a, DB: DrawingBackend + 'a, Y>(
    report: &VerifyReport,
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
) -> DrawResult<DB>
where
    Y: Ranged<ValueType = f64>,
{
    let step = |i: usize| (i + 1) as f64;
    for (i, run) in report.runs.iter().enumerate() {
        let c = color(i);
        chart.draw_series(LineSeries::new(
            run.loss
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(s, &l)| (step(s), f64::from(l))),
            c.mix(0.25).stroke_width(1),
        ))?;
        chart
            .draw_series(LineSeries::new(
                smoothed(&run.loss)
                    .into_iter()
                    .enumerate()
                    .filter(|(_, l)| l.is_finite())
                    .map(|(s, l)| (step(s), l)),
                c.stroke_width(3),
            ))?
            .label(run_label(report, run))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
    }
    if let Some(target) = report.target_loss {
        let steps = report.runs.iter().map(|r| r.loss.len()).max().unwrap_or(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, target), (steps as f64, target)],
                8,
                6,
                GREY.stroke_width(2),
            ))?
            .label(format!("target loss {}", log_tick_3(target)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], GREY.stroke_width(2)));
    }
    Ok(())
}

/// `he (moving mean): trains`, with `, fastest` for the fastest run.
fn run_label(report: &VerifyReport, run: &RunReport) -> String {
    let verdict = format!("{:?}", run.verdict).to_lowercase();
    let fastest = if report.fastest.as_deref() == Some(run.scheme.as_str()) {
        ", fastest"
    } else {
        ""
    };
    format!("{}: {verdict}{fastest}", run.scheme)
}

/// Bars of the held-out metric per run, with chance accuracy dashed.
fn heldout_panel<DB: DrawingBackend>(
    report: &VerifyReport,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let n = report.runs.len().max(1) as u32;
    let mse = report
        .runs
        .first()
        .is_some_and(|r| r.heldout.metric == "mse");
    let values: Vec<f64> = report.runs.iter().map(|r| r.heldout.value).collect();
    let top = if mse {
        values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.2
    } else {
        1.0
    };
    let names: Vec<String> = report.runs.iter().map(|r| r.scheme.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_left(4)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
    let x_fmt = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let chance = report.runs.first().and_then(|r| r.heldout.chance);
    let x_desc = match chance {
        _ if mse => "held-out MSE (lower is better)".to_string(),
        Some(c) => format!("held-out accuracy (dashed: chance {:.0}%)", c * 100.0),
        None => "held-out accuracy".to_string(),
    };
    let y_fmt = |v: &f64| {
        if mse {
            log_tick(*v)
        } else {
            format!("{:.0}%", v * 100.0)
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FAMILY, 15))
        .label_style((FAMILY, 12))
        .draw()?;
    for (i, v) in values.iter().enumerate() {
        let i = i as u32;
        let v = if v.is_finite() { *v } else { 0.0 };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), v),
            ],
            color(i as usize).filled(),
        );
        bar.set_margin(0, 0, 6, 6);
        chart.draw_series(std::iter::once(bar))?;
        let text = if mse {
            log_tick(v)
        } else {
            format!("{:.0}%", v * 100.0)
        };
        chart.draw_series(std::iter::once(Text::new(
            text,
            (SegmentValue::CenterOf(i), v),
            (FAMILY, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    if let Some(chance) = chance {
        chart.draw_series(DashedLineSeries::new(
            [
                (SegmentValue::Exact(0), chance),
                (SegmentValue::Exact(n), chance),
            ],
            6,
            5,
            BLACK.stroke_width(2),
        ))?;
    }
    Ok(())
}

/// q^l per weighted layer, layer 0 being the input, on a log axis.
pub(super) fn signal_plot<DB: DrawingBackend>(
    report: &VerifyReport,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let series: Vec<Vec<(f64, f64)>> = report
        .runs
        .iter()
        .map(|r| {
            std::iter::once((0.0, r.signal_detail.input_q))
                .chain(
                    r.signal
                        .iter()
                        .enumerate()
                        .map(|(i, (_, q))| ((i + 1) as f64, *q)),
                )
                .collect()
        })
        .collect();
    let labels: Vec<String> = report
        .runs
        .iter()
        .map(|r| {
            format!(
                "{}: last/input = {} ({}){}",
                r.scheme,
                log_tick_3(r.signal_detail.ratio),
                r.signal_detail.flag,
                zeros_note(r.signal.iter().map(|(_, q)| *q))
            )
        })
        .collect();
    per_layer_plot(
        area,
        &series,
        &labels,
        "weighted layer, graph order (0 = input)",
        "qˡ = mean(y²) of the layer output, log scale",
    )
}

/// ||dL/dW|| of each layer's weight, graph order, on a log axis.
pub(super) fn grad_plot<DB: DrawingBackend>(
    report: &VerifyReport,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let series: Vec<Vec<(f64, f64)>> = report
        .runs
        .iter()
        .map(|r| {
            r.layer_weights
                .iter()
                .enumerate()
                .filter_map(|(i, w)| r.grad_norms.get(w).map(|g| ((i + 1) as f64, *g)))
                .collect()
        })
        .collect();
    let labels: Vec<String> = report
        .runs
        .iter()
        .map(|r| match r.grad_ratio_first_last {
            Some(g) => format!(
                "{}: first/last = {}{}",
                r.scheme,
                log_tick_3(g),
                zeros_note(
                    r.layer_weights
                        .iter()
                        .filter_map(|w| r.grad_norms.get(w).copied())
                )
            ),
            None => r.scheme.clone(),
        })
        .collect();
    per_layer_plot(
        area,
        &series,
        &labels,
        "weighted layer, graph order",
        "‖∂L/∂W‖ of the layer's weight, log scale",
    )
}

/// Lines with markers over integer x, log y; values ≤ 0 (a weight whose
/// gradient is exactly zero) are drawn on the bottom edge.
fn per_layer_plot<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Vec<(f64, f64)>],
    labels: &[String],
    x_desc: &str,
    y_desc: &str,
) -> DrawResult<DB> {
    let all = || series.iter().flatten().map(|p| p.1);
    let (lo, hi) = log_bounds(all()).unwrap_or((1e-3, 1.0));
    let x_max = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.3f64..x_max + 0.3, (lo..hi).log_scale())?;
    let whole = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels((x_max as usize + 2).min(24))
        .x_label_formatter(&whole)
        .y_label_formatter(&|v| log_tick(*v))
        .axis_desc_style((FAMILY, 15))
        .label_style((FAMILY, 13))
        .draw()?;
    let markers = series.iter().map(Vec::len).max().unwrap_or(0) <= 60;
    for (i, (points, label)) in series.iter().zip(labels).enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = points
            .iter()
            .map(|&(x, y)| (x, if y > 0.0 { y } else { lo }))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (22, 0)], c.stroke_width(2))
                    + Circle::new((11, 0), 4, c.filled())
            });
        if markers {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// Every run's exact singular values (runs with projections have none).
pub(super) fn spectra(report: &VerifyReport) -> Vec<(usize, &RunReport)> {
    report
        .runs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.jacobian
                .as_ref()
                .is_some_and(|j| !j.singular_values.is_empty())
        })
        .collect()
}

/// Empirical CDF of each run's singular values on a log σ axis, with σ = 1
/// (an isometry) marked. Exact zeros sit on the left edge, counted in the label.
pub(super) fn jacobian_plot<DB: DrawingBackend>(
    report: &VerifyReport,
    area: &DrawingArea<DB, Shift>,
) -> DrawResult<DB> {
    let runs = spectra(report);
    let values = || {
        runs.iter().flat_map(|(_, r)| {
            r.jacobian
                .iter()
                .flat_map(|j| j.singular_values.iter().copied())
        })
    };
    let (lo, hi) = log_bounds(values().chain([1.0])).unwrap_or((0.1, 10.0));
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.02)?;
    let count = runs
        .first()
        .and_then(|(_, r)| r.jacobian.as_ref())
        .map_or(0, |j| j.singular_values.len());
    chart
        .configure_mesh()
        .x_desc(format!(
            "singular value σ of ∂(output)/∂(input), one sample ({count} values), log scale"
        ))
        .y_desc("fraction of singular values ≤ σ")
        .x_label_formatter(&|v| log_tick(*v))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .axis_desc_style((FAMILY, 15))
        .label_style((FAMILY, 13))
        .draw()?;
    chart
        .draw_series(DashedLineSeries::new(
            [(1.0, 0.0), (1.0, 1.02)],
            6,
            5,
            GREY.stroke_width(2),
        ))?
        .label("σ = 1 (isometry)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], GREY.stroke_width(2)));
    for (i, run) in runs {
        let c = color(i);
        let mut sv: Vec<f64> = run
            .jacobian
            .iter()
            .flat_map(|j| j.singular_values.iter().copied())
            .filter(|v| v.is_finite())
            .collect();
        sv.sort_by(f64::total_cmp);
        let zeros = sv.iter().filter(|&&v| v <= 0.0).count();
        let n = sv.len().max(1) as f64;
        let mut stairs = vec![(lo, 0.0)];
        for (k, &v) in sv.iter().enumerate() {
            let x = if v > 0.0 { v } else { lo };
            stairs.push((x, k as f64 / n));
            stairs.push((x, (k + 1) as f64 / n));
        }
        stairs.push((hi, 1.0));
        let mut label = format!(
            "{}: E[σ²] = {}",
            run.scheme,
            log_tick_3(run.jacobian.as_ref().map_or(0.0, |j| j.mean_sq_sv))
        );
        if zeros > 0 {
            label.push_str(&format!(", {zeros} zero (left edge)"));
        }
        chart
            .draw_series(LineSeries::new(stairs, c.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2)));
        if sv.len() <= 80 {
            chart.draw_series(sv.iter().enumerate().map(|(k, &v)| {
                Circle::new(
                    (if v > 0.0 { v } else { lo }, (k + 1) as f64 / n),
                    3,
                    c.filled(),
                )
            }))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}
