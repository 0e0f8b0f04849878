//! Fidelity: unedited saves are byte-identical; edits change only their tensor.

mod common;

use common::*;
use reinit_onnx::{DType, Edits, Model, SaveOptions, Storage};

#[test]
fn every_fixture_round_trips_byte_identically() {
    let out = tempfile::tempdir().unwrap();
    for path in all_fixtures() {
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let target = out.path().join(path.file_name().unwrap());
        let report = model
            .save(&target, &Edits::default(), &SaveOptions::default())
            .unwrap();
        let original = std::fs::read(&path).unwrap();
        let saved = std::fs::read(&target).unwrap();
        assert!(
            original == saved,
            "{} changed on round trip",
            path.display()
        );
        if let Some(data) = report.data_path {
            let source = path.with_file_name(data.file_name().unwrap());
            assert_eq!(
                std::fs::read(source).unwrap(),
                std::fs::read(&data).unwrap()
            );
        }
        if !model.has_external_data() {
            assert!(model.to_bytes(&Edits::default()).unwrap() == original);
        }
    }
}

#[test]
fn a_single_changed_byte_is_caught() {
    // The comparison above is exact: flip one payload byte of a weight and the
    // bytes differ in exactly one place, while the model still loads.
    let path = fixtures().join("mlp_relu.onnx");
    let model = Model::load(&path).unwrap();
    let id = model
        .ids()
        .find(|&id| model.tensor(id).storage == Storage::Raw && model.tensor(id).numel() > 16)
        .unwrap();
    let mut values = model.read_f64(id).unwrap();
    values[3] = f64::from(f32::from_bits((values[3] as f32).to_bits() ^ 1));
    let mut edits = Edits::default();
    edits.set(id, values);
    let out = model.to_bytes(&edits).unwrap();
    let original = model.bytes();
    let differing: Vec<_> = (0..original.len())
        .filter(|&i| original[i] != out[i])
        .collect();
    assert_eq!(differing.len(), 1);
}

#[test]
fn editing_one_tensor_changes_only_its_payload() {
    for name in [
        "tiny_resnet_bn.onnx",
        "tiny_transformer.onnx",
        "helper_float_data.onnx",
        "mlp_relu_fp16.onnx",
    ] {
        let model = Model::load(fixtures().join(name)).unwrap();
        let id = model
            .ids()
            .filter(|&id| model.tensor(id).dtype.is_float())
            .max_by_key(|&id| model.tensor(id).numel())
            .unwrap();
        let new: Vec<f64> = (0..model.tensor(id).numel())
            .map(|i| (i % 7) as f64 * 0.125 - 0.25)
            .collect();
        let mut edits = Edits::default();
        edits.set(id, new.clone());
        let out = model.to_bytes(&edits).unwrap();
        assert_eq!(out.len(), model.bytes().len(), "{name}: size changed");
        let reloaded = Model::from_bytes(out.clone(), None).unwrap();
        assert_eq!(reloaded.read_f64(id).unwrap(), new, "{name}");
        for other in model.ids().filter(|&o| o != id) {
            assert_eq!(model.tensor(other).name, reloaded.tensor(other).name);
            if model.tensor(other).dtype.is_float() {
                assert_eq!(
                    model.read_f64(other).unwrap(),
                    reloaded.read_f64(other).unwrap(),
                    "{name}"
                );
            }
        }
        // All differing bytes lie inside the edited tensor's message.
        let first = (0..out.len())
            .find(|&i| out[i] != model.bytes()[i])
            .unwrap();
        let last = (0..out.len())
            .rev()
            .find(|&i| out[i] != model.bytes()[i])
            .unwrap();
        let span = last - first + 1;
        assert!(
            span <= model.tensor(id).byte_len(),
            "{name}: {span} bytes span the edits"
        );
    }
}

#[test]
fn half_tensors_in_int32_data_keep_storage_and_round_to_even() {
    for (name, dtype) in [
        ("helper_fp16_int32_data.onnx", DType::F16),
        ("helper_bf16_int32_data.onnx", DType::BF16),
    ] {
        let model = Model::load(fixtures().join(name)).unwrap();
        let id = model
            .ids()
            .find(|&id| {
                model.tensor(id).storage == Storage::Int32Data && model.tensor(id).dtype == dtype
            })
            .unwrap_or_else(|| panic!("{name} has no {dtype} int32_data tensor"));
        let n = model.tensor(id).numel();
        // Large values make the varints longer: the enclosing lengths must follow.
        let new: Vec<f64> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    -1000.5
                } else {
                    1.0 + 2f64.powi(-11)
                }
            })
            .collect();
        let mut edits = Edits::default();
        edits.set(id, new);
        let out = model.to_bytes(&edits).unwrap();
        let reloaded = Model::from_bytes(out, None).unwrap();
        assert_eq!(reloaded.tensor(id).storage, Storage::Int32Data);
        assert_eq!(reloaded.tensor(id).dtype, dtype);
        let got = reloaded.read_f64(id).unwrap();
        let expect_even = if dtype == DType::F16 {
            -1000.5
        } else {
            -1000.0
        };
        assert_eq!(got[0], expect_even, "{name}");
        if n > 1 {
            assert_eq!(got[1], 1.0, "{name}: tie must round to even");
        }
        for other in model.ids().filter(|&o| o != id) {
            assert_eq!(model.read_f64(other).ok(), reloaded.read_f64(other).ok());
        }
    }
}

