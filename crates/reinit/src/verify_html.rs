//! `reinit verify --report FILE`: one self-contained HTML page of a verify
//! run — the settings, the model's summary (what `reinit inspect` prints),
//! the side-by-side table, each scheme's verdict with its reason, and the
//! plots inline as PNG `data:` URIs. No script, no external reference: it
//! opens from an attachment or a CI artifact as it is.

use std::fmt::Write as _;
use std::path::Path;

use reinit_candle::{Figure, RunReport, VerifyReport};
use reinit_onnx::Model;

use crate::error::Error;

/// What the page shows besides the report itself.
pub struct PageContext<'a> {
    /// The model as the user named it (path or file name).
    pub model: &'a str,
    /// `reinit inspect`'s table for the model.
    pub summary: &'a str,
    /// `cpu` or `cuda`.
    pub device: &'a str,
    /// The command line that made the run, for reproducing it.
    pub command: &'a str,
}

/// The whole page.
pub fn render_page(report: &VerifyReport, figures: &[Figure], ctx: &PageContext) -> String {
    let mut out = String::with_capacity(
        64 * 1024 + figures.iter().map(|f| f.png.len() * 4 / 3).sum::<usize>(),
    );
    let title = format!("reinit verify: {}", ctx.model);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        out,
        "<p class=\"sub\">reinit {} &middot; <code>{}</code></p>",
        env!("CARGO_PKG_VERSION"),
        esc(ctx.command)
    );
    verdicts(&mut out, report);
    out.push_str("<h2>Side by side</h2>\n");
    table(&mut out, report);
    settings(&mut out, report, ctx);
    out.push_str("<h2>Plots</h2>\n");
    if figures.is_empty() {
        out.push_str("<p>No plots.</p>\n");
    }
    for f in figures {
        let _ = writeln!(
            out,
            "<figure><img src=\"data:image/png;base64,{}\" alt=\"{}\" width=\"{}\" height=\"{}\"><figcaption>{}</figcaption></figure>",
            base64(&f.png),
            esc(&f.title),
            reinit_candle::PlotKind::SIZE.0,
            reinit_candle::PlotKind::SIZE.1,
            esc(caption(f.kind))
        );
    }
    out.push_str("<h2>Model</h2>\n");
    let _ = writeln!(out, "<pre class=\"summary\">{}</pre>", esc(ctx.summary));
    out.push_str("</body>\n</html>\n");
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Liberation Sans',sans-serif;\
max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.sub{color:#666;margin-top:0}code{font-size:.9em}\
.wide{overflow-x:auto}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:right;white-space:nowrap}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}\
.trains{color:#1a7f37;font-weight:600}.stalled{color:#9a6700;font-weight:600}.diverged{color:#cf222e;font-weight:600}\
ul.verdicts li{margin:.3em 0}figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{color:#555;font-size:.9em}pre.summary{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{color:#555}dd{margin:0}";

fn verdict_word(run: &RunReport) -> String {
    format!("{:?}", run.verdict).to_lowercase()
}

fn verdicts(out: &mut String, report: &VerifyReport) {
    out.push_str("<h2>Verdicts</h2>\n<ul class=\"verdicts\">\n");
    for run in &report.runs {
        let word = verdict_word(run);
        let fastest = if report.fastest.as_deref() == Some(run.scheme.as_str()) {
            " <strong>(fastest to the target loss)</strong>"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: <span class=\"{word}\">{word}</span>{fastest} &mdash; {}</li>",
            esc(&run.scheme),
            esc(&run.verdict_reason)
        );
    }
    out.push_str("</ul>\n");
}

fn sci(v: Option<f64>) -> String {
    v.map_or_else(|| "&ndash;".into(), |x| format!("{x:.3e}"))
}

