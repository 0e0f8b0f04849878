//! Compiles the vendored proto2 ONNX schema with protox (pure Rust), so no
//! system `protoc` is needed. `bytes` fields become `bytes::Bytes`, which lets a
//! model decoded from a memory map borrow its tensor payloads without copying.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let schema = format!("{proto_dir}/onnx-ml.proto");
    println!("cargo:rerun-if-changed={schema}");
    let fds = protox::compile([schema.as_str()], [proto_dir])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