#[test]
fn unknown_fields_survive_an_edit() {
    for name in [
        "helper_unknown_field_model.onnx",
        "helper_unknown_field_tensor.onnx",
    ] {
        let model = Model::load(fixtures().join(name)).unwrap();
        let id = model
            .ids()
            .find(|&id| model.tensor(id).dtype.is_float())
            .unwrap();
        let mut edits = Edits::default();
        edits.set(id, vec![0.5; model.tensor(id).numel()]);
        edits.set_metadata("reinit.seed", "7");
        let out = model.to_bytes(&edits).unwrap();
        // Every byte of the original outside the edited payload reappears in order:
        // the original is a subsequence-with-replacements of the output. Check it
        // by removing our metadata and comparing with a re-edit of the original values.
        let mut back = Edits::default();
        back.set(id, model.read_f64(id).unwrap());
        let restored = Model::from_bytes(out, None)
            .unwrap()
            .to_bytes(&back)
            .unwrap();
        let original = model.bytes();
        assert!(restored.starts_with(original), "{name}: unknown field lost");
        let reloaded = Model::from_bytes(restored, None).unwrap();
        assert_eq!(reloaded.metadata("reinit.seed"), Some("7"));
    }
}

#[test]
fn metadata_is_replaced_not_duplicated() {
    let model = Model::load(fixtures().join("mlp_tanh.onnx")).unwrap();
    let mut edits = Edits::default();
    edits.set_metadata("reinit.scheme", "he");
    let once = Model::from_bytes(model.to_bytes(&edits).unwrap(), None).unwrap();
    let mut again = Edits::default();
    again.set_metadata("reinit.scheme", "orthogonal-longer-name");
    let twice = Model::from_bytes(once.to_bytes(&again).unwrap(), None).unwrap();
    let entries: Vec<_> = twice
        .proto()
        .metadata_props
        .iter()
        .filter(|e| e.key.as_deref() == Some("reinit.scheme"))
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        twice.metadata("reinit.scheme"),
        Some("orthogonal-longer-name")
    );
}

#[test]
fn subgraph_constant_and_shared_tensors_are_reachable() {
    let model = Model::load(fixtures().join("helper_if_subgraph.onnx")).unwrap();
    assert!(
        model.tensors().iter().any(|t| t.origin.graph().len() > 1),
        "no subgraph initializer found"
    );
    let model = Model::load(fixtures().join("helper_constant_node.onnx")).unwrap();
    assert!(
        model.tensors().iter().any(|t| matches!(&t.origin, reinit_onnx::TensorOrigin::NodeAttribute { op_type, .. } if op_type == "Constant")),
        "no Constant tensor found"
    );
    // An initializer used by two nodes is one tensor.
    let model = Model::load(fixtures().join("helper_shared_weight.onnx")).unwrap();
    let mut names: Vec<_> = model.tensors().iter().map(|t| t.name.clone()).collect();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total);
}

#[test]
fn external_data_round_trip_with_edit() {
    let model = Model::load(fixtures().join("tiny_resnet_bn_external.onnx")).unwrap();
    assert!(model.has_external_data());
    let id = model
        .ids()
        .filter(|&id| matches!(model.tensor(id).storage, Storage::External(_)))
        .max_by_key(|&id| model.tensor(id).numel())
        .unwrap();
    let new: Vec<f64> = (0..model.tensor(id).numel())
        .map(|i| i as f64 / 1024.0)
        .collect();
    let mut edits = Edits::default();
    edits.set(id, new.clone());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.onnx");
    let report = model
        .save(&target, &edits, &SaveOptions::default())
        .unwrap();
    assert_eq!(
        report.data_path.as_deref(),
        Some(dir.path().join("out.onnx.data").as_path())
    );
    let reloaded = Model::load(&target).unwrap();
    for other in model.ids() {
        let expected = if other == id {
            new.clone()
        } else {
            model.read_f64(other).unwrap()
        };
        let got = reloaded.read_f64(other).unwrap();
        let expected: Vec<f64> = expected.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(got, expected, "{}", model.tensor(other).name);
        if let Storage::External(r) = &reloaded.tensor(other).storage {
            assert_eq!(r.location, "out.onnx.data");
        }
    }
}

