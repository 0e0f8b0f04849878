//! `reinit verify --report FILE`: the page is self-contained (every plot an
//! inline PNG that decodes, no script, no external reference), carries each
//! run's verdict and reason, and — where Chromium is installed — loads in
//! headless Chromium with no console message and every image rendered.
//! Without Chromium the browser half skips with a message saying so.
#![cfg(feature = "verify")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, verify_json};

const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
];

/// `$REINIT_CHROMIUM`, else the first of chromium / chromium-browser /
/// google-chrome on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REINIT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|p| p.is_file())
}

/// What headless Chromium saw of a page.
struct Loaded {
    /// `CONSOLE` lines of Chromium's log (the page's console messages).
    console: Vec<String>,
    /// `(rendered, total)` images after the load event.
    images: (usize, usize),
    /// The screenshot, decoded.
    shot: image::RgbImage,
}

/// Loads `page` twice: once as it is for the console log and a screenshot,
/// once as a copy with a load-event script that counts the rendered images
/// (`complete && naturalWidth > 0`) into an attribute that `--dump-dom` prints.
fn load(chromium: &Path, page: &Path, work: &Path) -> Loaded {
    let run = |args: &[String], profile: &str| {
        let out = Command::new(chromium)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", work.join(profile).display()))
            .args(args)
            .output()
            .expect("chromium runs");
        assert!(out.status.success(), "chromium failed: {out:?}");
        out
    };
    let shot_path = work.join("shot.png");
    let out = run(
        &[
            "--window-size=1200,3000".into(),
            format!("--screenshot={}", shot_path.display()),
            format!("file://{}", page.display()),
        ],
        "profile-shot",
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    let shot = image::open(&shot_path).expect("screenshot").to_rgb8();

    let html = std::fs::read_to_string(page).unwrap();
    let probe = "<script>addEventListener('load',()=>{const i=[...document.images];\
                 document.body.setAttribute('data-images',\
                 i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length)})</script>";
    let copy = work.join("probed.html");
    std::fs::write(&copy, html.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let out = run(
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", copy.display()),
        ],
        "profile-dom",
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let counted = dom
        .split("data-images=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no image count in the DOM: {dom:.400}"));
    let (a, b) = counted.split_once('/').unwrap();
    Loaded {
        console,
        images: (a.parse().unwrap(), b.parse().unwrap()),
        shot,
    }
}

/// Pixels within 30 of `color` in every channel.
fn count_near(img: &image::RgbImage, color: [u8; 3]) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|c| p.0[c].abs_diff(color[c]) <= 30))
        .count()
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &v)| n | (u32::from(v) << (18 - 6 * i)));
        out.extend(n.to_be_bytes()[1..chunk.len()].iter());
    }
    out
}

#[test]
fn report_is_one_self_contained_page_that_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let json = verify_json(
        &fixtures().join("mlp_relu.onnx"),
        &[
            "--schemes",
            "he,orthogonal",
            "--steps",
            "12",
            "--json",
            "--report",
            page.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&page).unwrap();

    // Self-contained: no script, nothing fetched.
    assert!(!html.contains("<script"), "the page carries no script");
    for attr in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(!html.contains(attr), "external reference {attr}");
    }
    // Every plot is an inline PNG of the plots' size.
    let images: Vec<&str> = html
        .split("<img src=\"data:image/png;base64,")
        .skip(1)
        .collect();
    assert_eq!(images.len(), 4, "loss, signal, jacobian, gradient plots");
    for img in &images {
        let png = decode_base64(img.split('"').next().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), reinit_candle::PlotKind::SIZE);
    }
    // Each run's verdict and its reason, the settings and the model summary.
    for run in json["runs"].as_array().unwrap() {
        let reason = run["verdict_reason"].as_str().unwrap();
        assert!(html.contains(&reinit::verify_html::esc(reason)), "{reason}");
        assert!(html.contains(&format!(
            "<strong>{}</strong>",
            run["scheme"].as_str().unwrap()
        )));
    }
    assert!(html.contains("<dt>steps</dt><dd>12</dd>"));
    assert!(html.contains("<h2>Model</h2>"));
    let summary =
        reinit_graph::analyze(&reinit_onnx::Model::load(fixtures().join("mlp_relu.onnx")).unwrap())
            .render_table();
    let first_line = summary.lines().next().unwrap();
    assert!(html.contains(&reinit::verify_html::esc(first_line)));

    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIP (browser half): no chromium on PATH and REINIT_CHROMIUM unset; \
             install Debian's `chromium` to load the report in a browser"
        );
        return;
    };
    let loaded = load(&chromium, &page, dir.path());
    assert!(loaded.console.is_empty(), "console: {:?}", loaded.console);
    assert_eq!(loaded.images, (4, 4), "every plot rendered");
    // The screenshot shows the plots: the first two schemes' colours
    // (Tableau blue and orange) cover many pixels; the page's own CSS has neither.
    let (blue, orange) = (
        count_near(&loaded.shot, [31, 119, 180]),
        count_near(&loaded.shot, [255, 127, 14]),
    );
    assert!(blue > 2000 && orange > 2000, "blue {blue}, orange {orange}");

    // The harness itself catches a broken page: a missing image and a console error.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>\
         <img src=\"missing.png\" alt=\"x\"><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let loaded = load(&chromium, &broken, dir.path());
    assert_eq!(loaded.images, (0, 1));
    assert!(loaded.console.iter().any(|l| l.contains("boom")));
}
