//! bytes → Model::from_bytes → reinit_graph::analyze → reinit::plan_with →
//! Session::to_bytes (scheme he: weights streamed into the output; orthogonal:
//! drawn a window at a time ahead of the writer) → Model::from_bytes again.
//! Any panic is a bug; an output that does not load again is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reinit::{PlanOptions, Session, plan, plan_with};
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
    let Ok(he) = plan_with(&model, analysis, &options) else {
        return;
    };
    if let Ok((_, bytes)) = Session::new(&model, &he, 1).and_then(Session::to_bytes) {
        Model::from_bytes(bytes, None).expect("reinit's own output must load");
    }
    let options = PlanOptions { scheme: "orthogonal".into(), ..Default::default() };
    if let Ok(orthogonal) = plan(&model, &options)
        && let Ok((_, bytes)) = Session::new(&model, &orthogonal, 1).and_then(Session::to_bytes)
    {
        Model::from_bytes(bytes, None).expect("reinit's own output must load");
    }
});