#[test]
fn refuses_to_overwrite_without_permission() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.onnx");
    std::fs::copy(fixtures().join("mlp_relu.onnx"), &input).unwrap();
    let model = Model::load(&input).unwrap();
    let err = model
        .save(&input, &Edits::default(), &SaveOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("in-place"), "{err}");
    let other = dir.path().join("o.onnx");
    std::fs::write(&other, b"keep").unwrap();
    assert!(
        model
            .save(&other, &Edits::default(), &SaveOptions::default())
            .is_err()
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"keep");
    let opts = SaveOptions {
        overwrite: true,
        ..Default::default()
    };
    model.save(&other, &Edits::default(), &opts).unwrap();
    let opts = SaveOptions {
        in_place: true,
        ..Default::default()
    };
    model.save(&input, &Edits::default(), &opts).unwrap();
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(fixtures().join("mlp_relu.onnx")).unwrap()
    );
    // No temporary files are left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn wrong_value_count_or_dtype_is_a_clean_error() {
    let model = Model::load(fixtures().join("mlp_relu.onnx")).unwrap();
    let id = model
        .ids()
        .find(|&id| model.tensor(id).dtype.is_float())
        .unwrap();
    let mut edits = Edits::default();
    edits.set(id, vec![1.0]);
    let err = model.to_bytes(&edits).unwrap_err().to_string();
    assert!(err.contains(&model.tensor(id).name), "{err}");
}

#[test]
fn deferred_external_tensors_are_produced_during_the_save() {
    use reinit_onnx::{DeferredValues, TensorId, ValueSink};
    struct Halves<'a>(&'a Model, std::sync::Mutex<Vec<TensorId>>);
    impl DeferredValues for Halves<'_> {
        fn write_values(
            &self,
            id: TensorId,
            out: &mut ValueSink<'_>,
        ) -> Result<(), reinit_onnx::Error> {
            self.1.lock().unwrap().push(id);
            let halves: Vec<f64> = self.0.read_f64(id)?.iter().map(|v| v * 0.5).collect();
            // in uneven pieces, some pre-encoded, as a streaming source would
            let (a, b) = halves.split_at(halves.len() / 3);
            out.put(a)?;
            let dtype = out.tensor().dtype;
            let mut bytes = vec![0u8; b.len() * dtype.size().unwrap()];
            dtype.write_le(b, &mut bytes).unwrap();
            out.put_encoded(&bytes)
        }
    }
    let model = Model::load(fixtures().join("tiny_resnet_bn_external.onnx")).unwrap();
    let external: Vec<_> = model
        .ids()
        .filter(|&id| {
            matches!(model.tensor(id).storage, Storage::External(_))
                && model.tensor(id).dtype.is_float()
        })
        .take(3)
        .collect();
    let mut edits = Edits::default();
    for &id in &external {
        edits.defer(id);
    }
    let source = Halves(&model, Default::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.onnx");
    model
        .save_deferred(&out, &edits, &source, &SaveOptions::default())
        .unwrap();
    assert_eq!(
        *source.1.lock().unwrap(),
        external,
        "each deferred tensor produced once, in order"
    );
    let reloaded = Model::load(&out).unwrap();
    for id in model.ids() {
        let expected: Vec<f64> = model
            .read_f64(id)
            .unwrap()
            .iter()
            .map(|v| if external.contains(&id) { v * 0.5 } else { *v })
            .collect();
        assert_eq!(reloaded.read_f64(id).unwrap(), expected);
    }
    // Without a source, a deferred save is an error and writes nothing.
    let err = model.save(dir.path().join("e.onnx"), &edits, &SaveOptions::default());
    assert!(err.is_err());
    assert!(!dir.path().join("e.onnx").exists() && !dir.path().join("e.onnx.data").exists());
}

#[test]
fn a_deferred_source_that_miscounts_fails_naming_the_tensor_and_writes_nothing() {
    use reinit_onnx::{DeferredValues, TensorId, ValueSink};
    /// Produces `numel + delta` values.
    struct Miscount(isize);
    impl DeferredValues for Miscount {
        fn write_values(
            &self,
            _: TensorId,
            out: &mut ValueSink<'_>,
        ) -> Result<(), reinit_onnx::Error> {
            let n = (out.tensor().numel() as isize + self.0) as usize;
            out.put(&vec![0.25; n])
        }
    }
    let model = Model::load(fixtures().join("tiny_resnet_bn_external.onnx")).unwrap();
    let id = model
        .ids()
        .find(|&id| {
            matches!(model.tensor(id).storage, Storage::External(_))
                && model.tensor(id).dtype.is_float()
        })
        .unwrap();
    let mut edits = Edits::default();
    edits.defer(id);
    for delta in [-1, 1] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.onnx");
        let err = model
            .save_deferred(&out, &edits, &Miscount(delta), &SaveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&model.tensor(id).name), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no partial output"
        );
    }
}

