use reinit::Error;
use reinit_onnx::Model;

use super::args::InspectArgs;

pub fn run(args: InspectArgs) -> Result<(), Error> {
    let model = Model::load(&args.model).map_err(Error::Load)?;
    let analysis = reinit_graph::analyze(&model);
    if args.json {
        let mut doc = analysis.to_json();
        doc["model"] = serde_json::Value::String(args.model.display().to_string());
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", analysis.render_table());
    }
    Ok(())
}
