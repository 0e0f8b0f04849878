//! Corrupt input never panics: truncations, garbage, bad dims.

mod common;

use common::*;
use reinit_onnx::Model;
use reinit_onnx::proto::TensorProto;

#[test]
fn truncations_and_byte_flips_are_clean_errors_or_valid_models() {
    let original = std::fs::read(fixtures().join("tiny_resnet_bn.onnx")).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for cut in (0..original.len()).step_by(original.len() / 97 + 1) {
        let _ = Model::from_bytes(original[..cut].to_vec(), None);
    }
    for _ in 0..200 {
        let mut bytes = original.clone();
        for _ in 0..4 {
            let i = (next() as usize) % bytes.len();
            bytes[i] ^= 1 << (next() % 8);
        }
        if let Ok(model) = Model::from_bytes(bytes, None) {
            for id in model.ids() {
                let _ = model.read_f64(id);
            }
        }
    }
    assert!(Model::from_bytes(b"not an onnx file at all".to_vec(), None).is_err());
    assert!(Model::from_bytes(Vec::new(), None).is_err());
}

#[test]
fn dims_that_overflow_or_mismatch_the_data_are_refused() {
    let cases = [
        (vec![i64::MAX, 4], vec![0u8; 16]),
        (vec![1 << 40, 1 << 40], vec![0u8; 16]),
        (vec![-1, 4], vec![0u8; 16]),
        (vec![2, 2], vec![0u8; 15]),
        (vec![1_000_000_000, 1_000], vec![0u8; 16]),
    ];
    for (dims, raw) in cases {
        let weight = TensorProto {
            name: Some("W".into()),
            dims: dims.clone(),
            data_type: Some(1),
            raw_data: Some(raw.into()),
            ..Default::default()
        };
        let err = Model::from_bytes(matmul_model(weight), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'W'"), "{dims:?}: {err}");
    }
}