#[test]
fn embedded_tensors_can_be_produced_while_the_model_is_written() {
    use reinit_onnx::{DeferredValues, TensorId, ValueSink};
    /// Writes each tensor's values scaled by −0.5, in two pieces.
    struct Scaled<'a>(&'a Model);
    impl DeferredValues for Scaled<'_> {
        fn write_values(
            &self,
            id: TensorId,
            out: &mut ValueSink<'_>,
        ) -> Result<(), reinit_onnx::Error> {
            let v: Vec<f64> = self.0.read_f64(id)?.iter().map(|x| -0.5 * x).collect();
            let (a, b) = v.split_at(v.len() / 2);
            out.put(a)?;
            out.put(b)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut storages = std::collections::BTreeSet::new();
    for path in all_fixtures() {
        let model = Model::load(&path).unwrap();
        let mut edits = Edits::default();
        let mut deferred = Vec::new();
        for id in model.ids() {
            let entry = model.tensor(id);
            if entry.dtype.is_float() && model.can_defer(id) {
                edits.defer(id);
                deferred.push(id);
                storages.insert(format!("{} {}", entry.dtype, entry.storage.name()));
            } else if entry.dtype.is_float() && !matches!(entry.storage, Storage::External(_)) {
                // e.g. halves in int32_data (varints): their length is not known ahead
                let mut alone = Edits::default();
                alone.defer(id);
                let err = model
                    .save_deferred(
                        dir.path().join("refused.onnx"),
                        &alone,
                        &Scaled(&model),
                        &SaveOptions {
                            overwrite: true,
                            ..Default::default()
                        },
                    )
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&entry.name), "{err}");
            }
        }
        let out = dir.path().join(path.file_name().unwrap());
        model
            .save_deferred(&out, &edits, &Scaled(&model), &SaveOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reloaded = Model::load(&out).unwrap();
        for id in model.ids() {
            let before = model.read_f64(id).unwrap_or_default();
            let after = reloaded.read_f64(id).unwrap_or_default();
            let want: Vec<f64> = if deferred.contains(&id) {
                before.iter().map(|x| -0.5 * x).collect()
            } else {
                before
            };
            let label = format!(
                "{}: {} (deferred: {})",
                path.display(),
                model.tensor(id).name,
                deferred.contains(&id)
            );
            assert_eq!(after.len(), want.len(), "{label}");
            // −0.5·x is exact in every float format but for halved f16
            // subnormals, which round to the nearest multiple of 2^-24.
            let bad = after
                .iter()
                .zip(&want)
                .position(|(a, w)| (a - w).abs() > 2f64.powi(-25));
            assert!(bad.is_none(), "{label}: first difference at {bad:?}");
        }
    }
    assert!(storages.len() >= 4, "storages covered: {storages:?}");
}

#[test]
fn little_endian_pieces_cover_the_stored_bytes_in_order() {
    for name in ["tiny_resnet_bn.onnx", "tiny_resnet_bn_external.onnx"] {
        let model = Model::load(fixtures().join(name)).unwrap();
        let mut visited = 0;
        for id in model.ids() {
            let Some(size) = model.tensor(id).dtype.size() else {
                continue;
            };
            let stored = model.raw_bytes(id).unwrap().map(<[u8]>::to_vec);
            let mut pieces = Vec::new();
            let raw = model
                .visit_le(id, 7, |piece| {
                    assert!(piece.len() <= 7 * size && piece.len() % size == 0);
                    pieces.extend_from_slice(piece);
                    Ok(())
                })
                .unwrap();
            assert_eq!(raw, stored.is_some(), "{name}: {}", model.tensor(id).name);
            if let Some(stored) = stored {
                assert!(pieces == stored, "{name}: {}", model.tensor(id).name);
                visited += 1;
            }
        }
        assert!(visited > 0, "{name}");
        // an error from the visitor names the tensor
        let id = model
            .ids()
            .find(|&id| model.raw_bytes(id).unwrap().is_some())
            .unwrap();
        let err = model.visit_le(id, 7, |_| Err("stop".into())).unwrap_err();
        assert!(err.to_string().contains(&model.tensor(id).name), "{err}");
    }
}
