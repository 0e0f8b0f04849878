//! `cargo run -p reinit-graph --example inspect -- MODEL [--json]`
fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: inspect MODEL [--json]");
        std::process::exit(2);
    };
    let model = match reinit_onnx::Model::load(&path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let analysis = reinit_graph::analyze(&model);
    if args.next().as_deref() == Some("--json") {
        println!("{:#}", analysis.to_json());
    } else {
        print!("{}", analysis.render_table());
        for w in &analysis.warnings {
            println!("warning: {w}");
        }
        for s in &analysis.skipped {
            println!("skipped: {} ({})", s.name, s.reason);
        }
    }
}
