//! bytes → Model::from_bytes → reinit_graph::analyze → reinit::plan_with / apply
//! (scheme he) → Model::to_bytes → Model::from_bytes again. Any panic is a bug;
//! an output that does not load again is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reinit::{PlanOptions, apply, plan_with, with_metadata};
use reinit_onnx::Model;

fuzz_target!(|data: &[u8]| {
    // No base directory: a model referring to external data is refused.
    let Ok(model) = Model::from_bytes(data.to_vec(), None) else {
        return;
    };
    for id in model.ids() {
        let _ = model.read_f64(id);
    }
    let analysis = reinit_graph::analyze(&model);
    let _ = analysis.render_table();
    let options = PlanOptions { scheme: "he".into(), ..Default::default() };
    let Ok(plan) = plan_with(&model, analysis, &options) else {
        return;
    };
    let Ok(applied) = apply(&model, &plan, 1) else {
        return;
    };
    if let Ok(bytes) = model.to_bytes(&with_metadata(&applied)) {
        Model::from_bytes(bytes, None).expect("reinit's own output must load");
    }
});
