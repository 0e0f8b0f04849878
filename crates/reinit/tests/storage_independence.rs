//! A weight's new values, and its report, do not depend on where it is
//! stored: embedded weights are spliced into the model file as they are
//! drawn, external ones written into the data file, and the two must agree to
//! the bit.

mod common;

use std::path::Path;

use common::*;
use reinit_onnx::Model;

/// Every float initializer's values, by name.
fn weights(path: &Path) -> Vec<(String, Vec<f64>)> {
    let model = Model::load(path).unwrap();
    let mut out: Vec<_> = model
        .ids()
        .filter(|&id| model.tensor(id).dtype.is_float())
        .map(|id| (model.tensor(id).name.clone(), model.read_f64(id).unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `(name, after)` of each reported weight.
fn report_stats(stdout: &str) -> Vec<(String, String)> {
    let report: serde_json::Value = serde_json::from_str(stdout).unwrap();
    let mut out: Vec<_> = report["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].to_string(), w["after"].to_string()))
        .collect();
    out.sort();
    out
}

fn rewrite(model: &Path, out: &Path, scheme_args: &[&str]) -> Vec<(String, String)> {
    let mut args = vec![model.to_str().unwrap(), "--seed", "9", "--json", "-q"];
    args.extend_from_slice(scheme_args);
    args.extend(["-o", out.to_str().unwrap()]);
    let run = run_ok(&args, &[]);
    report_stats(&run.stdout)
}

fn assert_same_weights(embedded: &Path, external: &Path, label: &str) -> usize {
    let a = weights(embedded);
    let b = weights(external);
    assert_eq!(a.len(), b.len(), "{label}: initializer sets differ");
    for ((name_a, va), (name_b, vb)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b, "{label}");
        assert!(
            va == vb,
            "{label}: '{name_a}' differs between embedded and external"
        );
    }
    a.len()
}

#[test]
fn matmul_chains_get_the_same_weights_embedded_or_external() {
    let dir = tempfile::tempdir().unwrap();
    // Non-square, several RNG chunks (300·257 > 65,536), a short last layer.
    let widths = [300, 257, 300, 40];
    let embedded = mlp(&dir.path().join("e"), "m.onnx", &widths, false);
    let external = mlp(&dir.path().join("x"), "m.onnx", &widths, true);
    for scheme in [
        &["--scheme", "he"][..],
        &["--scheme", "xavier", "--distribution", "uniform"],
        &["--scheme", "lecun", "--distribution", "truncated-normal"],
        &["--scheme", "torch-default"],
        &["--scheme", "fixup"],
        &["--scheme", "orthogonal"],
        &["--scheme", "eoi", "--density", "0.3"],
    ] {
        let label = scheme.join(" ");
        let out_e = dir.path().join(format!("e/{}.onnx", scheme[1]));
        let out_x = dir.path().join(format!("x/{}.onnx", scheme[1]));
        let stats_e = rewrite(&embedded, &out_e, scheme);
        let stats_x = rewrite(&external, &out_x, scheme);
        assert_eq!(stats_e.len(), 3, "{label}: {stats_e:?}");
        assert_eq!(stats_e, stats_x, "{label}: reports differ");
        assert_same_weights(&out_e, &out_x, &label);
        // and the weights were rewritten (the inputs are all zeros)
        let w = weights(&out_x);
        assert!(
            w.iter().any(|(_, v)| v.iter().any(|&x| x != 0.0)),
            "{label}: nothing rewritten"
        );
    }
}

#[test]
fn conv_nets_get_the_same_weights_embedded_or_external() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = fixtures().join("tiny_resnet_bn.onnx");
    let external = copy_fixture("tiny_resnet_bn_external.onnx", dir.path());
    for scheme in ["he", "fixup", "delta-orthogonal"] {
        let out_e = dir.path().join(format!("e-{scheme}.onnx"));
        let out_x = dir.path().join(format!("x-{scheme}.onnx"));
        let stats_e = rewrite(&embedded, &out_e, &["--scheme", scheme]);
        let stats_x = rewrite(&external, &out_x, &["--scheme", scheme]);
        assert!(stats_e.len() >= 8, "{scheme}: {stats_e:?}");
        assert_eq!(stats_e, stats_x, "{scheme}: reports differ");
        assert!(assert_same_weights(&out_e, &out_x, scheme) >= 8);
    }
}

#[test]
fn iid_weights_are_drawn_in_stored_order() {
    // An i.i.d. weight has no structure to respect: its k-th stored value is
    // the k-th draw of its stream, whatever the layout (here MatMul(X, W),
    // stored (n_in, n_out), the transpose of the canonical (n_out, n_in)).
    use reinit_schemes::{Law, Stream};
    let dir = tempfile::tempdir().unwrap();
    for external in [false, true] {
        let sub = dir.path().join(if external { "x" } else { "e" });
        let model = mlp(&sub, "one.onnx", &[300, 257], external);
        let out = sub.join("he.onnx");
        rewrite(&model, &out, &["--scheme", "he"]);
        let (_, got) = weights(&out).remove(0);
        // no activation after the layer: gain 1, std = 1/√fan_in
        let std = 1.0 / 300f64.sqrt();
        let want: Vec<f64> = Stream::new(9, "W0", "he")
            .iid(Law::Normal { std }, 300 * 257)
            .to_vec()
            .iter()
            .map(|&v| v as f32 as f64)
            .collect();
        assert!(got == want, "external = {external}");
    }
}

#[test]
fn streamed_weights_reach_lsuv_and_in_memory_outputs() {
    // LSUV's data pass runs the pre-initialized model, which must include the
    // i.i.d. weights that are otherwise drawn only while the output is
    // written; `apply_to_bytes` (the Python package's in-memory route) must
    // produce them too, identical to a written file.
    use reinit::{PlanOptions, Session, parse_rules, plan};
    use reinit_onnx::SaveOptions;
    let model = Model::load(fixtures().join("mlp_tanh.onnx")).unwrap();
    let rules = parse_rules("[[rule]]\npattern = \"0\"\nscheme = \"he\"\n").unwrap();
    let options = PlanOptions {
        scheme: "lsuv".into(),
        rules,
        ..Default::default()
    };
    let plan = plan(&model, &options).unwrap();
    let schemes: Vec<&str> = plan.weights.iter().map(|w| w.scheme.name()).collect();
    assert!(
        schemes.contains(&"he") && schemes.contains(&"lsuv"),
        "{schemes:?}"
    );
    let (applied, bytes) = Session::new(&model, &plan, 5).unwrap().to_bytes().unwrap();
    assert_eq!(
        applied
            .report
            .weights
            .iter()
            .filter(|w| w.kind != "bias")
            .count(),
        plan.weights.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    Session::new(&model, &plan, 5)
        .unwrap()
        .write(&out, &SaveOptions::default())
        .unwrap();
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "in-memory and written outputs differ"
    );
    let he = applied
        .report
        .weights
        .iter()
        .find(|w| w.scheme == "he")
        .unwrap();
    assert!(he.after.std > 0.0 && he.after != he.before, "{he:?}");
}

#[test]
fn eoi_masks_are_the_support_of_the_stored_weights() {
    // Masks are converted to the stored layout on their own (as booleans for
    // MatMul(X, W)); they must mark exactly the non-zeros of what is written.
    use reinit::{PlanOptions, SchemeParams, Session, plan};
    let dir = tempfile::tempdir().unwrap();
    let path = mlp(dir.path(), "m.onnx", &[300, 257, 300, 40], false);
    let model = Model::load(&path).unwrap();
    let options = PlanOptions {
        scheme: "eoi".into(),
        params: SchemeParams::default().with("density", 0.3).unwrap(),
        ..Default::default()
    };
    let plan = plan(&model, &options).unwrap();
    let (applied, bytes) = Session::new(&model, &plan, 4).unwrap().to_bytes().unwrap();
    let written = Model::from_bytes(bytes, Some(dir.path())).unwrap();
    assert_eq!(applied.masks.len(), 3);
    for mask in &applied.masks {
        let id = written.find_tensor(&mask.name).unwrap();
        let stored = written.read_f64(id).unwrap();
        let support: Vec<bool> = stored.iter().map(|&v| v != 0.0).collect();
        assert!(support == mask.values, "{}", mask.name);
        assert!(support.iter().any(|&b| !b) && support.iter().any(|&b| b));
    }
}

#[test]
fn random_mask_masks_are_the_zero_pattern_at_the_exact_density() {
    // random-mask (issue 15 item 8) through the library, MatMul(X, W) layouts included:
    // each layer keeps round(d·numel) weights, and the mask is what is written.
    use reinit::{PlanOptions, SchemeParams, Session, plan};
    let dir = tempfile::tempdir().unwrap();
    let path = mlp(dir.path(), "m.onnx", &[300, 257, 300, 40], false);
    let model = Model::load(&path).unwrap();
    for base in ["he", "orthogonal"] {
        let options = PlanOptions {
            scheme: "random-mask".into(),
            params: SchemeParams::default()
                .with("density", 0.3)
                .unwrap()
                .with("base", base)
                .unwrap(),
            ..Default::default()
        };
        let plan = plan(&model, &options).unwrap();
        let (applied, bytes) = Session::new(&model, &plan, 4).unwrap().to_bytes().unwrap();
        let (_, again) = Session::new(&model, &plan, 4).unwrap().to_bytes().unwrap();
        assert!(bytes == again, "{base}: not deterministic");
        let written = Model::from_bytes(bytes, Some(dir.path())).unwrap();
        assert_eq!(applied.masks.len(), 3);
        for mask in &applied.masks {
            let id = written.find_tensor(&mask.name).unwrap();
            let stored = written.read_f64(id).unwrap();
            let support: Vec<bool> = stored.iter().map(|&v| v != 0.0).collect();
            assert!(support == mask.values, "{base}: {}", mask.name);
            let kept = support.iter().filter(|&&b| b).count() as f64;
            assert!(
                (kept - 0.3 * support.len() as f64).abs() <= 1.0,
                "{base}: {kept}"
            );
        }
    }
}

#[test]
fn embedded_structured_weights_are_drawn_during_the_save_not_held() {
    // The structured schemes' weights are left to the save (drawn a window at
    // a time), so `apply` holds no payload of new weights; what the save then
    // writes is what the scheme promises.
    use reinit::{PlanOptions, Session, plan};
    let dir = tempfile::tempdir().unwrap();
    let path = mlp(dir.path(), "m.onnx", &[64, 48, 48, 32, 10], false);
    let model = Model::load(&path).unwrap();
    for scheme in ["orthogonal", "eoi", "idinit", "he"] {
        let options = PlanOptions {
            scheme: scheme.into(),
            ..Default::default()
        };
        let plan = plan(&model, &options).unwrap();
        assert_eq!(plan.weights.len(), 4, "{scheme}");
        let session = Session::new(&model, &plan, 3).unwrap();
        for w in &plan.weights {
            assert!(session.is_deferred(w.tensor), "{scheme}: {}", w.name);
            assert!(!session.holds_values(w.tensor), "{scheme}: {}", w.name);
        }
        // progress: one tick per weight, though all are filled during the save
        let ticks = std::sync::atomic::AtomicUsize::new(0);
        let tick = || {
            ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let (applied, bytes) = Session::with_progress(&model, &plan, 3, &tick)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(ticks.into_inner(), 4, "{scheme}");
        assert_eq!(
            applied
                .report
                .weights
                .iter()
                .filter(|r| r.kind != "bias")
                .count(),
            4
        );
        let written = Model::from_bytes(bytes, Some(dir.path())).unwrap();
        for w in &plan.weights {
            let id = written.find_tensor(&w.name).unwrap();
            let new = written.read_f64(id).unwrap();
            assert_ne!(
                new,
                model.read_f64(w.tensor).unwrap(),
                "{scheme}: {}",
                w.name
            );
        }
        if scheme == "orthogonal" {
            for r in applied.report.weights.iter().filter(|r| r.kind != "bias") {
                let err = r.orthogonality_error.expect("checked");
                assert!(err < 1e-6, "{}: {err}", r.name);
            }
        }
    }
}

#[test]
fn large_outputs_written_past_the_page_cache_equal_the_in_memory_bytes() {
    // Outputs past 4 MiB leave the page cache (O_DIRECT blocks from a writer
    // thread, where the file system allows): the file must hold exactly what
    // the in-memory route produces, for a model file and for a data file.
    use reinit::{PlanOptions, Session, plan};
    let dir = tempfile::tempdir().unwrap();
    let widths = [1100, 1300, 1200, 10];
    let embedded = mlp(dir.path(), "big.onnx", &widths, false);
    let external = mlp(dir.path(), "big_ext.onnx", &widths, true);
    for scheme in ["he", "orthogonal"] {
        let model = Model::load(&embedded).unwrap();
        let options = PlanOptions {
            scheme: scheme.into(),
            ..Default::default()
        };
        let plan = plan(&model, &options).unwrap();
        let in_memory = Session::new(&model, &plan, 5)
            .unwrap()
            .to_bytes()
            .unwrap()
            .1;
        let rewrite_to = |input: &Path, name: String, envs: &[(&str, &str)]| {
            let out = dir.path().join(name);
            let (input, output) = (input.to_str().unwrap(), out.to_str().unwrap());
            run_ok(
                &[input, "--scheme", scheme, "--seed", "5", "-q", "-o", output],
                envs,
            );
            out
        };
        let out = rewrite_to(&embedded, format!("{scheme}.onnx"), &[]);
        // and through the page cache, as where the file system refuses O_DIRECT
        let no_direct = [("REINIT_NO_DIRECT_IO", "1")];
        let buffered = rewrite_to(&embedded, format!("{scheme}_b.onnx"), &no_direct);
        for out in [&out, &buffered] {
            let written = std::fs::read(out).unwrap();
            assert!(written.len() > 8 << 20, "{scheme}: {} bytes", written.len());
            assert!(
                written == in_memory,
                "{scheme}: {} differs from the in-memory bytes",
                out.display()
            );
        }
        // the same weights through an external data file
        let out_ext = rewrite_to(&external, format!("{scheme}_ext.onnx"), &[]);
        assert_same_weights(&out, &out_ext, scheme);
    }
}
