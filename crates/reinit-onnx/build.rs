//! Compiles the vendored proto2 ONNX schema with protox (pure Rust), so no
//! system `protoc` is needed. `bytes` fields become `bytes::Bytes`, which lets a
//! model decoded from a memory map borrow its tensor payloads without copying.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!(): a build script binary reused
    // from another checkout must still find this checkout's schema.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = format!("{manifest_dir}/../../proto");
    let schema = format!("{proto_dir}/onnx-ml.proto");
    println!("cargo:rerun-if-changed={schema}");
    let fds = protox::compile([schema.as_str()], [proto_dir.as_str()])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
