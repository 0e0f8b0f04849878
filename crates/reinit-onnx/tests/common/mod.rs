#![allow(dead_code)]
use std::path::{Path, PathBuf};

use prost::Message;
use reinit_onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Every `.onnx` fixture in the repository.
pub fn all_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    files
}

/// A one-node model `Y = MatMul(X, W)` whose W is an external tensor with the
/// given `external_data` entries.
pub fn external_model(entries: &[(&str, &str)]) -> Vec<u8> {
    let weight = TensorProto {
        name: Some("W".into()),
        dims: vec![2, 2],
        data_type: Some(1),
        data_location: Some(1),
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    };
    matmul_model(weight)
}

pub fn matmul_model(weight: TensorProto) -> Vec<u8> {
    let model = ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![NodeProto {
                input: vec!["X".into(), "W".into()],
                output: vec!["Y".into()],
                op_type: Some("MatMul".into()),
                ..Default::default()
            }],
            initializer: vec![weight],
            input: vec![ValueInfoProto {
                name: Some("X".into()),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: Some("Y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