/// The same columns as the terminal table (`render_table`).
fn table(out: &mut String, report: &VerifyReport) {
    let header = [
        "scheme",
        "verdict",
        "loss<sub>0</sub>",
        "final",
        "to target",
        "held-out",
        "chance",
        "q<sup>L</sup>/q<sup>0</sup>",
        "signal",
        "&#8214;g<sub>1</sub>&#8214;/&#8214;g<sub>L</sub>&#8214;",
        "E[&sigma;&sup2;]",
        "Var[&sigma;&sup2;]",
        "&sigma;<sub>min</sub>",
        "&sigma;<sub>max</sub>",
    ];
    out.push_str("<div class=\"wide\"><table>\n<tr>");
    for h in header {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>\n");
    for r in &report.runs {
        let j = r.jacobian.as_ref();
        let word = verdict_word(r);
        let cells = [
            esc(&r.scheme),
            format!("<span class=\"{word}\">{word}</span>"),
            format!("{:.4}", r.initial_loss),
            format!("{:.4}", r.final_loss),
            r.steps_to_target
                .map_or_else(|| "&ndash;".into(), |s| s.to_string()),
            format!("{} {:.4}", esc(r.heldout.metric), r.heldout.value),
            r.heldout
                .chance
                .map_or_else(|| "&ndash;".into(), |c| format!("{c:.3}")),
            format!("{:.3e}", r.signal_detail.ratio),
            esc(r.signal_detail.flag),
            sci(r.grad_ratio_first_last),
            sci(j.map(|j| j.mean_sq_sv)),
            sci(j.map(|j| j.var_sq_sv)),
            sci(j.and_then(|j| j.min_sv)),
            sci(j.and_then(|j| j.max_sv)),
        ];
        out.push_str("<tr>");
        for c in cells {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
    if let (Some(f), Some(t)) = (&report.fastest, report.target_loss) {
        let _ = writeln!(
            out,
            "<p>Target loss {t:.4e} (the highest final loss among the runs that train); first to reach it: <strong>{}</strong>.</p>",
            esc(f)
        );
    }
}

fn settings(out: &mut String, report: &VerifyReport, ctx: &PageContext) {
    out.push_str("<h2>Settings</h2>\n<dl>\n");
    let optimizer = match report.optimizer {
        reinit_candle::Optimizer::AdamW => "AdamW".to_string(),
        reinit_candle::Optimizer::Sgd { momentum } => format!("SGD, momentum {momentum}"),
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("model", ctx.model.to_string()),
        ("device", ctx.device.to_string()),
        ("steps", report.steps.to_string()),
        ("optimizer", optimizer),
        ("learning rate", report.lr.to_string()),
        ("batch", report.batch.to_string()),
        ("seed", report.seed.to_string()),
    ];
    if let Some(task) = &report.task {
        rows.push(("task", task.description.clone()));
    }
    for input in &report.inputs {
        rows.push((
            "input",
            format!(
                "{} {:?} {}, {}",
                input.name, input.shape, input.dtype, input.fill
            ),
        ));
    }
    if let Some(rss) = report.peak_rss_bytes {
        rows.push(("peak memory", format!("{:.1} MiB", rss as f64 / 1048576.0)));
    }
    let seconds: f64 = report.runs.iter().map(|r| r.seconds).sum();
    rows.push(("wall time", format!("{seconds:.1} s for all runs")));
    for (k, v) in rows {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    out.push_str("</dl>\n");
}

fn caption(kind: reinit_candle::PlotKind) -> &'static str {
    use reinit_candle::PlotKind as K;
    match kind {
        K::Loss => {
            "Training loss per step: faint, each step's loss; solid, its moving mean over a twentieth of the run (the window steps-to-target uses); dashed, the target loss. Right: the held-out metric after training."
        }
        K::Signal => {
            "Second moment of each weighted layer's output at initialisation, on the probe batch. Flat is healthy; a steady fall or rise over depth means vanishing or exploding signal."
        }
        K::JacobianSv => {
            "Empirical CDF of the singular values of the input-output Jacobian of one sample at initialisation. Mass near 1 (dynamical isometry) trains fastest in deep nets."
        }
        K::GradNorms => {
            "Norm of the loss gradient with respect to each layer's weight at initialisation, in graph order."
        }
    }
}

/// Renders the plots and the page of `report` for `model` (named `label`,
/// run on `device` by `command`) and writes it to `path` whole: into a
/// temporary file beside `path`, renamed over it, so a failed run leaves no
/// partial page. Shared by `reinit verify --report` and Python's
/// `reinit.verify(report=...)`.
pub fn write_page(
    report: &VerifyReport,
    model: &Model,
    label: &str,
    device: &str,
    command: &str,
    path: &Path,
) -> Result<(), Error> {
    // Plot titles name the model by its file name, as `--plot` does.
    let name = Path::new(label)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let figures = reinit_candle::render_plots(report, &name).map_err(Error::Exec)?;
    let summary = reinit_graph::analyze(model).render_table();
    let page = render_page(
        report,
        &figures,
        &PageContext {
            model: label,
            summary: &summary,
            device,
            command,
        },
    );
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".reinit-report-")
        .tempfile_in(&dir)
        .map_err(io)?;
    std::fs::write(tmp.path(), page.as_bytes()).map_err(io)?;
    // An ordinary file's mode, not the temporary file's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// HTML text escaping (`& < > "`).
pub fn esc(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            c => s.push(c),
        }
    }
    s
}

/// Standard base64 with padding (RFC 4648 §4), for the `data:` URIs.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(esc("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
