//! The executor's probe layers are the graph analysis' layers: one detector for
//! the whole workspace (LSUV and the signal probes see every weight the
//! rewrite plans).

use std::path::PathBuf;

use candle_core::Device;
use reinit_candle::Executor;
use reinit_onnx::Model;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[test]
fn executor_layers_are_the_analysis_layers_of_the_main_graph() {
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    for path in files {
        let model = Model::load(&path).unwrap();
        let Ok(exec) = Executor::new(&model, &Device::Cpu) else {
            continue; // ops without a kernel: nothing to probe
        };
        let analysis = reinit_graph::analyze(&model);
        let main_outputs: Vec<&str> = model
            .proto()
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        let want: Vec<(String, String)> = analysis
            .layers
            .iter()
            .filter(|l| main_outputs.contains(&l.output.as_str()))
            .map(|l| (l.weight_name.clone(), l.output.clone()))
            .collect();
        let got: Vec<(String, String)> = exec
            .layers()
            .iter()
            .map(|l| (l.weight.clone(), l.output.clone()))
            .collect();
        assert_eq!(got, want, "{}", path.display());
        assert!(!got.is_empty(), "{}: no layers", path.display());
        checked += 1;
    }
    assert!(checked >= 30, "{checked} fixtures checked");
}
